/* fuse.c: the grouping of IR instructions into loop nests, the order the nests run in, and where
 * each value lives.
 *
 * Instructions are taken in program order, each becoming a unit of its own or joining a nest made
 * before. An elementwise op joins a nest over its own shape that computes one of its operands, or
 * else the latest nest over that shape; a reduction joins the nest that computes its operand, over
 * that operand's shape; a store joins the nest that computes the value it stores, when the slot has
 * that value's layout. Joining moves the nest down to where the joining instruction is, so it is
 * allowed only when no unit the nest would move past depends on it:
 *   - that unit reads a value the nest computes (it would read it before it is written);
 *   - it writes a slot the nest reads or writes, or reads a slot the nest writes (the IR's order
 *     says who sees the old value; moving would change that).
 * Inside a nest ops run in program order at each index, so a read of a slot and a store to it in
 * the same nest are safe when both are at the same index: a nest never reads a slot after storing
 * to it, and never stores to a slot it reads with broadcasting (at other indices).
 *
 * A value stays in registers when every op reading it is in its nest; otherwise it gets a region of
 * work, and regions are reused once their last reader has run. */
#include "fuse.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

enum { WORK_ALIGN = 64 };  /* a cache line, and one AVX-512 vector */
enum { WINDOW = 64 };      /* a nest is taken back from at most this many units ago: planning stays linear */

/* A list of ints; a set of slot keys (add, has) is indexed by a hash table once it is longer than
 * VEC_SCAN, since a nest over a model of 80,000 parameters reads and writes that many slots. */
typedef struct Vec {
	int *v;
	int n, cap;
	int *h;  /* open addressing, -1 empty; hcap a power of two at least 2 n */
	int hcap;
} Vec;

enum { VEC_SCAN = 16 };

static void push(Vec *v, int x)
{
	if (v->n == v->cap) {
		v->cap = v->cap ? 2 * v->cap : 4;
		v->v = xrealloc(v->v, (size_t)v->cap * sizeof *v->v);
	}
	v->v[v->n++] = x;
}

static size_t vec_slot(const Vec *v, int x)
{
	size_t j = ((uint32_t)x * 0x9e3779b1u) & (size_t)(v->hcap - 1);
	while (v->h[j] >= 0 && v->h[j] != x)
		j = (j + 1) & (size_t)(v->hcap - 1);
	return j;
}

static int has(const Vec *v, int x)
{
	if (v->h)
		return v->h[vec_slot(v, x)] == x;
	for (int i = 0; i < v->n; i++)
		if (v->v[i] == x)
			return 1;
	return 0;
}

static void add(Vec *v, int x)
{
	if (has(v, x))
		return;
	push(v, x);
	if (v->n <= VEC_SCAN)
		return;
	if (2 * v->n > v->hcap) { /* (re)build the index */
		free(v->h);
		v->hcap = v->hcap ? 2 * v->hcap : 4 * VEC_SCAN;
		v->h = xmalloc((size_t)v->hcap * sizeof *v->h);
		memset(v->h, 0xff, (size_t)v->hcap * sizeof *v->h);
		for (int i = 0; i < v->n; i++)
			v->h[vec_slot(v, v->v[i])] = v->v[i];
	} else {
		v->h[vec_slot(v, x)] = x;
	}
}

/* Do sets a and b share a key? (Asked of the smaller one.) */
static int meets(const Vec *a, const Vec *b)
{
	if (a->n > b->n) {
		const Vec *t = a;
		a = b;
		b = t;
	}
	for (int i = 0; i < a->n; i++)
		if (has(b, a->v[i]))
			return 1;
	return 0;
}

/* A nest holds at most this many ops: thousands of small parameters' updates, which share an
 * iteration space, would otherwise become one loop body LLVM takes minutes to compile. */
enum { FUSE_MAX_NEST_OPS = 256 };

typedef struct Unit {
	FuseUnitKind kind;
	IrShape space;
	int reds[FUSE_MAX_RED], nred;
	unsigned red_axes;
	Vec inst;
	Vec reads, writes, loose; /* slot keys: read, written, read with broadcasting */
	int window[2], epi;       /* FU_LIBRARY: as FuseUnit's */
	int64_t acc_rows;
} Unit;

typedef struct Planner {
	const IrModule *m;
	const IrFunc *f;
	Unit *u;
	int nu;
	int *unit_of;      /* per instruction */
	int *slot;         /* per instruction: the slot key of the storage it views, or -1 */
	char *uniform;     /* per instruction: the same at every index */
	char *alias;       /* per instruction: shares its operand's storage */
	char *scalar_mem;  /* per instruction: a uniform value a matmul reads from memory */
	char *feeds_only;  /* per instruction: read, and only by reductions */
	int *nread;        /* per instruction: instructions reading it, through reshapes (not counted) */
	int *nwin;         /* per unfold: those of them that are products able to read it by windows */
	char *inline_;     /* per instruction: FV_INLINE */
	int64_t max_batch;
	int *order, *pos;  /* the units in the order they run; each unit's place in it */
	int norder;
} Planner;

/* Every leaf but a tensor of a block is one number. */
static int is_scalar_leaf(IrOp op) { return ir_op_class(op) == OPC_LEAF && op != IR_LOAD; }

static const IrShape *shape(const Planner *p, int v) { return &p->f->inst[v].shape; }

/* ---- a nest over a finer space than some of its members' ---- */

int fuse_refine(const IrShape *fine, const IrShape *coarse, int *owner)
{
	int i = 0;
	for (int k = 0; k < fine->rank; k++)
		owner[k] = -1;
	for (int k = 0; k < coarse->rank; k++) {
		int64_t c = coarse->dim[k];
		if (c == 1)
			continue;
		while (i < fine->rank && fine->dim[i] == 1)
			i++;
		if (i == fine->rank)
			return 0;
		if (c == IR_BATCH || fine->dim[i] == IR_BATCH) {
			if (c != fine->dim[i])
				return 0;
			owner[i++] = k;
			continue;
		}
		int64_t prod = 1;
		while (i < fine->rank && prod < c && fine->dim[i] != IR_BATCH) {
			prod *= fine->dim[i];
			owner[i++] = k;
		}
		if (prod != c)
			return 0;
	}
	for (; i < fine->rank; i++)
		if (fine->dim[i] != 1)
			return 0;
	return 1;
}

IrShape fuse_refine_shape(const IrShape *fine, const IrShape *coarse, const IrShape *s)
{
	int owner[IR_MAXRANK];
	fuse_refine(fine, coarse, owner);
	IrShape out = {.rank = fine->rank};
	for (int i = 0; i < fine->rank; i++) {
		int k = owner[i], j = k - (coarse->rank - s->rank);
		out.dim[i] = k >= 0 && j >= 0 && s->dim[j] != 1 ? fine->dim[i] : 1;
	}
	return out;
}

unsigned fuse_refine_axes(const IrShape *fine, const IrShape *coarse, unsigned mask)
{
	int owner[IR_MAXRANK];
	fuse_refine(fine, coarse, owner);
	unsigned out = 0;
	for (int i = 0; i < fine->rank; i++)
		if (owner[i] >= 0 && (mask >> owner[i] & 1))
			out |= 1u << i;
	return out;
}

/* Can a nest over space take a member over s: the same, or s split finer by space? */
static int within(const IrShape *space, const IrShape *s)
{
	int owner[IR_MAXRANK];
	return ir_shape_eq(*space, *s) || (space->rank > s->rank && fuse_refine(space, s, owner));
}

/* The axes reduction i reduces, as axes of unit U's space. */
static unsigned red_axes_in(const Planner *p, const Unit *U, int i)
{
	const IrInst *in = &p->f->inst[i];
	const IrShape *s = &p->f->inst[in->in[0]].shape;
	return ir_shape_eq(U->space, *s) ? in->attr.axes : fuse_refine_axes(&U->space, s, in->attr.axes);
}

/* The same elements in the same order: equal once leading 1s are dropped. */
static int same_layout(const IrShape *a, const IrShape *b)
{
	int i = 0, j = 0;
	while (i < a->rank && a->dim[i] == 1)
		i++;
	while (j < b->rank && b->dim[j] == 1)
		j++;
	if (a->rank - i != b->rank - j)
		return 0;
	for (; i < a->rank; i++, j++)
		if (a->dim[i] != b->dim[j])
			return 0;
	return 1;
}

/* The slot a store writes, and the shape of what it writes there (a batch block's: the value's). */
static int store_key(const IrModule *m, const IrInst *in, const IrShape *value, IrShape *dst)
{
	NmlBlock b = in->attr.slot.block;
	*dst = nml_block_kind(b) == NML_BK_BATCH ? *value : ir_slot(m, b, in->attr.slot.index)->shape;
	return ir_slot_key(b, in->attr.slot.index);
}

static const IrShape *own_space(const Planner *p, int i);

static void add_member(Planner *p, int u, int i)
{
	Unit *U = &p->u[u];
	const IrInst *in = &p->f->inst[i];
	int owner[IR_MAXRANK];
	if (U->kind == FU_NEST && ir_op_class(in->op) != OPC_STORE && !U->nred && own_space(p, i)->rank > U->space.rank &&
	    fuse_refine(own_space(p, i), &U->space, owner))
		U->space = *own_space(p, i); /* a finer view of the nest's space: the nest runs over it */
	push(&U->inst, i);
	p->unit_of[i] = u;
	for (int j = 0; j < ir_op_arity(in->op); j++) {
		int a = in->in[j], k = p->slot[a];
		if (k < 0)
			continue;
		add(&U->reads, k);
		if (U->kind == FU_NEST && !same_layout(shape(p, a), &U->space))
			add(&U->loose, k);
	}
	if (ir_op_class(in->op) == OPC_STORE) {
		IrShape dst;
		add(&U->writes, store_key(p->m, in, shape(p, in->in[0]), &dst));
	}
}

static int new_unit(Planner *p, FuseUnitKind kind, const IrShape *space, int i)
{
	int u = p->nu++;
	p->u[u] = (Unit){.kind = kind, .window = {-1, -1}, .epi = -1};
	if (space)
		p->u[u].space = *space;
	p->pos[u] = p->norder;
	p->order[p->norder++] = u;
	add_member(p, u, i);
	return u;
}

/* The value whose storage a views (through reshapes and aliases). */
static int storage_of(const Planner *p, int a)
{
	while (p->alias[a])
		a = p->f->inst[a].in[0];
	return a;
}

/* Is value a one of the reductions unit U feeds (complete only when the nest ends)? */
static int feeds(const Unit *U, int a)
{
	for (int k = 0; k < U->nred; k++)
		if (U->reds[k] == a)
			return 1;
	return 0;
}

/* Must unit b run after unit a? A view or alias has no code: it need not, and what reads it
 * depends on the unit computing the storage it views. */
static int depends(const Planner *p, int a, int b)
{
	const Unit *A = &p->u[a], *B = &p->u[b];
	if (B->kind == FU_NONE && p->alias[B->inst.v[0]])
		return 0;
	for (int x = 0; x < B->inst.n; x++) {
		const IrInst *in = &p->f->inst[B->inst.v[x]];
		for (int j = 0; j < ir_op_arity(in->op); j++)
			if (p->unit_of[in->in[j]] == a || p->unit_of[storage_of(p, in->in[j])] == a)
				return 1;
	}
	return meets(&A->writes, &B->reads) || meets(&A->writes, &B->writes) || meets(&A->reads, &B->writes);
}

/* Can unit a move to the end of the order, past every unit after it? */
static int can_sink(const Planner *p, int a)
{
	if (p->norder - p->pos[a] > WINDOW)
		return 0;
	for (int q = p->pos[a] + 1; q < p->norder; q++)
		if (depends(p, a, p->order[q]))
			return 0;
	return 1;
}

static void sink(Planner *p, int a);

/* Must instruction i run after unit x (it reads what x computes or writes, or writes what x
 * reads)? */
static int inst_depends(const Planner *p, int x, int i)
{
	const IrInst *in = &p->f->inst[i];
	const Unit *X = &p->u[x];
	for (int j = 0; j < ir_op_arity(in->op); j++) {
		int a = in->in[j];
		if (p->unit_of[a] == x || p->unit_of[storage_of(p, a)] == x || (p->slot[a] >= 0 && has(&X->writes, p->slot[a])))
			return 1;
	}
	if (ir_op_class(in->op) == OPC_STORE) {
		IrShape dst;
		int key = store_key(p->m, in, shape(p, in->in[0]), &dst);
		return has(&X->reads, key) || has(&X->writes, key);
	}
	return 0;
}

/* Can unit a move to the end, taking instruction i, when units after it must stay after it? Then
 * they move to the end after it (each must be able to, and i must not need them): an update of a
 * parameter that a reads, hoisted between a and the rest of a's pass. */
static int can_make_room(const Planner *p, int a, int i)
{
	if (p->norder - p->pos[a] > WINDOW)
		return 0;
	for (int q = p->pos[a] + 1; q < p->norder; q++) {
		int x = p->order[q];
		if (depends(p, a, x) && (!can_sink(p, x) || inst_depends(p, x, i)))
			return 0;
	}
	return 1;
}

/* Moves a to the end, and after it, in their order, the units that must stay after it. */
static void sink_with_dependents(Planner *p, int a)
{
	int move[WINDOW], n = 0;
	for (int q = p->pos[a] + 1; q < p->norder; q++)
		if (depends(p, a, p->order[q]))
			move[n++] = p->order[q];
	sink(p, a);
	for (int k = 0; k < n; k++)
		sink(p, move[k]);
}

static void sink(Planner *p, int a)
{
	for (int q = p->pos[a]; q + 1 < p->norder; q++) {
		p->order[q] = p->order[q + 1];
		p->pos[p->order[q]] = q;
	}
	p->order[p->norder - 1] = a;
	p->pos[a] = p->norder - 1;
}

/* Can instruction i join nest u (whose space the caller has checked), the nest moving down to i? */
static int fits(const Planner *p, int u, int i)
{
	const Unit *U = &p->u[u];
	const IrInst *in = &p->f->inst[i];
	if (U->kind != FU_NEST || U->inst.n >= FUSE_MAX_NEST_OPS)
		return 0;
	for (int j = 0; j < ir_op_arity(in->op); j++) {
		int a = in->in[j];
		if (feeds(U, storage_of(p, a))) /* not complete before the nest ends */
			return 0;
		if (p->slot[a] >= 0 && has(&U->writes, p->slot[a])) /* a read after a store */
			return 0;
	}
	if (ir_op_class(in->op) == OPC_STORE) {
		IrShape dst;
		if (has(&U->loose, store_key(p->m, in, shape(p, in->in[0]), &dst)))
			return 0;
	}
	return can_sink(p, u) || can_make_room(p, u, i);
}

/* Can store i, of a value nest u computes, join u where u stands? Then the store runs earlier than
 * program order says, so no unit after u may read or write its slot. (The nest cannot move down to
 * the store when something in between needs its reduction, as a LAMB-style rule's trust ratio does:
 * this keeps its state out of work and the copies that would follow.) */
static int hoists(const Planner *p, int u, int i, int key)
{
	const Unit *U = &p->u[u];
	if (U->kind != FU_NEST || feeds(U, storage_of(p, p->f->inst[i].in[0])) || has(&U->loose, key) ||
	    has(&U->writes, key))
		return 0;
	for (int q = p->pos[u] + 1; q < p->norder; q++) {
		const Unit *V = &p->u[p->order[q]];
		if (has(&V->reads, key) || has(&V->writes, key))
			return 0;
	}
	return 1;
}

/* Does store i write back what its slot holds: the value of a load of that slot (through views),
 * with no store to the slot since? (A rule that leaves p unchanged.) */
static int writes_back(const Planner *p, int i, int key)
{
	int a = p->f->inst[i].in[0];
	if (p->slot[a] != key)
		return 0;
	while (p->f->inst[a].op != IR_LOAD)
		a = p->f->inst[a].in[0];
	for (int j = a + 1; j < i; j++) {
		const IrInst *in = &p->f->inst[j];
		if (in->op == IR_STORE && ir_slot_key(in->attr.slot.block, in->attr.slot.index) == key)
			return 0;
	}
	return 1;
}

/* Can instruction i join nest u where u stands, when u cannot move down to i? Then i runs earlier
 * than program order says: everything it reads must be computed by then (its operands' units are
 * u or run before it), and no unit after u may write a slot i reads. (A LAMB-style rule reduces r
 * twice, once before and once after a scalar that needs the nest's first reduction.) */
static int lifts(const Planner *p, int u, int i)
{
	const Unit *U = &p->u[u];
	const IrInst *in = &p->f->inst[i];
	if (U->kind != FU_NEST || ir_op_class(in->op) == OPC_STORE)
		return 0;
	for (int j = 0; j < ir_op_arity(in->op); j++) {
		int a = in->in[j];
		if (feeds(U, storage_of(p, a)) || (p->pos[p->unit_of[a]] > p->pos[u] && p->f->inst[a].op != IR_CONST))
			return 0; /* (a constant is one wherever it is emitted) */
		if (p->slot[a] < 0)
			continue;
		if (has(&U->writes, p->slot[a]))
			return 0;
		for (int q = p->pos[u] + 1; q < p->norder; q++)
			if (has(&p->u[p->order[q]].writes, p->slot[a]))
				return 0;
	}
	return 1;
}

static void join(Planner *p, int u, int i)
{
	if (can_sink(p, u))
		sink(p, u);
	else
		sink_with_dependents(p, u);
	add_member(p, u, i);
}

/* A nest that computes value a (not its reduction), or what a views, for a member over space s:
 * its own space, a finer one (s a coarser view), or a coarser one that s splits finer when the nest
 * has no reductions yet (the nest then takes s as its space: normalization before pooling). */
static int producer(const Planner *p, int a, const IrShape *s)
{
	int r = storage_of(p, a), u = p->unit_of[r], owner[IR_MAXRANK];
	const Unit *U = &p->u[u];
	if (U->kind != FU_NEST || feeds(U, r) || p->uniform[a])
		return -1;
	if (within(&U->space, s) || (!U->nred && s->rank > U->space.rank && fuse_refine(s, &U->space, owner)))
		return u;
	return -1;
}

/* The space a member i is over: an op's shape, a reduction's or a store's operand's. */
static const IrShape *own_space(const Planner *p, int i)
{
	const IrInst *in = &p->f->inst[i];
	return ir_op_class(in->op) == OPC_ELEMWISE ? &in->shape : shape(p, in->in[0]);
}

/* An elementwise op: into the latest nest computing one of its operands, else the latest nest over
 * its shape, else a nest of its own. */
static void place_elementwise(Planner *p, int i, int fuse)
{
	const IrInst *in = &p->f->inst[i];
	if (fuse) {
		int best = -1;
		int lift = -1;
		for (int j = 0; j < ir_op_arity(in->op); j++) {
			int u = producer(p, in->in[j], &in->shape);
			if (u >= 0 && (best < 0 || p->pos[u] > p->pos[best]) && fits(p, u, i))
				best = u;
			else if (u >= 0 && best < 0 && lift < 0 && p->feeds_only[i] && lifts(p, u, i))
				lift = u; /* only to take a reduction along: anything else would go through work */
		}
		if (best < 0 && lift >= 0) {
			add_member(p, lift, i);
			return;
		}
		for (int q = p->norder - 1; best < 0 && q >= 0 && q >= p->norder - WINDOW; q--) {
			int u = p->order[q];
			if (p->u[u].kind == FU_NEST && within(&p->u[u].space, &in->shape)) {
				if (fits(p, u, i))
					best = u;
				break;
			}
		}
		if (best >= 0) {
			join(p, best, i);
			return;
		}
	}
	new_unit(p, FU_NEST, &in->shape, i);
}

/* Is value a in work, or would it be if something outside its nest read it? Such values are never
 * overwritten, so a copy of one can share its storage. Slots can be. */
static int in_work(const Planner *p, int a)
{
	if (p->uniform[a])
		return 0;
	return p->alias[a] ? p->slot[a] < 0 : ir_op_class(p->f->inst[a].op) != OPC_LEAF;
}

/* ---- products that work one at a time (convolutions) ----
 *
 * A stack of products over images (a convolution's, one per image) reads windows an unfold wrote
 * for the whole batch, and its results go to a fold that sums them back, or to a sum over the stack
 * (the weight gradient). Done product by product instead, each product's windows are unfolded just
 * before it into a block that stays in cache, its result is folded or added just after, and the
 * batch-sized windows and results are never stored. */

/* The value a reads through reshapes. */
static int view_root(const IrFunc *f, int a)
{
	while (f->inst[a].op == IR_RESHAPE)
		a = f->inst[a].in[0];
	return a;
}

/* Is every dimension of s known now (no batch)? */
static int fixed(const IrShape *s, int from)
{
	for (int k = from; k < s->rank; k++)
		if (s->dim[k] < 0)
			return 0;
	return 1;
}

/* Whole planes (image, channel) of windows of a [B, C, KH*KW, OH, OW] value w in each matrix of
 * the stack of matrices m (m a view of w, or w a view of m)? */
static int whole_planes(const IrShape *m, const IrShape *w)
{
	if (m->rank < 3 || w->rank != 5 || !fixed(m, m->rank - 2) || !fixed(w, 2))
		return 0;
	int64_t mat = m->dim[m->rank - 2] * m->dim[m->rank - 1], plane = w->dim[2] * w->dim[3] * w->dim[4];
	return plane > 0 && mat % plane == 0;
}

/* Can product i read its operand j as windows of the unfold it views, product by product? The
 * operand has the whole stack (no broadcast), so product s reads the s-th block of the windows. */
static int window_operand(const IrFunc *f, int i, int j)
{
	const IrInst *in = &f->inst[i];
	int a = in->in[j], r = view_root(f, a);
	const IrShape *sa = &f->inst[a].shape, *sc = &in->shape;
	if (f->inst[r].op != IR_UNFOLD || sa->rank != sc->rank || !whole_planes(sa, &f->inst[r].shape))
		return 0;
	for (int k = 0; k < sc->rank - 2; k++)
		if (sa->dim[k] != sc->dim[k])
			return 0;
	return 1;
}

/* The stack of products fold or sum i reads, if it can take them one at a time where they run:
 * nothing else reads them, and the products' unit takes no other. */
static int product_of(const Planner *p, int i)
{
	int r = view_root(p->f, p->f->inst[i].in[0]);
	const Unit *U = &p->u[p->unit_of[r]];
	if (p->f->inst[r].op != IR_MATMUL || p->nread[r] != 1 || U->kind != FU_LIBRARY || U->epi >= 0 ||
	    p->f->inst[r].shape.rank < 3)
		return -1;
	return r;
}

/* A fold of products' results, as each product is done: whole planes per product. */
static int fold_epilogue(Planner *p, int i)
{
	int r = product_of(p, i);
	if (r < 0 || !whole_planes(&p->f->inst[r].shape, shape(p, p->f->inst[i].in[0])))
		return 0;
	int u = p->unit_of[r];
	add_member(p, u, i);
	p->u[u].epi = i;
	p->inline_[r] = 1;
	return 1;
}

/* A sum of a stack of products over the stack (all its axes but those of size 1, none of the
 * matrices'): products added into partial sums where they run. */
static int sum_epilogue(Planner *p, int i)
{
	const IrInst *in = &p->f->inst[i];
	int r = product_of(p, i);
	if (r < 0 || in->op != IR_SUM || in->in[0] != r)
		return 0;
	const IrShape *sc = &p->f->inst[r].shape;
	IrShape stack = {0};
	for (int k = 0; k < sc->rank; k++) {
		int summed = in->attr.axes >> k & 1, mat = k >= sc->rank - 2;
		if (sc->dim[k] != 1 && summed == mat)
			return 0;
		if (!mat)
			stack.dim[stack.rank++] = sc->dim[k];
	}
	int64_t S = ir_shape_numel(stack, p->max_batch);
	if (S < 2 || S == INT64_MAX)
		return 0;
	int u = p->unit_of[r];
	add_member(p, u, i);
	p->u[u].epi = i;
	p->u[u].acc_rows = (S + FUSE_ACC_PARTS - 1) / FUSE_ACC_PARTS;
	return 1;
}

static void place(Planner *p, int i, int fuse)
{
	const IrInst *in = &p->f->inst[i];
	int a = ir_op_arity(in->op) > 0 ? in->in[0] : -1;
	switch (ir_op_class(in->op)) {
	case OPC_LEAF:
		p->uniform[i] = is_scalar_leaf(in->op);
		if (in->op == IR_LOAD)
			p->slot[i] = ir_slot_key(in->attr.slot.block, in->attr.slot.index);
		new_unit(p, FU_NONE, NULL, i);
		break;
	case OPC_ELEMWISE: {
		int uni = 1;
		for (int j = 0; j < ir_op_arity(in->op); j++)
			uni &= p->uniform[in->in[j]];
		if (uni) {
			p->uniform[i] = 1;
			new_unit(p, FU_NONE, NULL, i);
			break;
		}
		if (in->op == IR_STOPGRAD && ir_shape_eq(in->shape, *shape(p, a)) && in_work(p, a)) {
			int u = fuse ? producer(p, a, &in->shape) : -1;
			if (u >= 0 && fits(p, u, i)) {
				join(p, u, i);
			} else {
				p->alias[i] = 1;
				new_unit(p, FU_NONE, NULL, i);
			}
			break;
		}
		place_elementwise(p, i, fuse);
		break;
	}
	case OPC_REDUCE: { /* a nest feeds several reductions only over the same axes: one loop order */
		if (fuse && sum_epilogue(p, i))
			break;
		int u = fuse ? producer(p, a, shape(p, a)) : -1;
		const Unit *U = u >= 0 ? &p->u[u] : NULL;
		int ok = U && (U->nred == 0 || (U->nred < FUSE_MAX_RED && U->red_axes == red_axes_in(p, U, i)));
		if (ok && fits(p, u, i))
			join(p, u, i);
		else if (ok && lifts(p, u, i))
			add_member(p, u, i);
		else
			u = new_unit(p, FU_NEST, shape(p, a), i);
		p->u[u].red_axes = red_axes_in(p, &p->u[u], i);
		p->u[u].reds[p->u[u].nred++] = i;
		break;
	}
	case OPC_LIBRARY: {
		for (int j = 0; j < ir_op_arity(in->op); j++)
			if (p->uniform[in->in[j]])
				p->scalar_mem[in->in[j]] = 1;
		int u = new_unit(p, FU_LIBRARY, NULL, i);
		for (int j = 0; j < 2 && in->op == IR_MATMUL; j++) {
			int w = view_root(p->f, in->in[j]);
			if (!p->inline_[w] || p->f->inst[w].op != IR_UNFOLD)
				continue;
			p->u[u].window[j] = w; /* it reads the unfold's image where it runs */
			int k = p->slot[p->f->inst[w].in[0]];
			if (k >= 0)
				add(&p->u[u].reads, k);
		}
		break;
	}
	case OPC_VIEW:
		p->uniform[i] = p->uniform[a];
		p->alias[i] = !p->uniform[a];
		p->slot[i] = p->uniform[a] ? -1 : p->slot[a];
		new_unit(p, FU_NONE, NULL, i);
		break;
	case OPC_LOOP: /* its loop reads operands from memory: a uniform one is stored first */
		if (p->inline_[i]) { /* an unfold the products reading it compute */
			new_unit(p, FU_NONE, NULL, i);
			break;
		}
		if (fuse && in->op == IR_FOLD && fold_epilogue(p, i))
			break;
		for (int j = 0; j < ir_op_arity(in->op); j++)
			if (p->uniform[in->in[j]])
				p->scalar_mem[in->in[j]] = 1;
		new_unit(p, FU_LOOP, NULL, i);
		break;
	case OPC_STORE: {
		IrShape dst;
		int key = store_key(p->m, in, shape(p, a), &dst);
		if (fuse && same_layout(shape(p, a), &dst) && writes_back(p, i, key)) {
			new_unit(p, FU_NONE, NULL, i);
			break;
		}
		int u = fuse && same_layout(shape(p, a), &dst) ? producer(p, a, shape(p, a)) : -1;
		if (u >= 0 && fits(p, u, i))
			join(p, u, i);
		else if (u >= 0 && hoists(p, u, i, key))
			add_member(p, u, i);
		else
			new_unit(p, FU_NEST, &dst, i);
		break;
	}
	}
}

/* ---- where values live ---- */

int fuse_root(const FusePlan *p, const IrFunc *f, int v)
{
	while (p->val[v].kind == FV_ALIAS)
		v = f->inst[v].in[0];
	return v;
}

static void classify(const Planner *p, FusePlan *plan)
{
	const IrFunc *f = p->f;
	/* read outside its nest: a view reads nothing itself, its readers read what it views (and a
	 * member of the nest reads a view of a value of the nest in the register) */
	char *outside = xcalloc((size_t)f->n, 1);
	for (int i = 0; i < f->n; i++) {
		const IrInst *in = &f->inst[i];
		if (p->alias[i])
			continue;
		for (int j = 0; j < ir_op_arity(in->op); j++) {
			int a = in->in[j], r = storage_of(p, a);
			if (p->unit_of[r] != p->unit_of[i])
				outside[a] = outside[r] = 1;
		}
	}
	for (int i = 0; i < f->n; i++) {
		const IrInst *in = &f->inst[i];
		FuseVal *v = &plan->val[i];
		v->unit = p->pos[p->unit_of[i]];
		switch (ir_op_class(in->op)) {
		case OPC_LEAF: v->kind = p->uniform[i] ? FV_SCALAR : FV_SLOT; break;
		case OPC_ELEMWISE:
		case OPC_VIEW:
			if (p->uniform[i])
				v->kind = FV_SCALAR;
			else if (p->alias[i])
				v->kind = FV_ALIAS;
			else
				v->kind = outside[i] ? FV_WORK : FV_REG;
			break;
		case OPC_REDUCE:
		case OPC_LIBRARY:
		case OPC_LOOP: v->kind = p->inline_[i] ? FV_INLINE : FV_WORK; break;
		case OPC_STORE: v->kind = FV_NONE; break;
		}
		v->region = v->kind == FV_WORK || p->scalar_mem[i];
	}
	free(outside);
}

typedef struct Live {
	size_t off, end;
	int last; /* the last unit that reads it */
} Live;

/* First fit, in the order the units run, of each region into the space no live region holds. */
static void layout(const Planner *p, FusePlan *plan, size_t esize, int64_t max_batch)
{
	const IrFunc *f = p->f;
	int *last = xcalloc((size_t)f->n, sizeof *last);
	for (int i = 0; i < f->n; i++)
		last[i] = plan->val[i].unit;
	for (int i = 0; i < f->n; i++) {
		const IrInst *in = &f->inst[i];
		for (int j = 0; j < ir_op_arity(in->op); j++) {
			int r = fuse_root(plan, f, in->in[j]);
			if (plan->val[r].kind == FV_INLINE && f->inst[r].op == IR_UNFOLD) /* read where i runs */
				r = fuse_root(plan, f, f->inst[r].in[0]);
			if (last[r] < plan->val[i].unit)
				last[r] = plan->val[i].unit;
		}
	}
	Live *live = xcalloc((size_t)f->n, sizeof *live);
	int nlive = 0;
	size_t top = 0;
	for (int q = 0; q < plan->nunits; q++) {
		const FuseUnit *u = &plan->unit[q];
		int k = 0;
		for (int x = 0; x < nlive; x++)
			if (live[x].last >= q)
				live[k++] = live[x];
		nlive = k;
		for (int x = 0; x < u->n; x++) {
			int i = u->inst[x];
			FuseVal *v = &plan->val[i];
			if (!v->region)
				continue;
			size_t bytes = (size_t)ir_shape_numel(f->inst[i].shape, max_batch) * esize;
			if (x == 0 && u->kind == FU_LIBRARY && u->epi >= 0 && f->inst[u->epi].op == IR_SUM) {
				/* the partial sums of the products */
				const IrShape *sc = &f->inst[i].shape;
				int64_t S = ir_shape_numel(*sc, max_batch) / (sc->dim[sc->rank - 2] * sc->dim[sc->rank - 1]);
				int64_t parts = (S + u->acc_rows - 1) / u->acc_rows;
				bytes = (size_t)(parts * sc->dim[sc->rank - 2] * sc->dim[sc->rank - 1]) * esize;
			}
			v->bytes = (bytes + WORK_ALIGN - 1) / WORK_ALIGN * WORK_ALIGN;
			size_t at = 0;
			int y = 0;
			for (; y < nlive && live[y].off < at + v->bytes; y++)
				if (live[y].end > at)
					at = live[y].end;
			v->off = at;
			memmove(&live[y + 1], &live[y], (size_t)(nlive - y) * sizeof *live);
			live[y] = (Live){at, at + v->bytes, last[i]};
			nlive++;
			if (at + v->bytes > top)
				top = at + v->bytes;
			plan->nregions++;
		}
	}
	plan->work_bytes = top;
	free(live);
	free(last);
}

FusePlan *fuse_plan(const IrModule *m, const IrFunc *f, size_t esize, int64_t max_batch, int fuse)
{
	size_t n = (size_t)f->n;
	Planner p = {.m = m, .f = f, .max_batch = max_batch};
	p.u = xcalloc(n, sizeof *p.u);
	p.unit_of = xcalloc(n, sizeof *p.unit_of);
	p.slot = xcalloc(n, sizeof *p.slot);
	p.uniform = xcalloc(n, 1);
	p.alias = xcalloc(n, 1);
	p.scalar_mem = xcalloc(n, 1);
	p.feeds_only = xcalloc(n, 1);
	p.nread = xcalloc(n, sizeof *p.nread);
	p.nwin = xcalloc(n, sizeof *p.nwin);
	p.inline_ = xcalloc(n, 1);
	for (int i = 0; i < f->n; i++) /* unfolds read only by products that can read them by windows */
		for (int j = 0; f->inst[i].op != IR_RESHAPE && j < ir_op_arity(f->inst[i].op); j++) {
			int r = view_root(f, f->inst[i].in[j]);
			p.nread[r]++;
			p.nwin[r] += f->inst[i].op == IR_MATMUL && window_operand(f, i, j);
		}
	for (int i = 0; i < f->n; i++)
		p.inline_[i] = fuse && f->inst[i].op == IR_UNFOLD && p.nwin[i] && p.nwin[i] == p.nread[i];
	for (int i = 0; i < f->n; i++) /* 1: read only by reductions so far; 2: by something else */
		for (int j = 0; j < ir_op_arity(f->inst[i].op); j++) {
			char *fo = &p.feeds_only[f->inst[i].in[j]];
			*fo = ir_op_class(f->inst[i].op) == OPC_REDUCE && *fo != 2 ? 1 : 2;
		}
	for (int i = 0; i < f->n; i++)
		p.feeds_only[i] = p.feeds_only[i] == 1;
	p.order = xcalloc(n, sizeof *p.order);
	p.pos = xcalloc(n, sizeof *p.pos);
	for (int i = 0; i < f->n; i++)
		p.slot[i] = -1;
	for (int i = 0; i < f->n; i++)
		place(&p, i, fuse);

	FusePlan *plan = xcalloc(1, sizeof *plan);
	plan->nunits = p.norder;
	plan->unit = xcalloc(n, sizeof *plan->unit);
	plan->val = xcalloc(n, sizeof *plan->val);
	for (int q = 0; q < p.norder; q++) {
		Unit *U = &p.u[p.order[q]];
		plan->unit[q] = (FuseUnit){.kind = U->kind, .space = U->space, .red = U->nred ? U->reds[0] : -1,
					   .nred = U->nred, .red_axes = U->red_axes, .inst = U->inst.v, .n = U->inst.n, .window = {U->window[0], U->window[1]},
					   .epi = U->epi, .acc_rows = U->acc_rows};
		memcpy(plan->unit[q].reds, U->reds, sizeof U->reds);
		U->inst.v = NULL;
	}
	classify(&p, plan);
	layout(&p, plan, esize, max_batch);

	for (int u = 0; u < p.nu; u++) {
		free(p.u[u].reads.v);
		free(p.u[u].writes.v);
		free(p.u[u].loose.v);
		free(p.u[u].reads.h);
		free(p.u[u].writes.h);
		free(p.u[u].loose.h);
	}
	free(p.u);
	free(p.unit_of);
	free(p.slot);
	free(p.uniform);
	free(p.alias);
	free(p.scalar_mem);
	free(p.feeds_only);
	free(p.nread);
	free(p.nwin);
	free(p.inline_);
	free(p.order);
	free(p.pos);
	return plan;
}

void fuse_free(FusePlan *p)
{
	if (!p)
		return;
	for (int q = 0; q < p->nunits; q++)
		free(p->unit[q].inst);
	free(p->unit);
	free(p->val);
	free(p);
}

/* ---- the dump ---- */

static void dump_value(FILE *out, const IrModule *m, const IrFunc *f, int v)
{
	const IrInst *in = &f->inst[v];
	if (in->op == IR_LOAD)
		ir_dump_slot(out, m, in->attr.slot.block, in->attr.slot.index);
	else
		fprintf(out, "%%%d", v);
}

static void dump_member(FILE *out, const IrModule *m, const IrFunc *f, const FusePlan *p, int i)
{
	const IrInst *in = &f->inst[i];
	if (in->op == IR_STORE) {
		fprintf(out, "%s ", ir_op_name(in->op));
		ir_dump_slot(out, m, in->attr.slot.block, in->attr.slot.index);
		return;
	}
	fprintf(out, "%s %%%d", ir_op_name(in->op), i);
	if (ir_op_info(in->op)->attr == ATTR_AXES)
		ir_dump_attr(out, m, in);
	if (p->val[i].kind == FV_WORK)
		fprintf(out, "*");
}

void fuse_dump(FILE *out, const IrModule *m, const IrFunc *f, const FusePlan *p)
{
	int nests = 0, calls = 0;
	for (int q = 0; q < p->nunits; q++) {
		nests += p->unit[q].kind == FU_NEST;
		calls += p->unit[q].kind == FU_LIBRARY || p->unit[q].kind == FU_LOOP;
	}
	fprintf(out, "kernel %s: %d loop nests, %d other calls; work %d regions, %zu bytes (* : written to work)\n",
		f->name, nests, calls, p->nregions, p->work_bytes);
	char buf[64];
	for (int q = 0; q < p->nunits; q++) {
		const FuseUnit *u = &p->unit[q];
		if (u->kind == FU_NONE) {
			int i = u->inst[0];
			if (p->val[i].region)
				fprintf(out, "  fill  %%%d %s\n", i, ir_shape_str(f->inst[i].shape, buf, sizeof buf));
			continue;
		}
		if (u->kind != FU_NEST) {
			int i = u->inst[0];
			const IrInst *in = &f->inst[i];
			fprintf(out, "  call  %s %%%d = ", ir_op_name(in->op), i);
			for (int j = 0; j < ir_op_arity(in->op); j++) {
				fprintf(out, "%s", j ? ", " : "");
				if (u->kind == FU_LIBRARY && j < 2 && u->window[j] >= 0) {
					fprintf(out, "windows(");
					dump_value(out, m, f, f->inst[u->window[j]].in[0]);
					fprintf(out, ")");
				} else {
					dump_value(out, m, f, in->in[j]);
				}
			}
			fprintf(out, " : %s", ir_shape_str(in->shape, buf, sizeof buf));
			if (u->kind == FU_LIBRARY && u->epi >= 0) {
				fprintf(out, ", each product then ");
				dump_member(out, m, f, p, u->epi);
				if (f->inst[u->epi].op == IR_SUM)
					fprintf(out, " in partial sums of %lld", (long long)u->acc_rows);
			}
			fprintf(out, "\n");
			continue;
		}
		fprintf(out, "  nest  %s:", ir_shape_str(u->space, buf, sizeof buf));
		for (int x = 0; x < u->n; x++) {
			fprintf(out, "%s", x ? ", " : " ");
			dump_member(out, m, f, p, u->inst[x]);
		}
		/* what it reads from memory */
		int first = 1;
		for (int x = 0; x < u->n; x++) {
			const IrInst *in = &f->inst[u->inst[x]];
			for (int j = 0; j < ir_op_arity(in->op); j++) {
				int a = in->in[j], seen = 0;
				if (p->val[fuse_root(p, f, a)].unit == q || p->val[a].kind == FV_SCALAR)
					continue;
				for (int y = 0; y < x && !seen; y++)
					for (int k = 0; k < ir_op_arity(f->inst[u->inst[y]].op); k++)
						seen |= f->inst[u->inst[y]].in[k] == a;
				for (int k = 0; k < j; k++)
					seen |= in->in[k] == a;
				if (seen)
					continue;
				fprintf(out, "%s", first ? "  <- " : " ");
				dump_value(out, m, f, a);
				first = 0;
			}
		}
		fprintf(out, "\n");
	}
	if (p->nregions) {
		fprintf(out, "  work:");
		for (int i = 0; i < f->n; i++)
			if (p->val[i].region)
				fprintf(out, " %%%d@%zu", i, p->val[i].off);
		fprintf(out, "\n");
	}
}

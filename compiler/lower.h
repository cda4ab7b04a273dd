/* lower.h: elaboration of the train block into tensor IR. Layers are instantiated with their
 * arguments, which fixes every shape; forward functions, plain functions and the loss are inlined
 * into one IR function; shape errors are reported at the expression that caused them. */
#ifndef LOWER_H
#define LOWER_H

#include "ast.h"
#include "ir.h"
#include "sema.h"

typedef enum {
	V_NONE,
	V_NUM,     /* compile-time number */
	V_TENSOR,  /* IR value of the function being built */
	V_STR,
	V_LIST,
	V_PARAM,   /* a layer's parameter slot; becomes a tensor when read in a forward */
	V_BUF,     /* a layer's buffer slot: read as a tensor, assigned in a forward (the update) */
	V_INST,    /* layer instance */
	V_DEF,     /* layer, function or optimizer definition */
	V_BUILTIN,
	V_INIT,    /* initializer */
	V_DATA,    /* data source */
	V_OPT,     /* optimizer with its arguments */
} ValueKind;

typedef struct Instance Instance;
typedef struct Env Env;

typedef struct Value {
	ValueKind kind;
	double num;
	int id;            /* V_TENSOR: value; V_PARAM / V_BUF: slot; V_BUILTIN / V_DATA: builtin */
	const char *str;
	AstNode *node;     /* V_DEF: the definition; V_OPT / V_DATA: the call */
	AstNode *def;      /* V_OPT: the rule's definition (the call may name it through a parameter) */
	Env *env;          /* V_OPT / V_DATA: where the call's arguments are evaluated */
	Instance *inst;
	struct Value *items; /* V_LIST */
	int nitems;
	IrInit init;       /* V_INIT; kind -1: he, -2: xavier (need the parameter's shape) */
	const char *group; /* V_OPT in a chain: only("group", rule) or except("group", rule), or NULL */
	int group_except;
} Value;

/* Where training data comes from, as the train block says. */
typedef enum { DATA_IDX, DATA_NPY, DATA_CSV, DATA_SYNTHETIC } DataKind;
typedef struct DataSpec {
	DataKind kind;
	const char *path[4]; /* IDX: train images, labels, test images, labels; NPY: x, y, test x, test y */
	double holdout;      /* NPY or CSV without test files: fraction held out */
	int label;           /* CSV: the target column (negative: from the end) */
	int regression;      /* CSV: the target is a value, not a class index */
	struct {             /* synthetic(n, d, classes, noise, seed): nml_data_synthetic's arguments */
		int64_t n, d, classes, seed;
		double noise;
	} synth;
	int xrank;           /* shape = [...]: the shape of one sample (0: as the file has it) */
	int64_t xshape[IR_MAXRANK];
	SrcLoc loc;
} DataSpec;

typedef struct TrainConfig {
	DataSpec data;
	int64_t batch;
	int epochs;
	uint64_t seed;
	int in_order;      /* shuffle = 0: every epoch takes the rows in the data's order */
	int64_t accumulate; /* steps whose gradients are averaged into one update (1: every step) */
	int deterministic; /* --deterministic: every matrix product on one thread (the same bits on any number) */
	Value optimizer;   /* V_OPT */
	SrcLoc loc;
} TrainConfig;

typedef struct Lower {
	Arena *arena;
	const SemaGlobals *globals;
	Env *global_env;
	IrModule *mod;
	IrFunc *fn;            /* the function being built; NULL while instantiating layers */
	int *param_leaf;       /* per parameter slot: its PARAM value in fn, or -1 */
	int nparam_leaf;
	const char *prefix;    /* path of the layer being instantiated: "l1." */
	int depth;             /* inlining depth, to stop runaway recursion */
	int required;          /* a require just failed: the body it is in stops there */
	AstNode *train;
	Env *train_env;
	Instance *model;
	AstNode *schedule[64]; /* per optimizer formal (of every rule of a chain, in order): its
				* expression of t and T, or NULL */
	const char *schedule_name[64];
	int schedule_scaled[64]; /* the schedule was `number * curve`: the number is the hyperparameter
				  * of the formal's name (--set changes it), the schedule the curve */
	int nschedule;
	Env **opt_envs;        /* while lowering an update rule: every parameter's environment */
	int opt_param;         /* and the parameter whose rule is being lowered */
	int opt_nenvs;
	int opt_step;          /* the step t in the function an update rule is lowered into */
	int opt_apply;         /* with gradient accumulation: 1 on the steps that update, else -1 */
	Env **opt_base;        /* while lowering an update rule: every parameter's base environment */
	char *opt_accumulated; /* and per parameter: its gradients are accumulated (optim_accumulate) */
	char *state_gated;     /* per state slot: written only on the steps that update */
	int nstate_gated;
	int64_t accumulate;    /* the train block's accumulate: steps per update */
	SrcLoc accumulate_loc;
	/* The barriers (global reductions, grad_at) of the statement being lowered, each computed once
	 * from every parameter's environment as it stood before the statement: a global reduction's
	 * value, or grad_at's gradient for every parameter. */
	struct { AstNode *node; int value; int *grads; } barrier[32];
	int nbarrier;
	int *eval_slot;        /* per parameter: the state slot of its evaluation weights (p_eval), or -1 */
	int neval_slot;
	const IrFunc *fwd_func; /* the training forward pass, which grad_at evaluates again */
	int fwd_loss;           /* its loss */
	int training;          /* the forward being built is the training-mode one */
	int *buf_value;        /* per buffer slot: its value assigned so far in fn, or -1 (read: a load) */
	int nbuf_value;
	int *buf_final;        /* per buffer slot: the value the step stores when a grad_at pass with
				* update_buffers = 1 gave it (the last such pass), else -1; NULL: none */
	int *buf_update;       /* the buffer slots fn assigns, in order of their first assignment */
	int nbuf_update;
	int pred;              /* the model's output in fn */
	int loss;              /* the loss in fn */
} Lower;

void lower_init(Lower *L, Arena *arena, const SemaGlobals *g, IrModule *mod);
/* Evaluate the train block's settings and instantiate the model (creating its parameters). */
int lower_train_config(Lower *L, AstNode *train, TrainConfig *cfg);
/* With the batch blocks' shapes and mod->classes set from the data: build a forward function (loss
 * and model output) in training or evaluation mode. Returns it, or NULL after errors. */
IrFunc *lower_forward(Lower *L, int training, const char *name);

/* After lower_forward: the new value of every buffer the forward pass assigns (nslots entries, -1
 * where it assigns none). The training step stores them. */
int lower_buffer_value(const Lower *L, int slot);

/* The name of the model's layer. */
const char *lower_model_name(const Lower *L);

/* For optim.c: environments and evaluation. */
Env *lower_env_new(Lower *L, Env *parent);
void lower_bind(Lower *L, Env *env, const char *name, Value v);
Value *lower_lookup_local(Env *env, const char *name);
Value *lower_lookup(Env *env, const char *name); /* through the enclosing environments */
Value lower_expr(Lower *L, Env *env, AstNode *e);
int lower_tensor(Lower *L, Value v, SrcLoc loc); /* a number becomes a constant; -1 if not a tensor */
int lower_param_value(Lower *L, int slot);      /* the PARAM value of slot in L->fn */
/* Bind a call's arguments to a definition's formals in env (defaults evaluated there). */
int lower_bind_args(Lower *L, Env *callenv, AstNode *call, const AstList *formals, Env *env);
IrInit lower_resolve_init(Value v, IrShape s);
/* The count of `repeat N { ... }`, a whole number from 0 to 1000, or -1 after an error. */
int lower_repeat_count(Lower *L, Env *env, const AstNode *st);

#endif

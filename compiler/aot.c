/* aot.c: nmlc build. The step, eval and predict kernels go through codegen into an object file; the
 * model's tables and its API go into generated C and a header; the system C compiler links them with
 * the runtime archive into a shared object that needs neither nmlc nor LLVM:
 *
 *   step, eval, predict ─cg_module, cg_optimize_for, EmitToFile─► kernels.o ─┐
 *   slots, hyperparameters, shapes ─────────────────────► model.c + NAME.h ─┼─ cc -shared ─► libNAME.so
 *   runtime/model.c, ckpt.c, rng.c, … ─────────────────────────► libnmlrt.a ─┘
 *
 * Everything goes to a private temporary directory; the two outputs are linked or written under
 * temporary names beside their final ones and renamed last. */
#include "aot.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codegen.h"
#include "config.h"

enum {
	AOT_NAME = 128, /* longest API prefix */
	AOT_ARGS = 64,  /* words of the C compiler's command line */
};

typedef struct Aot {
	Compiler *c;
	const AotOptions *o;
	char name[AOT_NAME];              /* the API's prefix without its '_': fashion */
	char upper[AOT_NAME];             /* FASHION, for the header's macros */
	char header[PATH_MAX];            /* fashion.h, beside the .so */
	char tmpdir[PATH_MAX];            /* kernels.o, model.c and a copy of the header */
	char so_tmp[PATH_MAX], h_tmp[PATH_MAX]; /* beside the outputs, renamed at the end */
	char lib[PATH_MAX], inc[PATH_MAX]; /* libnmlrt.a; the directory of nmlrt.h */
	char cpu[128];                    /* what the kernels were compiled for */
	size_t work;                      /* scratch bytes, the most of the three kernels */
} Aot;

__attribute__((format(printf, 1, 2)))
static int aot_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "nmlc: error: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return 1;
}

/* ---- names ---- */

/* -o DIR/libNAME.so: NAME (letters, digits, '_'; other characters become '_') is the prefix of the
 * API and the header's name, DIR/NAME.h. */
static int aot_names(Aot *a)
{
	const char *out = a->o->output, *slash = strrchr(out, '/'), *base = slash ? slash + 1 : out;
	size_t len = strlen(base);
	if (len > 3 && !strcmp(base + len - 3, ".so"))
		len -= 3;
	if (len > 3 && !strncmp(base, "lib", 3))
		base += 3, len -= 3;
	if (!len || len >= AOT_NAME || !(isalpha((unsigned char)base[0]) || base[0] == '_'))
		return aot_error("cannot name the library's functions after '%s': give -o libNAME.so, NAME starting "
				 "with a letter", out);
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)base[i];
		a->name[i] = isalnum(ch) || ch == '_' ? (char)ch : '_';
		a->upper[i] = (char)toupper((unsigned char)a->name[i]);
	}
	a->name[len] = a->upper[len] = 0;
	int dir = slash ? (int)(slash - out + 1) : 0;
	if (snprintf(a->header, sizeof a->header, "%.*s%s.h", dir, out, a->name) >= (int)sizeof a->header)
		return aot_error("output path too long: '%s'", out);
	/* Found now, not when the first of the two renames has happened. */
	struct stat st;
	if (stat(out, &st) == 0 && S_ISDIR(st.st_mode))
		return aot_error("'%s' is a directory: give -o DIR/libNAME.so", out);
	if (stat(a->header, &st) == 0 && S_ISDIR(st.st_mode))
		return aot_error("'%s', where the header goes, is a directory", a->header);
	return 0;
}

/* ---- finding the runtime ---- */

static int readable(const char *path) { return access(path, R_OK) == 0; }

/* libnmlrt.a, and the nmlrt.h it was built from, found as driver.c finds the stdlib:
 * $NML_RUNTIME_LIB (the archive) and $NML_INCLUDE_DIR (nmlrt.h's directory) override; else an
 * installation around the binary (bin/../LIBDIR, bin/../INCLUDEDIR); else the build tree the binary
 * was built in (BUILD/compiler/nmlc: BUILD/runtime/libnmlrt.a and the source tree's runtime/); else
 * the configured installation directories. */
static int find_runtime(Aot *a)
{
	const char *env_lib = getenv("NML_RUNTIME_LIB"), *env_inc = getenv("NML_INCLUDE_DIR");
	char exe[PATH_MAX] = "", cand[3][2][PATH_MAX + 64];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n > 0) {
		exe[n] = 0;
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = 0;
	} else {
		exe[0] = 0;
	}
	int nc = 0;
	if (exe[0] && NML_LIBDIR[0] != '/' && NML_INCLUDEDIR[0] != '/') {
		snprintf(cand[nc][0], sizeof cand[nc][0], "%s/../%s/libnmlrt.a", exe, NML_LIBDIR);
		snprintf(cand[nc][1], sizeof cand[nc][1], "%s/../%s", exe, NML_INCLUDEDIR);
		nc++;
	}
	if (exe[0]) {
		snprintf(cand[nc][0], sizeof cand[nc][0], "%s/../runtime/libnmlrt.a", exe);
		snprintf(cand[nc][1], sizeof cand[nc][1], "%s/runtime", NML_SOURCE_DIR);
		nc++;
	}
	snprintf(cand[nc][0], sizeof cand[nc][0], "%s/libnmlrt.a", NML_LIB_INSTALL_DIR);
	snprintf(cand[nc][1], sizeof cand[nc][1], "%s", NML_INCLUDE_INSTALL_DIR);
	nc++;
	for (int i = 0; i < nc; i++) {
		const char *lib = env_lib && *env_lib ? env_lib : cand[i][0];
		const char *inc = env_inc && *env_inc ? env_inc : cand[i][1];
		char h[PATH_MAX + 16];
		snprintf(h, sizeof h, "%s/nmlrt.h", inc);
		if (readable(lib) && readable(h) && strlen(lib) < sizeof a->lib && strlen(inc) < sizeof a->inc) {
			memcpy(a->lib, lib, strlen(lib) + 1);
			memcpy(a->inc, inc, strlen(inc) + 1);
			return 0;
		}
	}
	fprintf(stderr, "nmlc: error: cannot find the NML runtime (libnmlrt.a and nmlrt.h); looked for:\n");
	for (int i = 0; i < nc; i++)
		fprintf(stderr, "  %s and %s/nmlrt.h\n", env_lib && *env_lib ? env_lib : cand[i][0],
			env_inc && *env_inc ? env_inc : cand[i][1]);
	fprintf(stderr, "(set NML_RUNTIME_LIB to libnmlrt.a and NML_INCLUDE_DIR to the directory of nmlrt.h)\n");
	return 1;
}

/* ---- kernels ---- */

/* The target machine for --cpu. LLVM reports a CPU name it does not know only on stderr, then
 * makes code without 64-bit support and aborts on the first function; so its report is caught
 * while the machine is made, and is an error. */
static LLVMTargetMachineRef target_machine(Aot *a)
{
	char *err = NULL;
	const char *cpu = a->o->cpu;
	int host = !cpu || !strcmp(cpu, "host") || !strcmp(cpu, "native");
	FILE *log = host ? NULL : tmpfile();
	int saved = log ? dup(STDERR_FILENO) : -1;
	fflush(stderr);
	if (saved >= 0)
		dup2(fileno(log), STDERR_FILENO);
	LLVMTargetMachineRef tm = cg_machine(host ? NULL : cpu, &err);
	fflush(stderr);
	if (saved >= 0) {
		dup2(saved, STDERR_FILENO);
		close(saved);
	}
	char said[512] = "";
	if (log) {
		rewind(log);
		size_t n = fread(said, 1, sizeof said - 1, log);
		said[n] = 0;
		fclose(log);
		char *nl = strchr(said, '\n');
		if (nl)
			*nl = 0;
	}
	if (!tm || said[0]) {
		if (said[0])
			aot_error("--cpu %s: %s", cpu, said);
		else
			aot_error("code generation failed: %s", err ? err : "?");
		free(err);
		if (tm)
			LLVMDisposeTargetMachine(tm);
		return NULL;
	}
	char *name = LLVMGetTargetMachineCPU(tm);
	snprintf(a->cpu, sizeof a->cpu, "%s", name);
	LLVMDisposeMessage(name);
	return tm;
}

static int emit_kernels(Aot *a, LLVMTargetMachineRef tm, const char *obj)
{
	Compiler *c = a->c;
	CgKernel k[] = {{"nml_step", c->step, 0}, {"nml_eval", c->eval, 0}, {"nml_predict", c->predict, 0}};
	enum { NK = sizeof k / sizeof k[0] };
	char *err = NULL, *msg = NULL;
	LLVMContextRef ctx = LLVMContextCreate();
	LLVMModuleRef mod = cg_module(ctx, "nml", &c->mod, k, NK, CG_F32, c->cfg.batch);
	/* Hidden: only the API is exported, so libraries of two models load side by side. */
	for (int i = 0; i < NK; i++)
		LLVMSetVisibility(LLVMGetNamedFunction(mod, k[i].name), LLVMHiddenVisibility);
	int rc = 0;
	if (cg_optimize_for(mod, tm, &err)) {
		rc = aot_error("code generation failed: %s", err ? err : "?");
		free(err);
	} else if (LLVMTargetMachineEmitToFile(tm, mod, (char *)obj, LLVMObjectFile, &msg)) {
		rc = aot_error("cannot write the kernels' object file %s: %s", obj, msg ? msg : "?");
		LLVMDisposeMessage(msg);
	}
	a->work = 0;
	for (int i = 0; i < NK; i++)
		if (k[i].work_bytes > a->work)
			a->work = k[i].work_bytes;
	LLVMDisposeModule(mod);
	LLVMContextDispose(ctx);
	return rc;
}

/* ---- generated C ---- */

static void c_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 32 || ch >= 127)
			fprintf(f, "\\%03o", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

/* Exactly: hexadecimal floating literals round-trip. */
static void c_double(FILE *f, double v)
{
	if (isnan(v))
		fprintf(f, "NAN");
	else if (isinf(v))
		fprintf(f, v > 0 ? "INFINITY" : "-INFINITY");
	else
		fprintf(f, "%a", v);
}

/* The .nml path as quoted in a generated comment, which it must not end. */
static const char *comment_safe(const char *path, char *buf, size_t len)
{
	size_t n = 0;
	for (const char *s = path; *s && n + 2 < len; s++) {
		buf[n++] = *s;
		if (s[0] == '*' && s[1] == '/')
			buf[n++] = ' ';
	}
	buf[n] = 0;
	return buf;
}

static void shape_text(const IrShape *s, char *buf, size_t len)
{
	size_t n = (size_t)snprintf(buf, len, "[");
	for (int k = 0; k < s->rank && n < len; k++)
		n += (size_t)snprintf(buf + n, len - n, k ? ", %lld" : "%lld", (long long)s->dim[k]);
	if (n < len)
		snprintf(buf + n, len - n, "]");
}

static int64_t ydim(const Compiler *c)
{
	const IrShape *y = &ir_slot(&c->mod, NML_B_Y, 0)->shape;
	return y->rank == 2 ? y->dim[1] : 0;
}

static void header_tensors(FILE *f, const char *what, const IrSlot *s, int n)
{
	size_t count = 0;
	for (int i = 0; i < n; i++)
		count += (size_t)ir_shape_numel(s[i].shape, 1);
	fprintf(f, " *\n * %s: %zu values in %d tensor%s\n", what, count, n, n == 1 ? "" : "s");
	for (int i = 0; i < n; i++) {
		char sh[96];
		shape_text(&s[i].shape, sh, sizeof sh);
		fprintf(f, " *   %-24s %s\n", s[i].name, sh);
	}
}

static void write_header(const Aot *a, FILE *f, const char *src)
{
	const Compiler *c = a->c;
	const IrModule *m = &c->mod;
	const char *p = a->name, *P = a->upper;
	fprintf(f, "/* %s.h: the C API of lib%s.so, model %s of %s,\n * compiled by nmlc %s for CPU %s. "
		"Generated by `nmlc build`; do not edit.\n", p, p, lower_model_name(&c->lower), src, NML_VERSION, a->cpu);
	const IrBlock *params = ir_block(m, NML_B_PARAMS), *states = ir_block(m, NML_B_STATE);
	header_tensors(f, "Parameters", params->slot, params->n);
	header_tensors(f, "Optimizer state", states->slot, states->n);
	fprintf(f, " *\n * Hyperparameters (defaults):%s\n", m->nhparams ? "" : " none");
	for (int i = 0; i < m->nhparams; i++)
		fprintf(f, " *   %-24s %g%s\n", m->hparams[i].name, m->hparams[i].value,
			m->hparams[i].name == intern_cstr("T") ? " (the run's length in steps, which schedules read)" : "");
	int nsched = 0;
	for (int k = 0; k < c->lower.nschedule; k++)
		if (c->lower.schedule[k])
			fprintf(f, "%s %s", nsched++ ? "," : " * Schedules of t and T (compiled in):",
				c->lower.schedule_name[k]);
	fprintf(f, "%s *\n", nsched ? "\n" : "");
	fprintf(f,
		" * Every function returning int returns 0, or -1 with %s_error(m) saying why. A model is used\n"
		" * by one thread at a time; separate models are independent. Matrix products run on OpenBLAS\n"
		" * (threads: OPENBLAS_NUM_THREADS). */\n", p);
	fprintf(f, "#ifndef %s_H\n#define %s_H\n\n#include <stddef.h>\n#include <stdint.h>\n\n", P, P);
	fprintf(f, "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
	fprintf(f, "#define %s_BATCH %lld /* most rows per train_step; evaluate and predict take any number */\n", P,
		(long long)c->cfg.batch);
	fprintf(f, "#define %s_X_DIM %lld /* x: [n, %s_X_DIM] floats, row-major */\n", P, (long long)c->train.xdim, P);
	fprintf(f, "#define %s_Y_DIM %lld /* y: [n] class indices as floats if 0, else [n, %s_Y_DIM] targets */\n",
		P, (long long)ydim(c), P);
	fprintf(f, "#define %s_CLASSES %lld /* classes of y; 0 for regression */\n", P, (long long)m->classes);
	fprintf(f, "#define %s_OUT_DIM %lld /* pred: [n, %s_OUT_DIM] floats, the model's output */\n", P,
		(long long)m->out_dim, P);
	fprintf(f, "#define %s_NUM_PARAMS %d\n#define %s_NUM_STATES %d\n#define %s_NUM_HPARAMS %d\n", P, params->n,
		P, states->n, P, m->nhparams);
	fprintf(f, "#define %s_ABI_VERSION %d /* of the runtime it was built for: %s_create fails under another */\n",
		P, NML_ABI_VERSION, p);
	fprintf(f, "#define %s_SEED UINT64_C(%llu) /* the train block's seed, nmlc run's default */\n\n", P,
		(unsigned long long)c->cfg.seed);
	fprintf(f,
		"typedef struct %s_model %s_model;\n\n"
		"typedef struct %s_tensor {\n"
		"\tconst char *name; /* \"l1.w\"; optimizer state: \"l1.w.m\" (checkpoint names) */\n"
		"\tint rank;\n"
		"\tint64_t shape[%d];\n"
		"} %s_tensor;\n\n", p, p, p, NML_MAXRANK, p);
	fprintf(f,
		"/* A model with parameters initialized from seed exactly as `nmlc run --seed SEED` does,\n"
		" * the optimizer state fresh, hyperparameters at their defaults, step 0. NULL if out of memory. */\n"
		"%s_model *%s_create(uint64_t seed);\n"
		"void %s_free(%s_model *m);\n"
		"/* What the last failed call of m said (\"\" if none). */\n"
		"const char *%s_error(const %s_model *m);\n\n", p, p, p, p, p, p);
	fprintf(f,
		"/* One optimizer step on n rows, 1 <= n <= %s_BATCH: x [n, %s_X_DIM], y as above. The step\n"
		" * count advances first (the first step is t = 1). *loss (unless NULL) receives the batch's mean\n"
		" * loss before the update; a loss that is not finite means training diverged. */\n"
		"int %s_train_step(%s_model *m, const float *x, const float *y, int64_t n, double *loss);\n"
		"/* The mean loss over n >= 1 rows, and the output pred [n, %s_OUT_DIM] unless pred is NULL.\n"
		" * Changes nothing. */\n"
		"int %s_evaluate(%s_model *m, const float *x, const float *y, int64_t n, double *loss, float *pred);\n"
		"/* The model's output for n >= 1 rows: pred [n, %s_OUT_DIM]. */\n"
		"int %s_predict(%s_model *m, const float *x, int64_t n, float *pred);\n\n", P, P, p, p, P, p, p, P, p,
		p);
	fprintf(f,
		"/* A safetensors checkpoint as `nmlc run --save` writes it (parameters, optimizer state, step and\n"
		" * hyperparameters), written to a temporary file and renamed. */\n"
		"int %s_save(%s_model *m, const char *path);\n"
		"/* Parameters, optimizer state, step and hyperparameters from a checkpoint of this model (such as\n"
		" * nmlc run --save writes); on failure nothing changes. */\n"
		"int %s_load(%s_model *m, const char *path);\n"
		"/* Parameters only (e.g. from numpy or PyTorch), like nmlc run --init. */\n"
		"int %s_load_params(%s_model *m, const char *path);\n\n", p, p, p, p, p, p);
	fprintf(f,
		"/* Hyperparameters by name, read by every step: no recompiling. */\n"
		"int %s_get_hparam(%s_model *m, const char *name, double *value);\n"
		"int %s_set_hparam(%s_model *m, const char *name, double value);\n"
		"const char *%s_hparam_name(int i); /* 0 <= i < %s_NUM_HPARAMS, else NULL */\n"
		"/* Optimizer steps done (the next train_step runs step t = this + 1). */\n"
		"int64_t %s_get_step(const %s_model *m);\n"
		"int %s_set_step(%s_model *m, int64_t step);\n\n", p, p, p, p, p, P, p, p, p, p);
	fprintf(f,
		"/* Tensors, in checkpoint order: names and shapes, and the live float data of a model. */\n"
		"const %s_tensor *%s_param_info(int i); /* 0 <= i < %s_NUM_PARAMS, else NULL */\n"
		"float *%s_param_data(%s_model *m, int i);\n"
		"const %s_tensor *%s_state_info(int i); /* 0 <= i < %s_NUM_STATES, else NULL */\n"
		"float *%s_state_data(%s_model *m, int i);\n\n", p, p, P, p, p, p, p, P, p, p);
	fprintf(f, "#ifdef __cplusplus\n}\n#endif\n\n#endif\n");
}

/* The start of a table row: {"name", rank, {dims} */
static void write_name_shape(FILE *f, const IrSlot *s)
{
	fprintf(f, "\t{");
	c_string(f, s->name);
	fprintf(f, ", %d, {", s->shape.rank);
	for (int k = 0; k < s->shape.rank; k++)
		fprintf(f, "%s%lld", k ? ", " : "", (long long)s->shape.dim[k]);
	fprintf(f, "}");
}

static void write_slots(FILE *f, const char *var, const IrSlot *s, int n)
{
	if (!n)
		return;
	fprintf(f, "static const NmlSlotDesc %s[] = {\n", var);
	static const char *const kinds[] = {"NML_INIT_CONST", "NML_INIT_NORMAL", "NML_INIT_UNIFORM"};
	for (int i = 0; i < n; i++) {
		write_name_shape(f, &s[i]);
		fprintf(f, ", %zu, {%s, ", s[i].offset, kinds[s[i].init.kind]);
		c_double(f, s[i].init.a);
		fprintf(f, ", ");
		c_double(f, s[i].init.b);
		fprintf(f, "}},\n");
	}
	fprintf(f, "};\n\n");
}

static void write_infos(FILE *f, const char *p, const char *var, const IrSlot *s, int n)
{
	if (!n)
		return;
	fprintf(f, "static const %s_tensor %s[] = {\n", p, var);
	for (int i = 0; i < n; i++) {
		write_name_shape(f, &s[i]);
		fprintf(f, "},\n");
	}
	fprintf(f, "};\n\n");
}

static void write_source(const Aot *a, FILE *f, const char *src)
{
	const Compiler *c = a->c;
	const IrModule *m = &c->mod;
	const char *p = a->name, *P = a->upper;
	fprintf(f, "/* The tables of model %s (%s) and the API of lib%s.so over runtime/model.c.\n"
		" * Generated by nmlc %s; do not edit. */\n", lower_model_name(&c->lower), src, p, NML_VERSION);
	fprintf(f, "#include <math.h>\n#include <stddef.h>\n\n#include \"nmlrt.h\"\n#include \"%s.h\"\n\n", p);
	fprintf(f, "#define API __attribute__((visibility(\"default\")))\n\n");
	fprintf(f, "/* The kernels, in the object file LLVM wrote (hidden symbols). */\n"
		"void nml_step(NmlArgs *a);\nvoid nml_eval(NmlArgs *a);\nvoid nml_predict(NmlArgs *a);\n\n");
	const IrBlock *params = ir_block(m, NML_B_PARAMS), *states = ir_block(m, NML_B_STATE);
	for (int b = 0; b < NML_NBLOCKS; b++) /* every block the model keeps: "params_slots", ... */
		if (nml_block_kind((NmlBlock)b) == NML_BK_MODEL) {
			char var[64];
			snprintf(var, sizeof var, "%s_slots", nml_block_name((NmlBlock)b));
			write_slots(f, var, m->blocks[b].slot, m->blocks[b].n);
		}
	write_infos(f, p, "param_info", params->slot, params->n);
	write_infos(f, p, "state_info", states->slot, states->n);
	if (m->nhparams) {
		fprintf(f, "static const char *const hparam_names[] = {");
		for (int i = 0; i < m->nhparams; i++) {
			fprintf(f, i ? ", " : "");
			c_string(f, m->hparams[i].name);
		}
		fprintf(f, "};\nstatic const double hparam_defaults[] = {");
		for (int i = 0; i < m->nhparams; i++) {
			fprintf(f, i ? ", " : "");
			c_double(f, m->hparams[i].value);
		}
		fprintf(f, "};\n\n");
	}
	fprintf(f,
		"static const NmlModelDesc desc = {\n"
		"\t.abi = %s_ABI_VERSION,\n"
		"\t.step = nml_step, .eval = nml_eval, .predict = nml_predict,\n"
		"\t.work = %zu,\n"
		"\t.batch = %s_BATCH, .xdim = %s_X_DIM, .ydim = %s_Y_DIM, .classes = %s_CLASSES, .out_dim = %s_OUT_DIM,\n"
		"\t.hparam_names = %s, .hparam_defaults = %s, .nhparams = %s_NUM_HPARAMS,\n"
		"\t.block = {\n",
		P, a->work, P, P, P, P, P, m->nhparams ? "hparam_names" : "NULL", m->nhparams ? "hparam_defaults" : "NULL", P);
	for (int b = 0; b < NML_NBLOCKS; b++) {
		const IrBlock *t = &m->blocks[b];
		if (nml_block_kind((NmlBlock)b) == NML_BK_MODEL && t->n)
			fprintf(f, "\t\t[%d] = {%s_slots, %d, %zu}, /* %s */\n", b, nml_block_name((NmlBlock)b), t->n,
				t->size, nml_block_name((NmlBlock)b));
	}
	fprintf(f, "\t},\n};\n\n");
	fprintf(f,
		"API %s_model *%s_create(uint64_t seed) { return (%s_model *)nml_model_create(&desc, seed); }\n"
		"API void %s_free(%s_model *m) { nml_model_free((NmlModel *)m); }\n"
		"API const char *%s_error(const %s_model *m) { return nml_model_error((const NmlModel *)m); }\n\n",
		p, p, p, p, p, p, p);
	fprintf(f,
		"API int %s_train_step(%s_model *m, const float *x, const float *y, int64_t n, double *loss)\n"
		"{\n\treturn nml_model_train_step((NmlModel *)m, x, y, n, loss);\n}\n\n"
		"API int %s_evaluate(%s_model *m, const float *x, const float *y, int64_t n, double *loss, float *pred)\n"
		"{\n\treturn nml_model_evaluate((NmlModel *)m, x, y, n, loss, pred);\n}\n\n"
		"API int %s_predict(%s_model *m, const float *x, int64_t n, float *pred)\n"
		"{\n\treturn nml_model_predict((NmlModel *)m, x, n, pred);\n}\n\n", p, p, p, p, p, p);
	fprintf(f,
		"API int %s_save(%s_model *m, const char *path) { return nml_model_save((NmlModel *)m, path); }\n"
		"API int %s_load(%s_model *m, const char *path) { return nml_model_load((NmlModel *)m, path); }\n"
		"API int %s_load_params(%s_model *m, const char *path)\n"
		"{\n\treturn nml_model_load_params((NmlModel *)m, path);\n}\n\n", p, p, p, p, p, p);
	fprintf(f,
		"API int %s_get_hparam(%s_model *m, const char *name, double *value)\n"
		"{\n\treturn nml_model_get_hparam((NmlModel *)m, name, value);\n}\n\n"
		"API int %s_set_hparam(%s_model *m, const char *name, double value)\n"
		"{\n\treturn nml_model_set_hparam((NmlModel *)m, name, value);\n}\n\n"
		"API const char *%s_hparam_name(int i) { return i >= 0 && i < %s_NUM_HPARAMS ? desc.hparam_names[i] : NULL; }\n"
		"API int64_t %s_get_step(const %s_model *m) { return nml_model_get_step((const NmlModel *)m); }\n"
		"API int %s_set_step(%s_model *m, int64_t step) { return nml_model_set_step((NmlModel *)m, step); }\n\n",
		p, p, p, p, p, P, p, p, p, p);
	fprintf(f,
		"API float *%s_param_data(%s_model *m, int i) { return nml_model_param((NmlModel *)m, i); }\n"
		"API float *%s_state_data(%s_model *m, int i) { return nml_model_state((NmlModel *)m, i); }\n", p, p,
		p, p);
	const char *kinds[2] = {"param", "state"}, *counts[2] = {"PARAMS", "STATES"};
	for (int k = 0; k < 2; k++) {
		fprintf(f, "API const %s_tensor *%s_%s_info(int i)\n{\n", p, p, kinds[k]);
		if (k ? states->n : params->n)
			fprintf(f, "\treturn i >= 0 && i < %s_NUM_%s ? &%s_info[i] : NULL;\n}\n", P, counts[k], kinds[k]);
		else
			fprintf(f, "\t(void)i;\n\treturn NULL;\n}\n");
	}
}

/* ---- files ---- */

static int write_file(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return aot_error("cannot write %s: %s", path, strerror(errno));
	int bad = fwrite(text, 1, len, f) != len;
	if (fclose(f) || bad)
		return aot_error("cannot write %s: %s", path, strerror(errno));
	return 0;
}

/* A fresh name beside path (path.tmp.XXXXXX, created empty, mode as the umask allows): the file
 * is renamed over path at the end, so it must be in the same directory. */
static int temp_beside(const char *path, mode_t mode, char *out, size_t len)
{
	if (snprintf(out, len, "%s.tmp.XXXXXX", path) >= (int)len)
		return aot_error("output path too long: '%s'", path);
	int fd = mkstemp(out);
	if (fd < 0) {
		int e = errno;
		out[0] = 0;
		return aot_error("cannot write '%s': %s", path, strerror(e));
	}
	mode_t mask = umask(0);
	umask(mask);
	fchmod(fd, mode & ~mask);
	close(fd);
	return 0;
}

/* Runs argv (argv[0] found on PATH); 0 if it exits 0. Its output goes to ours. */
static int run_command(char **argv)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		return aot_error("cannot run %s: %s", argv[0], strerror(errno));
	if (pid == 0) {
		execvp(argv[0], argv);
		fprintf(stderr, "nmlc: error: cannot run the C compiler '%s': %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return aot_error("waiting for %s: %s", argv[0], strerror(errno));
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		return 1; /* the child said why */
	if (WIFEXITED(status))
		return aot_error("linking the library failed: %s exited with status %d", argv[0], WEXITSTATUS(status));
	return aot_error("linking the library failed: %s was killed by signal %d", argv[0], WTERMSIG(status));
}

/* cc -shared: the generated C, the kernels and the runtime archive, whose symbols stay inside the
 * library (--exclude-libs) so that only the API is exported. $CC may hold several words. */
static int link_library(Aot *a, const char *src, const char *obj)
{
	const char *cc_env = getenv("CC");
	char *words = strdup(cc_env && *cc_env ? cc_env : "cc");
	char *argv[AOT_ARGS + 32], soname[PATH_MAX + 16];
	int n = 0;
	if (!words)
		die("out of memory");
	for (char *w = strtok(words, " \t"); w && n < AOT_ARGS; w = strtok(NULL, " \t"))
		argv[n++] = w;
	if (!n) {
		free(words);
		return aot_error("$CC is blank");
	}
	const char *base = strrchr(a->o->output, '/');
	snprintf(soname, sizeof soname, "-Wl,-soname,%s", base ? base + 1 : a->o->output);
	char *rest[] = {"-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-I", a->tmpdir, "-I", a->inc, "-o",
			a->so_tmp, (char *)src, (char *)obj, a->lib, "-Wl,--exclude-libs,ALL", soname, "-lopenblas",
			"-lcjson", "-lz", "-lm", NULL};
	for (int i = 0; rest[i]; i++)
		argv[n++] = rest[i];
	argv[n] = NULL;
	if (a->o->verbose) {
		for (int i = 0; i < n; i++)
			fprintf(stderr, "%s%s", i ? " " : "", argv[i]);
		fputc('\n', stderr);
	}
	int rc = run_command(argv);
	free(words);
	return rc;
}

static void cleanup(Aot *a, const char *const *scratch, int n)
{
	for (int i = 0; i < n; i++)
		unlink(scratch[i]);
	if (a->tmpdir[0])
		rmdir(a->tmpdir);
	if (a->so_tmp[0])
		unlink(a->so_tmp);
	if (a->h_tmp[0])
		unlink(a->h_tmp);
}

int aot_build(Compiler *c, const AotOptions *o)
{
	double t0 = drv_now_ms();
	Aot a = {.c = c, .o = o};
	LLVMTargetMachineRef tm = NULL;
	if (aot_names(&a) || find_runtime(&a) || !(tm = target_machine(&a)))
		return 1;
	const char *tmp = getenv("TMPDIR");
	snprintf(a.tmpdir, sizeof a.tmpdir, "%s/nmlc-build.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(a.tmpdir)) {
		int e = errno;
		LLVMDisposeTargetMachine(tm);
		return aot_error("cannot create a temporary directory: %s", strerror(e));
	}
	char obj[PATH_MAX + 16], src[PATH_MAX + 16], hdr[PATH_MAX + AOT_NAME + 8];
	snprintf(obj, sizeof obj, "%s/kernels.o", a.tmpdir);
	snprintf(src, sizeof src, "%s/model.c", a.tmpdir);
	snprintf(hdr, sizeof hdr, "%s/%s.h", a.tmpdir, a.name);
	const char *scratch[] = {obj, src, hdr};

	char *htext = NULL, *ctext = NULL;
	size_t hlen = 0, clen = 0;
	int rc = temp_beside(o->output, 0777, a.so_tmp, sizeof a.so_tmp)
		|| temp_beside(a.header, 0666, a.h_tmp, sizeof a.h_tmp)
		|| emit_kernels(&a, tm, obj);
	LLVMDisposeTargetMachine(tm);
	if (!rc) {
		FILE *hf = open_memstream(&htext, &hlen), *cf = open_memstream(&ctext, &clen);
		if (!hf || !cf)
			die("out of memory");
		char path[PATH_MAX];
		comment_safe(c->user_items ? c->user_items->loc.file : "?", path, sizeof path);
		write_header(&a, hf, path);
		write_source(&a, cf, path);
		fclose(hf);
		fclose(cf);
		rc = write_file(hdr, htext, hlen) || write_file(src, ctext, clen) || link_library(&a, src, obj)
			|| write_file(a.h_tmp, htext, hlen);
	}
	if (!rc && rename(a.h_tmp, a.header))
		rc = aot_error("cannot write %s: %s", a.header, strerror(errno));
	if (!rc)
		a.h_tmp[0] = 0;
	if (!rc && rename(a.so_tmp, o->output))
		rc = aot_error("cannot write %s: %s", o->output, strerror(errno));
	if (!rc)
		a.so_tmp[0] = 0;
	cleanup(&a, scratch, 3);
	free(htext);
	free(ctext);
	if (!rc && !o->quiet)
		printf("built      %s and %s (prefix %s_, batch %lld, cpu %s) in %.0f ms\n", o->output, a.header, a.name,
		       (long long)c->cfg.batch, a.cpu, drv_now_ms() - t0);
	return rc;
}

/* jit.c: ORC LLJIT for the host CPU. */
#include "jit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>

#include "codegen.h"
#include "config.h"
#include <llvm/Config/llvm-config.h>
#include "diag.h"
#include "nmlrt.h"

struct Jit {
	LLVMOrcLLJITRef lljit;
	LLVMOrcJITDylibRef main;
};

static char *take_error(LLVMErrorRef e)
{
	char *m = LLVMGetErrorMessage(e);
	char *s = strdup(m);
	LLVMDisposeErrorMessage(m);
	if (!s)
		die("out of memory");
	return s;
}

/* BLAS, the runtime's LAPACK calls and its thread pool are bound by address: the process-symbol
 * search would miss them when the executable was linked with --as-needed and nothing outside
 * generated code calls them. */
static LLVMErrorRef define_blas(Jit *j)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} syms[] = {
		{"cblas_sgemm", (void (*)(void))cblas_sgemm},
		{"cblas_dgemm", (void (*)(void))cblas_dgemm},
		{"nml_eigh_f32", (void (*)(void))nml_eigh_f32},
		{"nml_eigh_f64", (void (*)(void))nml_eigh_f64},
		{"openblas_get_num_threads", (void (*)(void))openblas_get_num_threads},
		{"openblas_set_num_threads", (void (*)(void))openblas_set_num_threads},
		{"nml_pool_for", (void (*)(void))nml_pool_for},
		{"nml_pool_rest", (void (*)(void))nml_pool_rest},
		{"nml_scratch", (void (*)(void))nml_scratch},
	};
	enum { NSYMS = sizeof syms / sizeof syms[0] };
	LLVMOrcCSymbolMapPair pairs[NSYMS];
	for (int i = 0; i < NSYMS; i++) {
		pairs[i].Name = LLVMOrcLLJITMangleAndIntern(j->lljit, syms[i].name);
		pairs[i].Sym = (LLVMJITEvaluatedSymbol){
			.Address = (LLVMOrcExecutorAddress)(uintptr_t)syms[i].fn,
			.Flags = {.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable},
		};
	}
	LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, NSYMS);
	LLVMErrorRef e = LLVMOrcJITDylibDefine(j->main, mu);
	if (e)
		LLVMOrcDisposeMaterializationUnit(mu);
	return e;
}

Jit *jit_create(char **err)
{
	LLVMTargetMachineRef tm = cg_host_machine(err);
	if (!tm)
		return NULL;
	Jit *j = calloc(1, sizeof *j);
	if (!j)
		die("out of memory");
	LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
	LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm));
	LLVMErrorRef e = LLVMOrcCreateLLJIT(&j->lljit, builder);
	if (e) {
		*err = take_error(e);
		free(j);
		return NULL;
	}
	j->main = LLVMOrcLLJITGetMainJITDylib(j->lljit);
	LLVMOrcDefinitionGeneratorRef gen;
	e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(j->lljit), NULL, NULL);
	if (!e) {
		LLVMOrcJITDylibAddGenerator(j->main, gen);
		e = define_blas(j);
	}
	if (e) {
		*err = take_error(e);
		jit_destroy(j);
		return NULL;
	}
	return j;
}

int jit_add_ir(Jit *j, LLVMModuleRef (*build)(LLVMContextRef ctx, void *user), void *user, char **ir,
	       char **err)
{
	LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
	LLVMModuleRef mod = build(LLVMOrcThreadSafeContextGetContext(tsc), user);
	if (!mod || cg_optimize(mod, err)) {
		if (!mod)
			*err = strdup("no module to add");
		else
			LLVMDisposeModule(mod);
		LLVMOrcDisposeThreadSafeContext(tsc);
		return -1;
	}
	if (ir) {
		char *text = cg_print(mod);
		*ir = strdup(text);
		LLVMDisposeMessage(text);
	}
	/* The module keeps the context alive; this reference is no longer needed. */
	LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc);
	LLVMOrcDisposeThreadSafeContext(tsc);
	LLVMErrorRef e = LLVMOrcLLJITAddLLVMIRModule(j->lljit, j->main, tsm);
	if (e) {
		*err = take_error(e);
		return -1;
	}
	return 0;
}

/* ---- the object cache ---- */

enum { CACHE_MAGIC_LEN = 8 };
static const char cache_magic[CACHE_MAGIC_LEN] = "NMLOBJ1";

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ c[i]) * 1099511628211ull;
	return h;
}

/* The cache directory, created if missing; NULL when off or unusable (then nothing is cached). */
static char *cache_dir(void)
{
	const char *env = getenv("NML_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	char path[4096];
	if (env && !strcmp(env, "off"))
		return NULL;
	if (env && *env)
		snprintf(path, sizeof path, "%s", env);
	else if (xdg && *xdg)
		snprintf(path, sizeof path, "%s/nml", xdg);
	else if (home && *home)
		snprintf(path, sizeof path, "%s/.cache/nml", home);
	else
		return NULL;
	for (char *p = path + 1; *p; p++) /* mkdir -p */
		if (*p == '/') {
			*p = 0;
			mkdir(path, 0777);
			*p = '/';
		}
	if (mkdir(path, 0777) < 0 && errno != EEXIST)
		return NULL;
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? strdup(path) : NULL;
}

/* An entry: the magic, the key (16 bytes), the object's size and checksum, the object. */
static LLVMMemoryBufferRef cache_read(const char *path, const uint64_t key[2])
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct stat st;
	char *data = NULL;
	LLVMMemoryBufferRef buf = NULL;
	uint64_t head[4];
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > (off_t)(CACHE_MAGIC_LEN + sizeof head)
	    && (data = malloc((size_t)st.st_size)) && read(fd, data, (size_t)st.st_size) == st.st_size) {
		memcpy(head, data + CACHE_MAGIC_LEN, sizeof head);
		size_t off = CACHE_MAGIC_LEN + sizeof head, n = (size_t)st.st_size - off;
		if (!memcmp(data, cache_magic, CACHE_MAGIC_LEN) && head[0] == key[0] && head[1] == key[1] && head[2] == n
		    && head[3] == fnv(data + off, n, 1469598103934665603ull))
			buf = LLVMCreateMemoryBufferWithMemoryRangeCopy(data + off, n, "nml-cached");
	}
	free(data);
	close(fd);
	return buf;
}

static void cache_write(const char *dir, const char *path, const uint64_t key[2], LLVMMemoryBufferRef obj)
{
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s/.tmp.%ld.%p", dir, (long)getpid(), (void *)obj);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	if (fd < 0)
		return;
	size_t n = LLVMGetBufferSize(obj);
	const char *p = LLVMGetBufferStart(obj);
	uint64_t head[4] = {key[0], key[1], n, fnv(p, n, 1469598103934665603ull)};
	int ok = write(fd, cache_magic, CACHE_MAGIC_LEN) == CACHE_MAGIC_LEN && write(fd, head, sizeof head) == sizeof head
		 && write(fd, p, n) == (ssize_t)n;
	ok &= close(fd) == 0;
	if (!ok || rename(tmp, path) < 0)
		unlink(tmp);
}

/* ---- compiling in parts, on threads ---- */

/* Larger modules than SPLIT_INSTS instructions (before optimization) are compiled in parts. */
enum { SPLIT_INSTS = 1000 };

int jit_parts_for(size_t insts)
{
	const char *env = getenv("NML_JIT_THREADS");
	if (env && *env) {
		long n = strtol(env, NULL, 10);
		return n < 1 ? 1 : n > JIT_MAX_PARTS ? JIT_MAX_PARTS : (int)n;
	}
	if (insts <= SPLIT_INSTS)
		return 1;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	return cpus < 2 ? 1 : cpus > JIT_MAX_PARTS ? JIT_MAX_PARTS : (int)cpus;
}

void jit_run_parts(void *(*fn)(void *), void *parts, size_t size, int n)
{
	pthread_t tid[JIT_MAX_PARTS];
	int started[JIT_MAX_PARTS] = {0};
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64u << 20); /* LLVM recurses over large functions */
	for (int p = 1; p < n; p++)
		started[p] = pthread_create(&tid[p], &attr, fn, (char *)parts + (size_t)p * size) == 0;
	pthread_attr_destroy(&attr);
	fn(parts);
	for (int p = 1; p < n; p++) {
		if (started[p])
			pthread_join(tid[p], NULL);
		else
			fn((char *)parts + (size_t)p * size);
	}
}

typedef struct Part {
	LLVMModuleRef (*build)(LLVMContextRef ctx, void *user);
	void *user;
	pthread_mutex_t *building; /* build is not assumed to be reentrant */
	const char *dir;           /* the cache, or NULL */
	int part, nparts;
	LLVMContextRef ctx;
	LLVMModuleRef mod; /* part 0's is built before the threads start */
	LLVMMemoryBufferRef obj;
	int hit;
	char *err;
} Part;

/* Part p's object: from the cache when an entry's key matches, else optimized and compiled (and
 * written to the cache). The key: the part's module as built, the host CPU and its features, and
 * the compiler's and LLVM's versions. */
static void *compile_part(void *arg)
{
	Part *p = arg;
	if (!p->mod) {
		p->ctx = LLVMContextCreate();
		pthread_mutex_lock(p->building);
		p->mod = p->build(p->ctx, p->user);
		pthread_mutex_unlock(p->building);
		if (!p->mod) {
			p->err = strdup("no module to add");
			return NULL;
		}
	}
	cg_keep_part(p->mod, p->part, p->nparts);
	char path[4200];
	uint64_t key[2] = {1469598103934665603ull, 0x84222325cbf29ce4ull};
	if (p->dir) {
		char *text = cg_print(p->mod), *cpu = LLVMGetHostCPUName(), *features = LLVMGetHostCPUFeatures();
		const char *parts[] = {text, cpu, features, NML_VERSION, LLVM_VERSION_STRING};
		for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
			for (int k = 0; k < 2; k++)
				key[k] = fnv(parts[i], strlen(parts[i]) + 1, key[k] ^ (uint64_t)k);
		LLVMDisposeMessage(text);
		LLVMDisposeMessage(cpu);
		LLVMDisposeMessage(features);
		snprintf(path, sizeof path, "%s/%016llx%016llx.o", p->dir, (unsigned long long)key[0],
			 (unsigned long long)key[1]);
		p->obj = cache_read(path, key);
		p->hit = p->obj != NULL;
	}
	if (!p->obj) {
		LLVMTargetMachineRef tm = cg_host_machine(&p->err);
		if (tm) {
			cg_emit_object(p->mod, tm, NULL, &p->obj, &p->err);
			LLVMDisposeTargetMachine(tm);
		}
		if (p->obj && p->dir)
			cache_write(p->dir, path, key, p->obj);
	}
	LLVMDisposeModule(p->mod);
	p->mod = NULL;
	return NULL;
}

int jit_add_cached(Jit *j, LLVMModuleRef (*build)(LLVMContextRef ctx, void *user), void *user, int *hit, char **err)
{
	pthread_mutex_t building = PTHREAD_MUTEX_INITIALIZER;
	Part part[JIT_MAX_PARTS] = {0};
	char *dir = cache_dir();
	part[0] = (Part){.build = build, .user = user, .building = &building, .dir = dir, .ctx = LLVMContextCreate()};
	part[0].mod = build(part[0].ctx, user);
	if (!part[0].mod) {
		*err = strdup("no module to add");
		LLVMContextDispose(part[0].ctx);
		free(dir);
		return -1;
	}
	int n = jit_parts_for(cg_module_insts(part[0].mod));
	for (int p = 0; p < n; p++) {
		if (p)
			part[p] = (Part){.build = build, .user = user, .building = &building, .dir = dir};
		part[p].part = p;
		part[p].nparts = n;
	}
	jit_run_parts(compile_part, part, sizeof *part, n);
	int rc = 0;
	*hit = 1;
	for (int p = 0; p < n; p++) {
		*hit &= part[p].hit;
		if (!rc && !part[p].obj) {
			*err = part[p].err ? part[p].err : strdup("code generation failed");
			part[p].err = NULL;
			rc = -1;
		}
		LLVMErrorRef e = NULL;
		if (!rc) {
			e = LLVMOrcLLJITAddObjectFile(j->lljit, j->main, part[p].obj);
			part[p].obj = NULL;
		} else if (part[p].obj) {
			LLVMDisposeMemoryBuffer(part[p].obj);
		}
		if (e) {
			*err = take_error(e);
			rc = -1;
		}
		free(part[p].err);
		LLVMContextDispose(part[p].ctx);
	}
	free(dir);
	return rc;
}

int jit_add(Jit *j, LLVMModuleRef (*build)(LLVMContextRef ctx, void *user), void *user, char **err)
{
	return jit_add_ir(j, build, user, NULL, err);
}

void *jit_lookup(Jit *j, const char *name, char **err)
{
	LLVMOrcExecutorAddress addr = 0;
	LLVMErrorRef e = LLVMOrcLLJITLookup(j->lljit, &addr, name);
	if (e) {
		*err = take_error(e);
		return NULL;
	}
	return (void *)(uintptr_t)addr;
}

void jit_destroy(Jit *j)
{
	if (!j)
		return;
	LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->lljit);
	if (e)
		LLVMConsumeError(e);
	free(j);
}

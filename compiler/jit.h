/* jit.h: ORC LLJIT for the host. Kernels built by codegen are optimized and compiled in process;
 * cblas_*, libm and libc resolve against the running process. */
#ifndef JIT_H
#define JIT_H

#include <stddef.h>

#include <llvm-c/Core.h>

typedef struct Jit Jit;

Jit *jit_create(char **err);
/* Builds a module via build(ctx, user) in a fresh thread-safe context, optimizes it with cg_optimize
 * and hands it to the JIT, which then owns it. 0, or -1 with *err malloc'd. */
int jit_add(Jit *j, LLVMModuleRef (*build)(LLVMContextRef ctx, void *user), void *user, char **err);
/* The same; *ir receives the optimized module as text (`nmlc show --llvm`), to free(). */
int jit_add_ir(Jit *j, LLVMModuleRef (*build)(LLVMContextRef ctx, void *user), void *user, char **ir,
	       char **err);
/* The same through an on-disk cache of object code: the module built by build (before any
 * optimization), the host CPU and its features, and the compiler's and LLVM's versions are the key;
 * a hit skips optimization and code generation. The cache is $NML_CACHE_DIR, else
 * $XDG_CACHE_HOME/nml, else ~/.cache/nml; NML_CACHE_DIR=off turns it off. Entries are written to a
 * temporary name and renamed (concurrent runs are safe) and carry a checksum (a damaged one is
 * compiled again and replaced). *hit says whether it was used. A large module is built once per
 * CPU and compiled in parts at the same time (cg_keep_part), each part an entry of the cache; build
 * is called from those threads, one at a time. */
int jit_add_cached(Jit *j, LLVMModuleRef (*build)(LLVMContextRef ctx, void *user), void *user, int *hit, char **err);
/* Compiling a large module in parts at the same time (cg_keep_part; jit_add_cached, nmlc build).
 * The number of parts for a module of insts instructions before optimization (cg_module_insts):
 * 1 up to 1,000, else one per online CPU, at most JIT_MAX_PARTS; NML_JIT_THREADS=N sets it. */
enum { JIT_MAX_PARTS = 8 };
int jit_parts_for(size_t insts);
/* fn on each of the n parts of an array of items of size bytes, and back when all are done: the
 * first on the calling thread, the others each on a thread of its own with a deep stack (LLVM
 * recurses over large functions), or on the calling thread if one cannot be started. */
void jit_run_parts(void *(*fn)(void *), void *parts, size_t size, int n);
/* The address of an exported symbol (compiling its module on first use); NULL with *err malloc'd. */
void *jit_lookup(Jit *j, const char *name, char **err);
void jit_destroy(Jit *j);

#endif

/* jit.h: ORC LLJIT for the host. Kernels built by codegen are optimized and compiled in process;
 * cblas_*, libm and libc resolve against the running process. */
#ifndef JIT_H
#define JIT_H

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
/* The address of an exported symbol (compiling its module on first use); NULL with *err malloc'd. */
void *jit_lookup(Jit *j, const char *name, char **err);
void jit_destroy(Jit *j);

#endif

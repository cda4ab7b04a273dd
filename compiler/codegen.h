/* codegen.h: lowering of IR functions to LLVM IR kernels, and their optimization for the host.
 *
 * Every kernel is `void name(NmlArgs *)` (runtime/nmlrt.h). Its ops are grouped into loop nests first
 * (fuse.h); values that leave their nest live in `work`, at offsets planned for max_batch rows. */
#ifndef CODEGEN_H
#define CODEGEN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "ir.h"

typedef enum { CG_F32, CG_F64 } CgType;

typedef struct CgKernel {
	const char *name;  /* exported symbol: void name(NmlArgs *) */
	const IrFunc *fn;
	size_t work_bytes; /* out: scratch bytes the kernel needs at max_batch rows */
	int unfused;       /* in: one loop nest per op, the baseline fusion is tested and measured against */
	int deterministic; /* in: every matrix product on one thread, so that no result depends on how
	                    * many there are (OpenBLAS's threads may sum in another order) */
	int pieces;        /* in: single products cut into tiles (codegen.c, product_tiles): 0 as the
	                    * machine's OpenBLAS gains; tests: 1 small tiles, 2 large tiles (the ones
	                    * --deterministic uses with packing kernels), -1 none */
} CgKernel;

/* Initializes LLVM's native target; idempotent. The other entry points call it. */
void cg_init(void);

/* Lower each kernel's IR function into one module created in ctx. */
LLVMModuleRef cg_module(LLVMContextRef ctx, const char *module_name, const IrModule *m, CgKernel *k, int nk,
			CgType type, int64_t max_batch);

/* The loop nests of f as cg_module would make them (`nmlc show --kernels`). */
void cg_dump_kernels(FILE *out, const IrModule *m, const IrFunc *f, CgType type, int64_t max_batch);

/* A target machine for the host CPU (PIC, aggressive codegen), for cg_optimize and for emitting objects.
 * NULL with *err malloc'd on failure; the caller disposes it with LLVMDisposeTargetMachine. */
LLVMTargetMachineRef cg_host_machine(char **err);
/* The same for an LLVM CPU name ("x86-64", "x86-64-v3", "skylake-avx512") and that CPU's features;
 * NULL or "host" is the host. LLVM warns about, and ignores, a name it does not know. */
LLVMTargetMachineRef cg_machine(const char *cpu, char **err);

/* Verify, then optimize for the host CPU (default<O3>). Sets the module's triple and data layout.
 * 0, or -1 with *err malloc'd. */
int cg_optimize(LLVMModuleRef mod, char **err);
/* The same for the target machine tm (nmlc build --cpu), which stays the caller's. */
int cg_optimize_for(LLVMModuleRef mod, LLVMTargetMachineRef tm, char **err);
/* cg_optimize_for, then object code for tm: into the file path, or when path is NULL into *obj
 * (NULL on failure). A target machine serves one thread at a time. 0, or -1 with *err malloc'd. */
int cg_emit_object(LLVMModuleRef mod, LLVMTargetMachineRef tm, const char *path, LLVMMemoryBufferRef *obj,
		   char **err);

/* Splitting a module so that its parts are optimized and compiled at the same time (jit.c, aot.c).
 * Every part is a copy of the whole module; cg_keep_part(mod, part, nparts) leaves in copy `part`
 * the bodies of its share of the functions and turns the others into declarations, which the
 * linker resolves against the other parts. Shares are balanced by instruction count, largest
 * first, and depend on the module alone, so copies built alike are split alike. A function's code
 * does not depend on the split: every defined function becomes external in every part (none is
 * inlined across functions: the outlined ones are noinline or called through nml_pool_for). */
size_t cg_module_insts(LLVMModuleRef mod);
void cg_keep_part(LLVMModuleRef mod, int part, int nparts);

/* The module as text (`nmlc show --llvm`); the caller frees it with LLVMDisposeMessage. */
char *cg_print(LLVMModuleRef mod);

#endif

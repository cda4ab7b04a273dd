/* jit.c: ORC LLJIT for the host CPU. */
#include "jit.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>

#include "codegen.h"
#include "diag.h"

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

/* BLAS is bound by address: the process-symbol search would miss it when the executable was linked
 * with --as-needed and nothing outside generated code calls it. */
static LLVMErrorRef define_blas(Jit *j)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} syms[] = {
		{"cblas_sgemm", (void (*)(void))cblas_sgemm},
		{"cblas_dgemm", (void (*)(void))cblas_dgemm},
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

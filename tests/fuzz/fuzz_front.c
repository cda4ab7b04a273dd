/* fuzz_front.c: the front end's fuzz target: one NML source through what `nmlc check` runs
 * (compile.c). A crash, a sanitizer report, a leak, an internal error (die) or a hang is a finding. */
#include "driver.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Compiler c;
	fuzz_compile(&c, data, size);
	drv_free(&c);
	return 0;
}

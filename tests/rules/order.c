/* Prints the order in which nmlc run visits n training rows in epoch e: nml_epoch_order. */
#include <stdio.h>
#include <stdlib.h>

#include "nmlrt.h"

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	uint64_t seed = strtoull(argv[1], NULL, 10);
	int epoch = atoi(argv[2]);
	int64_t n = atoll(argv[3]), *idx = malloc((size_t)n * sizeof *idx);
	nml_epoch_order(seed, epoch, idx, n);
	for (int64_t i = 0; i < n; i++)
		printf("%lld\n", (long long)idx[i]);
	free(idx);
	return 0;
}

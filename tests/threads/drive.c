/* drive.c: trains the library nmlc build made of threads.nml (prefix `model`) for a few steps on
 * fixed pseudo-random images and saves it: threads.py runs it under different thread counts and
 * compares the checkpoints.
 *
 *   drive OUT.safetensors */
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: drive OUT.safetensors\n");
		return 2;
	}
	model_model *m = model_create(MODEL_SEED);
	if (!m)
		return 1;
	static float x[MODEL_BATCH * MODEL_X_DIM], y[MODEL_BATCH];
	unsigned r = 12345;
	for (int step = 0; step < 6; step++) {
		for (int i = 0; i < MODEL_BATCH * MODEL_X_DIM; i++) {
			r = r * 1103515245u + 12345u;
			x[i] = (float)(r >> 8 & 0xffff) / 65536.0f;
		}
		for (int i = 0; i < MODEL_BATCH; i++)
			y[i] = (float)((i + step) % MODEL_CLASSES);
		double loss;
		/* the last step on fewer rows: a piece boundary at another place */
		if (model_train_step(m, x, y, step == 5 ? MODEL_BATCH - 7 : MODEL_BATCH, &loss)) {
			fprintf(stderr, "drive: %s\n", model_error(m));
			return 1;
		}
		printf("step %d loss %.9g\n", step, loss);
	}
	int rc = model_save(m, argv[1]);
	if (rc)
		fprintf(stderr, "drive: %s\n", model_error(m));
	model_free(m);
	return rc ? 1 : 0;
}

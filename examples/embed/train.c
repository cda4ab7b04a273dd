/* train.c: trains examples/fashion_mlp.nml's model for one epoch from C, through the library that
 * `nmlc build` makes of it (libfashion.so and fashion.h; see README.md), then reports the test loss
 * and accuracy and saves a checkpoint that `nmlc run --init` also reads.
 *
 *   train [DATA_DIR [LIMIT]]   DATA_DIR holds Fashion-MNIST's gzip'd IDX files
 *                              (default /usr/share/datasets/fashion-mnist); LIMIT: train on the
 *                              first LIMIT images only */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zlib.h>

#include "fashion.h"

/* ---- a tiny IDX reader: big-endian header, then bytes; gzip'd or plain (zlib reads both) ---- */

static uint32_t be32(const unsigned char *b) { return (uint32_t)b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]; }

/* The file's bytes after its header, and the count of items (and bytes per item) it holds. */
static unsigned char *read_idx(const char *dir, const char *name, int rank, uint32_t *count, uint32_t *item)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	gzFile f = gzopen(path, "rb");
	unsigned char head[16];
	if (!f || gzread(f, head, 4 + 4 * rank) != 4 + 4 * rank || head[2] != 0x08 || head[3] != rank) {
		fprintf(stderr, "train: cannot read %s as an IDX file of unsigned bytes\n", path);
		exit(1);
	}
	*count = be32(head + 4);
	*item = rank == 3 ? be32(head + 8) * be32(head + 12) : 1;
	size_t size = (size_t)*count * *item;
	unsigned char *data = malloc(size);
	if (!data || gzread(f, data, (unsigned)size) != (int)size) {
		fprintf(stderr, "train: %s is truncated\n", path);
		exit(1);
	}
	gzclose(f);
	return data;
}

/* x [n, 784] in [0, 1] as nmlc scales it; y [n] class indices as floats. */
static int64_t load(const char *dir, const char *images, const char *labels, float **x, float **y)
{
	uint32_t n, m, pixels, one;
	unsigned char *img = read_idx(dir, images, 3, &n, &pixels), *lab = read_idx(dir, labels, 1, &m, &one);
	if (n != m || pixels != FASHION_X_DIM) {
		fprintf(stderr, "train: %s and %s do not match the model (%u images of %u pixels, %u labels)\n", images,
			labels, n, pixels, m);
		exit(1);
	}
	*x = malloc((size_t)n * pixels * sizeof **x);
	*y = malloc((size_t)n * sizeof **y);
	for (size_t i = 0; i < (size_t)n * pixels; i++)
		(*x)[i] = img[i] / 255.0f;
	for (uint32_t i = 0; i < n; i++)
		(*y)[i] = lab[i];
	free(img);
	free(lab);
	return n;
}

static void fail(fashion_model *m, const char *what)
{
	fprintf(stderr, "train: %s: %s\n", what, fashion_error(m));
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* splitmix64, for the shuffle: any good generator does. */
static uint64_t next(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15u);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
	return z ^ (z >> 31);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/usr/share/datasets/fashion-mnist";
	float *x, *y, *tx, *ty;
	int64_t n = load(dir, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", &x, &y);
	int64_t nt = load(dir, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", &tx, &ty);
	if (argc > 2 && atoll(argv[2]) > 0 && atoll(argv[2]) < n)
		n = atoll(argv[2]);

	fashion_model *m = fashion_create(FASHION_SEED);
	if (!m) {
		fprintf(stderr, "train: out of memory\n");
		return 1;
	}
	/* The example's learning rate decays linearly over T steps: make T this run's length. */
	int64_t steps = (n + FASHION_BATCH - 1) / FASHION_BATCH;
	if (fashion_set_hparam(m, "T", (double)steps))
		fail(m, "set T");

	/* One epoch in a shuffled order, a batch at a time. */
	int64_t *order = malloc((size_t)n * sizeof *order);
	uint64_t rng = FASHION_SEED;
	for (int64_t i = 0; i < n; i++)
		order[i] = i;
	for (int64_t i = n - 1; i > 0; i--) {
		int64_t j = (int64_t)(next(&rng) % (uint64_t)(i + 1)), t = order[i];
		order[i] = order[j], order[j] = t;
	}
	float *bx = malloc(FASHION_BATCH * FASHION_X_DIM * sizeof *bx), *by = malloc(FASHION_BATCH * sizeof *by);
	double sum = 0, window = 0, t0 = now();
	for (int64_t start = 0, s = 1; start < n; start += FASHION_BATCH, s++) {
		int64_t rows = n - start < FASHION_BATCH ? n - start : FASHION_BATCH;
		for (int64_t i = 0; i < rows; i++) {
			memcpy(bx + i * FASHION_X_DIM, x + order[start + i] * FASHION_X_DIM, FASHION_X_DIM * sizeof *bx);
			by[i] = y[order[start + i]];
		}
		double loss;
		if (fashion_train_step(m, bx, by, rows, &loss))
			fail(m, "train_step");
		sum += loss * rows;
		window += loss;
		if (s % 100 == 0 || start + rows == n) {
			printf("step %4lld/%lld  loss %.4f\n", (long long)s, (long long)steps, window / (s % 100 ? s % 100 : 100));
			window = 0;
		}
	}
	double seconds = now() - t0;

	/* The test set in one call (evaluate batches it), and accuracy from the outputs. */
	float *pred = malloc((size_t)nt * FASHION_OUT_DIM * sizeof *pred);
	double test_loss;
	if (fashion_evaluate(m, tx, ty, nt, &test_loss, pred))
		fail(m, "evaluate");
	int64_t right = 0;
	for (int64_t i = 0; i < nt; i++) {
		int best = 0;
		for (int c = 1; c < FASHION_OUT_DIM; c++)
			if (pred[i * FASHION_OUT_DIM + c] > pred[i * FASHION_OUT_DIM + best])
				best = c;
		right += best == (int)ty[i];
	}
	printf("epoch 1  train_loss %.4f  test_loss %.4f  test_acc %.4f  %.0f samples/s\n", sum / n, test_loss,
	       (double)right / nt, n / seconds);

	if (fashion_save(m, "fashion.safetensors"))
		fail(m, "save");
	printf("saved fashion.safetensors (step %lld)\n", (long long)fashion_get_step(m));
	fashion_free(m);
	free(order);
	free(bx);
	free(by);
	free(pred);
	free(x);
	free(y);
	free(tx);
	free(ty);
	return 0;
}

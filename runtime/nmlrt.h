/* nmlrt.h: the NML runtime, what generated kernels and the driver link against.
 *
 * Every generated kernel has one argument, a pointer to NmlArgs: one pointer per storage block and
 * the scalars of the call. The block table below is the ABI that a JIT-compiled module and an
 * ahead-of-time object share, and the compiler and the runtime read it from here. All tensor data
 * of one kernel has one element type (float for training, double for gradient checks);
 * hyperparameters and t are always double. */
#ifndef NMLRT_H
#define NMLRT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Changes whenever NmlArgs, the block table or NmlModelDesc changes: a library made by nmlc build
 * records the version it was generated for, and the runtime refuses another. */
#define NML_ABI_VERSION 2

/* The most dimensions a tensor has, in the compiler and in checkpoints. */
#define NML_MAXRANK 6

/* The storage blocks, in ABI order: ROW(NAME, "name", LAYOUT, KIND).
 *   LAYOUT  the block whose tensor table lays this one out (the gradients have the parameters')
 *   KIND    MODEL: the model's persistent state, initialized from the seed, saved in checkpoints;
 *           STEP: lives for one kernel call; BATCH: one tensor of the batch's rows (x, y, outputs).
 * A new kind of model state (say, a layer's running statistics) is one row; everything that
 * allocates, initializes, saves, loads or addresses blocks iterates over this table. */
#define NML_BLOCKS(ROW)                                  \
	ROW(PARAMS,  "params",  PARAMS,  MODEL) /* parameters */                          \
	ROW(GRADS,   "grads",   PARAMS,  STEP)  /* gradients, the parameters' layout */    \
	ROW(STATE,   "state",   STATE,   MODEL) /* optimizer state */                     \
	ROW(BUFFERS, "buffers", BUFFERS, MODEL) /* layer state without gradients */       \
	ROW(X,       "x",       X,       BATCH) /* inputs [n, ...] */                     \
	ROW(Y,       "y",       Y,       BATCH) /* targets: [n] class indices as floats, or [n, ...] */ \
	ROW(LOSS,    "loss",    LOSS,    BATCH) /* out: mean loss of the batch, a scalar */ \
	ROW(PRED,    "pred",    PRED,    BATCH) /* out: model output [n, out_dim] */      \
	ROW(WORK,    "work",    WORK,    STEP)  /* scratch of the size the compiler reports */

typedef enum {
#define NML_X(name, str, layout, kind) NML_B_##name,
	NML_BLOCKS(NML_X)
#undef NML_X
	NML_NBLOCKS
} NmlBlock;

typedef enum { NML_BK_MODEL, NML_BK_STEP, NML_BK_BATCH } NmlBlockKind;

/* The block table as data: name, layout and kind of block b. */
const char *nml_block_name(NmlBlock b);
NmlBlock nml_block_layout(NmlBlock b);
NmlBlockKind nml_block_kind(NmlBlock b);

typedef struct NmlArgs {
	void *block[NML_NBLOCKS]; /* indexed by NmlBlock */
	const double *hparams;    /* runtime hyperparameters, one f64 scalar each, whatever the kernel's type */
	int64_t n;                /* rows in this batch, at most the batch size compiled for */
	double t;                 /* optimizer step, 1-based */
	uint64_t seed;            /* the run's seed, for random numbers inside a step */
} NmlArgs;

typedef void (*NmlKernel)(NmlArgs *args);

/* ---- random numbers (rng.c): Philox-4x32-10, so a stream depends on (seed, stream) only ---- */
typedef struct NmlRng {
	uint32_t key[2];
	uint32_t ctr[4];
	uint32_t buf[4];
	int avail; /* unread words left in buf */
} NmlRng;

void nml_rng_init(NmlRng *r, uint64_t seed, uint64_t stream);
uint32_t nml_rng_u32(NmlRng *r);
double nml_rng_uniform(NmlRng *r); /* [0, 1) with 53 random bits */
double nml_rng_normal(NmlRng *r);  /* standard normal */
void nml_rng_shuffle(NmlRng *r, int64_t *idx, int64_t n);
/* The order in which epoch e (from 1) visits the n training rows; e < 0: the rows in order. */
void nml_epoch_order(uint64_t seed, int epoch, int64_t *idx, int64_t n);
/* The bare block function: ten rounds over ctr under key (exposed for known-answer tests). */
void nml_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Random numbers inside a training step (dropout, noise in an update rule): element `index` of the
 * random tensor `stream` of the step's program at step t, uniform in [0, 1) with 24 random bits (so
 * the same number in float and double). Philox on counter (index, t, stream with the top bit set)
 * under the seed: kernels compute exactly this, so results depend on the seed only. */
double nml_step_uniform(uint64_t seed, double t, uint32_t stream, int64_t index);

/* Initial values of a parameter or state tensor, as its slot's initializer says. */
typedef enum { NML_INIT_CONST, NML_INIT_NORMAL, NML_INIT_UNIFORM } NmlInitKind;
typedef struct NmlInit {
	NmlInitKind kind;
	double a, b; /* CONST: a; NORMAL: mean a, std b; UNIFORM: [a, b) */
} NmlInit;
/* n values of tensor `index` of a MODEL block, each tensor from its own stream of seed (numbered by
 * the block's place among the MODEL blocks: parameters 0, optimizer state 1, buffers 2), so adding
 * a tensor does not change the others' values. Everything that initializes a model goes through
 * here: the same seed gives the same weights. */
void nml_init_values(NmlInit init, uint64_t seed, NmlBlock block, uint64_t index, double *out, int64_t n);

/* ---- data sets (data.c) ---- */
typedef struct NmlData {
	int64_t n;       /* samples */
	int64_t xdim;    /* features per sample, flattened */
	int xrank;       /* the shape of one sample as the file has it: NPY's trailing dimensions, */
	int64_t xshape[NML_MAXRANK]; /* else [xdim] (xrank 0 is read as [xdim] too) */
	int64_t ydim;    /* 0: y holds one class index per sample; else targets per sample */
	int64_t classes; /* number of classes (max label + 1) when ydim == 0 */
	float *x;        /* [n, xdim] */
	float *y;        /* [n] or [n, ydim] */
} NmlData;

/* The readers take regular files only (a directory, FIFO or device is an error at once, so is a NULL
 * path), and check every size for overflow. */
/* gzip'd (or plain) IDX image and label files, MNIST layout; pixels scaled to [0, 1]. */
int nml_data_load_idx(NmlData *d, const char *images, const char *labels, char *err, size_t errlen);
/* NumPy .npy arrays: x of any float/int dtype with n rows; y integer (class indices) or float. */
int nml_data_load_npy(NmlData *d, const char *x_npy, const char *y_npy, char *err, size_t errlen);
/* Comma-separated numbers, one sample a line (a non-numeric first line is a header); column label
 * (negative: from the end) is the target, a class index, or with regression a value. */
int nml_data_load_csv(NmlData *d, const char *path, int label, int regression, char *err, size_t errlen);
/* A data set drawn from the seed (no file): n rows of dim features, and a target of a random linear
 * teacher plus noise, a class index (classes >= 2: the teacher's highest of `classes` scores) or a
 * value (classes 0). The built-in test problems train on it (stdlib/problems.nml). */
int nml_data_synthetic(NmlData *d, int64_t n, int64_t dim, int classes, double noise, uint64_t seed, char *err,
		       size_t errlen);
/* Move the last `count` samples of d into held (a held-out split). */
int nml_data_split(NmlData *d, NmlData *held, int64_t count, char *err, size_t errlen);
void nml_data_free(NmlData *d);
/* Copy rows idx[0..n) into xb [n, xdim] and yb [n] or [n, ydim], a share of the rows on each of the
 * pool's threads (as many as OpenBLAS's setting) when there are enough of them. */
void nml_data_gather(const NmlData *d, const int64_t *idx, int64_t n, float *xb, float *yb);
/* Hint that rows idx[0..n) are gathered next (nothing is read or written). */
void nml_data_prefetch(const NmlData *d, const int64_t *idx, int64_t n);

/* ---- checkpoints (ckpt.c): safetensors, F32, written atomically ---- */
typedef struct NmlTensorRef {
	const char *name;
	int rank;
	int64_t shape[NML_MAXRANK];
	float *data;
} NmlTensorRef;

/* Writes path.tmp.PID.XXXXXX beside the file path leads to (symbolic links are followed and kept),
 * syncs it and renames it over that file: on failure an existing checkpoint is left as it was. A
 * path that is a directory, device, FIFO or socket is refused; temporary files of earlier writers
 * that were killed are removed. The file's mode follows the umask, which is never changed. The
 * header carries "__metadata__": {"format": "nml"}. */
int nml_ckpt_save(const char *path, const NmlTensorRef *t, int count, char *err, size_t errlen);
/* 0 if a checkpoint can be saved at path (as nml_ckpt_save would resolve it: a regular file or a new
 * name, in a directory where a file can be created), else -1 with err saying why. Nothing is left
 * behind. For checking a path before hours of training rather than after. */
int nml_ckpt_check_save(const char *path, char *err, size_t errlen);
/* A string pair of the checkpoint's __metadata__ ("format": "nml" is always written). */
typedef struct NmlMeta {
	const char *key, *value;
} NmlMeta;
int nml_ckpt_save_meta(const char *path, const NmlTensorRef *t, int count, const NmlMeta *meta, int nmeta,
		       char *err, size_t errlen);
/* The metadata value of key into value: 0 if present, 1 if absent, -1 (err set) if unreadable, if
 * the value is not a string or if it is longer than len - 1 characters. Regular files only. */
int nml_ckpt_meta(const char *path, const char *key, char *value, size_t len, char *err, size_t errlen);
/* Fill every tensor of t from the file; a missing or mis-shaped tensor is an error naming it. All
 * tensors are checked before any is written, so a failed load leaves them unchanged. Tensors in the
 * file that t does not name are ignored. */
int nml_ckpt_load(const char *path, const NmlTensorRef *t, int count, char *err, size_t errlen);

/* ---- compiled models (model.c): the one owner of a compiled model's blocks ----
 * nmlc run, nmlc repl and the libraries nmlc build makes all run a model through these functions.
 * A library's generated C holds the model's tables (NmlModelDesc) and wraps them under its prefix
 * (NAME_create, NAME_train_step, ...; NAME.h). */
typedef struct NmlSlotDesc {
	const char *name;  /* "l1.w"; optimizer state: "l1.w.m" */
	int rank;
	int64_t shape[NML_MAXRANK];
	size_t offset;     /* elements, within the block */
	NmlInit init;
} NmlSlotDesc;

/* The tensors of one block: for MODEL blocks, what is initialized and saved. */
typedef struct NmlBlockDesc {
	const NmlSlotDesc *slots;
	int nslots;
	size_t size;       /* elements */
} NmlBlockDesc;

typedef struct NmlModelDesc {
	int abi;                       /* NML_ABI_VERSION of the nmlrt.h the tables were made with */
	NmlKernel step, eval, predict; /* predict: forward only, stores pred; reads neither y nor loss */
	size_t work;                   /* scratch bytes: the most any of the three kernels needs */
	int64_t batch;                 /* rows per call the kernels were compiled for, at most */
	int64_t xdim, ydim, classes, out_dim; /* ydim 0: y holds class indices (as floats) */
	NmlBlockDesc block[NML_NBLOCKS];      /* by NmlBlock; only MODEL blocks (and GRADS' layout) are read */
	const char *const *hparam_names;
	const double *hparam_defaults;
	int nhparams;
} NmlModelDesc;

typedef struct NmlModel NmlModel;

/* Model blocks initialized from seed (each tensor from its own stream, so one seed gives the same
 * weights everywhere), hyperparameters at their defaults, step 0. NULL if out of memory or if the
 * desc was made for another ABI version (nml_model_check_abi says which). */
NmlModel *nml_model_create(const NmlModelDesc *d, uint64_t seed);
/* 0 if d was made for this runtime's ABI, else -1 with a message in err. */
int nml_model_check_abi(const NmlModelDesc *d, char *err, size_t errlen);
void nml_model_free(NmlModel *m);
/* The message of the last call that failed ("" if none). Every function below returns 0, or -1
 * with this message set. */
const char *nml_model_error(const NmlModel *m);
/* The tables the model was created from. */
const NmlModelDesc *nml_model_desc(const NmlModel *m);
/* Commits the kernels' scratch memory now (each page written once) rather than in the first step,
 * which would otherwise pay the kernel's zeroing of every page it touches (100 ms for a CNN's tens
 * of MB here); the trainer calls it before it starts timing. The scratch holds nothing between
 * steps, so this may be called at any time. */
void nml_model_touch(NmlModel *m);
/* One optimizer step on n <= batch rows (x [n, xdim], y [n] or [n, ydim]); the step count advances
 * first (t is 1 in the first step). *loss is the batch's mean loss before the update; it may be
 * NaN or infinite when training diverges, which is not an error here. */
int nml_model_train_step(NmlModel *m, const float *x, const float *y, int64_t n, double *loss);
/* The same on rows idx[0..n) of a data set, gathered straight into the kernel's batch buffers. */
int nml_model_train_rows(NmlModel *m, const NmlData *d, const int64_t *idx, int64_t n, double *loss);
/* Mean loss over n rows (any n >= 1, in batches), and the model's output pred [n, out_dim] unless
 * pred is NULL. Changes nothing. */
int nml_model_evaluate(NmlModel *m, const float *x, const float *y, int64_t n, double *loss, float *pred);
/* Mean loss of a data set and, for class labels with out_dim >= 2, the accuracy (else NaN). */
int nml_model_evaluate_data(NmlModel *m, const NmlData *d, double *loss, double *accuracy);
/* The model's output for n rows (any n >= 1, in batches): pred [n, out_dim]. */
int nml_model_predict(NmlModel *m, const float *x, int64_t n, float *pred);
/* A checkpoint: every tensor of the model blocks, and the step, seed and hyperparameters as
 * metadata, plus the caller's extra pairs (nmlc run adds the epoch). */
int nml_model_save(NmlModel *m, const char *path);
int nml_model_save_meta(NmlModel *m, const char *path, const NmlMeta *extra, int nextra);
/* Model blocks from a checkpoint (every tensor must be there, with its shape), and the step and
 * hyperparameters its metadata records, if any. On failure nothing changes. */
int nml_model_load(NmlModel *m, const char *path);
/* Parameters only (e.g. from numpy or PyTorch); other blocks, step and hyperparameters stay. */
int nml_model_load_params(NmlModel *m, const char *path);
int nml_model_get_hparam(NmlModel *m, const char *name, double *value);
int nml_model_set_hparam(NmlModel *m, const char *name, double value);
/* All hyperparameters, in the desc's order (the model's own array: writes take effect). */
double *nml_model_hparams(NmlModel *m);
int64_t nml_model_get_step(const NmlModel *m);
int nml_model_set_step(NmlModel *m, int64_t step); /* step >= 0: the steps done */
uint64_t nml_model_seed(const NmlModel *m);
/* The storage of block b (MODEL and GRADS blocks; NULL for others or without a model). */
float *nml_model_block(NmlModel *m, NmlBlock b);
/* The data of tensor i of parameters or optimizer state, NULL if i is out of range. */
float *nml_model_param(NmlModel *m, int i);
float *nml_model_state(NmlModel *m, int i);

/* ---- threads of generated loops (pool.c) ----
 * fn(args, ctx, lo, hi) runs indices [lo, hi) of a loop of n. nml_pool_for cuts [0, n) into at most
 * `threads` contiguous pieces run at once, or runs it in the calling thread when threads < 2, n < 2
 * or work (about the loop's element count) is below NML_POOL_MIN_WORK, or another loop is running. */
#define NML_POOL_MAX_THREADS 64
#define NML_POOL_MIN_WORK 65536
typedef void (*NmlPoolFn)(void *args, void *ctx, int64_t lo, int64_t hi);
void nml_pool_for(NmlPoolFn fn, void *args, void *ctx, int64_t n, int64_t work, int threads);
/* Called before a multithreaded library call (a matrix product on OpenBLAS's threads): the pool's
 * workers sleep now instead of spinning for the next loop on the cores those threads need. */
void nml_pool_rest(void);
/* A buffer of at least `bytes` (64-byte aligned) that belongs to the calling thread and stays its
 * own until its next call: where a loop piece keeps a block it computes and uses at once (a product's
 * window operand, unfolded per image). A kernel has no way to fail, so running out of memory here
 * ends the process with a message. Freed when the thread exits. */
void *nml_scratch(int64_t bytes);

/* ---- training loop (train.c): epochs of a model over a data set ---- */
struct NmlEpochStats;

typedef struct NmlTrainer {
	NmlModel *model;          /* its step kernel trains, its eval kernel evaluates; its step count is t */
	int epochs;
	const NmlData *train, *test;
	FILE *log;                /* JSONL, one record per epoch, or NULL; a failed write stops training */
	int progress;             /* 1: redraw a progress bar (terminal); 0: plain lines */
	int quiet;                /* no per-epoch lines but the last */
	/* Resuming: epochs already done (0 for a fresh run). Training runs epochs epochs_done+1 ..
	 * epochs, shuffled (by the model's seed) as an uninterrupted run would be, and advances it. */
	int epochs_done;
	/* Called after each epoch's output (e.g. to write a checkpoint), unless NULL; -1 stops training
	 * and nml_train returns -1 with the callback's err. */
	int (*after_epoch)(struct NmlTrainer *tr, const struct NmlEpochStats *s, char *err, size_t errlen);
	void *user;               /* for after_epoch */
	int diverged;             /* out: training stopped on a loss that is not finite */
	const volatile sig_atomic_t *interrupt; /* set (by a signal handler): stop before the next batch */
	int interrupted;          /* out: training stopped on *interrupt */
	int in_order;             /* 1: every epoch takes the rows in the data's order, unshuffled */
	const char *log_name;     /* the log's name in messages, or NULL */
} NmlTrainer;

typedef struct NmlEpochStats {
	int epoch;
	double train_loss, test_loss, test_accuracy, samples_per_sec, seconds;
} NmlEpochStats;

/* Runs tr->epochs epochs; last receives the final epoch's figures. Returns 0, or -1 with err set
 * (a non-finite loss: "loss is nan at epoch E, step T"). Test loss and accuracy are NaN without a
 * test set. */
int nml_train(NmlTrainer *tr, NmlEpochStats *last, char *err, size_t errlen);

/* ---- linear algebra the generated kernels call (linalg.c) ----
 * The eigenvectors of the symmetric n x n matrix a (row-major; its upper triangle is read) as the
 * columns of out, in the order of ascending eigenvalues; when == 0, out is a copy of prev instead
 * (a periodic refresh). NaN everywhere if LAPACK fails. */
void nml_eigh_f32(int64_t n, const float *a, const float *prev, double when, float *out);
void nml_eigh_f64(int64_t n, const double *a, const double *prev, double when, double *out);

#endif

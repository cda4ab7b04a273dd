/* linalg.c: matrix decompositions the generated kernels call (LAPACK, from OpenBLAS). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nmlrt.h"

/* LAPACK's symmetric eigensolver (divide and conquer), Fortran calling convention: every argument
 * by reference, then the lengths of the character arguments. */
void ssyevd_(const char *jobz, const char *uplo, const int *n, float *a, const int *lda, float *w, float *work,
	     const int *lwork, int *iwork, const int *liwork, int *info, size_t, size_t);
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
	     const int *lwork, int *iwork, const int *liwork, int *info, size_t, size_t);

/* The work LAPACK asks for with jobz = 'V': 1 + 6n + 2n² reals and 3 + 5n integers. On failure
 * (no memory, or no convergence) the result is NaN: the run stops on it as on any divergence. */
#define EIGH(NAME, T, SYEVD)                                                                              \
	void NAME(int64_t n, const T *a, const T *prev, double when, T *out)                            \
	{                                                                                                \
		size_t nn = (size_t)n * (size_t)n;                                                       \
		if (when == 0) {                                                                         \
			memmove(out, prev, nn * sizeof *out);                                            \
			return;                                                                          \
		}                                                                                        \
		memmove(out, a, nn * sizeof *out);                                                       \
		int ni = (int)n, lwork = 1 + 6 * ni + 2 * ni * ni, liwork = 3 + 5 * ni, info = 0;         \
		T *w = malloc(((size_t)n + (size_t)lwork) * sizeof *w);                                  \
		int *iwork = malloc((size_t)liwork * sizeof *iwork);                                     \
		if (w && iwork)                                                                          \
			SYEVD("V", "U", &ni, out, &ni, w, w + n, &lwork, iwork, &liwork, &info, 1, 1);   \
		if (!w || !iwork || info != 0) {                                                         \
			for (size_t k = 0; k < nn; k++)                                                  \
				out[k] = (T)NAN;                                                         \
		} else { /* column-major eigenvectors are the rows here: transpose */                    \
			for (int64_t i = 0; i < n; i++)                                                  \
				for (int64_t j = i + 1; j < n; j++) {                                    \
					T t = out[i * n + j];                                            \
					out[i * n + j] = out[j * n + i];                                 \
					out[j * n + i] = t;                                              \
				}                                                                        \
		}                                                                                        \
		free(w);                                                                                 \
		free(iwork);                                                                             \
	}

EIGH(nml_eigh_f32, float, ssyevd_)
EIGH(nml_eigh_f64, double, dsyevd_)

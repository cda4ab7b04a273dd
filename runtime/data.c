/* data.c: data sets in memory as float matrices, read from IDX (MNIST layout), NumPy .npy or CSV files.
 *
 * Readers never trust a header: every size is checked for overflow, and memory is only committed to
 * bytes that exist (IDX arrays grow as gzip'd data arrives; NPY sizes are checked against the file),
 * so a corrupt file costs an error message, not a crash or a huge allocation. They read regular
 * files only: a FIFO would block and a device such as /dev/zero never ends. */
#include "nmlrt.h"
#include "rtutil.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

enum {
	IDX_IMAGES = 0x00000803, /* unsigned byte, 3 dimensions */
	IDX_LABELS = 0x00000801, /* unsigned byte, 1 dimension */
	DATA_CHUNK = 1 << 16,
	NPY_MAX_HEADER = 1 << 20, /* numpy writes a few hundred bytes; refuse anything absurd */
	NPY_MAX_RANK = 64,        /* numpy's NPY_MAXDIMS */
	CSV_FIRST_VALUES = 1 << 20, /* values the first CSV block holds, however wide the rows */
};

/* Labels are stored as floats; past 2^24 consecutive integers are no longer exact. */
#define DATA_MAX_LABEL 16777216.0

static uint32_t rd_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t rd_le(const unsigned char *p, int size)
{
	uint64_t v = 0;
	for (int i = size - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Bytes of a [rows, cols] float matrix into *bytes; 0 if that does not fit a size_t. */
static int float_bytes(uint64_t rows, uint64_t cols, size_t *bytes)
{
	return !__builtin_mul_overflow(rows, cols, bytes) && !__builtin_mul_overflow(*bytes, sizeof(float), bytes);
}

/* ---- IDX ---- */

/* Reads exactly len bytes; 0 on success, else an error naming path. */
static int gz_read_all(gzFile f, const char *path, void *buf, size_t len, const char *what, char *err,
                       size_t errlen)
{
	unsigned char *p = buf;
	while (len > 0) {
		unsigned want = len > DATA_CHUNK ? DATA_CHUNK : (unsigned)len;
		int got = gzread(f, p, want);
		if (got < 0) {
			int code;
			const char *msg = gzerror(f, &code);
			size_t plen = strlen(path);
			if (code == Z_ERRNO)
				return rt_error(err, errlen, "cannot read %s: %s", path, strerror(errno));
			/* zlib's message starts with the path, which we print anyway. */
			if (strncmp(msg, path, plen) == 0 && strncmp(msg + plen, ": ", 2) == 0)
				msg += plen + 2;
			if (code == Z_DATA_ERROR)
				return rt_error(err, errlen, "%s is corrupt (gzip: %s)", path, msg);
			return rt_error(err, errlen, "cannot read %s: %s", path, msg);
		}
		if (got == 0)
			return rt_error(err, errlen, "%s is truncated (%s ends early)", path, what);
		p += got;
		len -= (size_t)got;
	}
	return 0;
}

/* Opens an IDX file and checks its magic; dims receives the ndims sizes. */
static gzFile idx_open(const char *path, uint32_t magic, int ndims, uint32_t *dims, char *err, size_t errlen)
{
	struct stat st;
	int fd = rt_open_regular(path, "", &st, err, errlen);
	if (fd < 0)
		return NULL;
	gzFile f = gzdopen(fd, "rb");
	if (!f) {
		close(fd); /* gzdopen leaves it open when it fails */
		rt_error(err, errlen, "out of memory reading %s", path);
		return NULL;
	}
	unsigned char h[16];
	if (gz_read_all(f, path, h, 4, "header", err, errlen) < 0)
		goto fail;
	uint32_t m = rd_be32(h);
	if (m != magic) {
		const char *kind = magic == IDX_IMAGES ? "image" : "label";
		if (m == IDX_IMAGES || m == IDX_LABELS)
			rt_error(err, errlen, "%s is an IDX %s file, expected %s", path,
			           m == IDX_IMAGES ? "image" : "label", magic == IDX_IMAGES ? "images" : "labels");
		else
			rt_error(err, errlen, "%s is not an IDX %s file (magic 0x%08x, expected 0x%08x)", path, kind,
			           m, magic);
		goto fail;
	}
	if (gz_read_all(f, path, h + 4, 4 * (size_t)ndims, "header", err, errlen) < 0)
		goto fail;
	for (int i = 0; i < ndims; i++)
		dims[i] = rd_be32(h + 4 + 4 * i);
	return f;
fail:
	gzclose(f);
	return NULL;
}

/* Reads count bytes as floats divided by div (divided, not multiplied by 1/div, so a pixel matches
 * numpy's and torchvision's x / 255 bit for bit). The array grows as bytes arrive (doubling, capped
 * at count), so a header that lies about the size cannot make us allocate for it up front. */
static float *idx_read_bytes(gzFile f, const char *path, uint64_t count, float div, char *err, size_t errlen)
{
	float value[256];
	for (int i = 0; i < 256; i++)
		value[i] = (float)i / div;
	unsigned char *chunk = malloc(DATA_CHUNK);
	float *out = NULL;
	uint64_t cap = 0, have = 0;
	if (!chunk) {
		rt_error(err, errlen, "out of memory reading %s", path);
		return NULL;
	}
	while (have < count) {
		if (have == cap) {
			cap = cap ? 2 * cap : (1 << 20);
			if (cap > count)
				cap = count;
			size_t bytes;
			float *p = float_bytes(cap, 1, &bytes) ? realloc(out, bytes) : NULL;
			if (!p) {
				rt_error(err, errlen, "out of memory reading %s", path);
				goto fail;
			}
			out = p;
		}
		uint64_t want = cap - have < DATA_CHUNK ? cap - have : DATA_CHUNK;
		if (gz_read_all(f, path, chunk, want, "data", err, errlen) < 0)
			goto fail;
		for (uint64_t i = 0; i < want; i++)
			out[have + i] = value[chunk[i]];
		have += want;
	}
	free(chunk);
	return out;
fail:
	free(chunk);
	free(out);
	return NULL;
}

int nml_data_load_idx(NmlData *d, const char *images, const char *labels, char *err, size_t errlen)
{
	NmlData r = {0};
	uint32_t idim[3], ldim[1];
	gzFile fi = NULL, fl = NULL;
	if (!images || !labels)
		return rt_error(err, errlen, "no %s path (NULL)", images ? "labels" : "images");

	if (!(fi = idx_open(images, IDX_IMAGES, 3, idim, err, errlen)))
		goto fail;
	if (!(fl = idx_open(labels, IDX_LABELS, 1, ldim, err, errlen)))
		goto fail;
	if (idim[0] != ldim[0]) {
		rt_error(err, errlen, "%s has %u images but %s has %u labels", images, idim[0], labels, ldim[0]);
		goto fail;
	}
	if (idim[0] == 0) {
		rt_error(err, errlen, "%s holds no images", images);
		goto fail;
	}
	if (idim[1] == 0 || idim[2] == 0) {
		rt_error(err, errlen, "%s has empty images (%u x %u)", images, idim[1], idim[2]);
		goto fail;
	}
	/* Three 32-bit factors can exceed 64 bits. */
	uint64_t xdim = (uint64_t)idim[1] * idim[2], total;
	size_t bytes;
	if (__builtin_mul_overflow(xdim, (uint64_t)idim[0], &total) || total > INT64_MAX ||
	    !float_bytes(total, 1, &bytes)) {
		rt_error(err, errlen, "%s is too large (%u x %u x %u)", images, idim[0], idim[1], idim[2]);
		goto fail;
	}
	r.n = idim[0];
	r.xdim = (int64_t)xdim;
	if (!(r.x = idx_read_bytes(fi, images, total, 255, err, errlen)))
		goto fail;
	if (!(r.y = idx_read_bytes(fl, labels, r.n, 1.0f, err, errlen)))
		goto fail;
	float top = 0;
	for (int64_t i = 0; i < r.n; i++)
		top = r.y[i] > top ? r.y[i] : top;
	r.classes = (int64_t)top + 1;
	gzclose(fi);
	gzclose(fl);
	*d = r;
	return 0;
fail:
	if (fi)
		gzclose(fi);
	if (fl)
		gzclose(fl);
	nml_data_free(&r);
	return -1;
}

/* ---- NPY ---- */

typedef struct NpyArray {
	char kind; /* 'f', 'i', 'u', 'b' */
	int size;  /* bytes per element */
	int rank;
	int64_t shape[NPY_MAX_RANK];
	int64_t rows, cols; /* shape[0], product of the rest */
	char descr[16];
} NpyArray;

/* Header dictionary scanner: the subset of Python literal syntax numpy writes. */
typedef struct NpyScan {
	const char *p, *end;
} NpyScan;

static void npy_space(NpyScan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static int npy_eat(NpyScan *s, char c)
{
	npy_space(s);
	if (s->p < s->end && *s->p == c) {
		s->p++;
		return 1;
	}
	return 0;
}

/* A quoted string into buf (truncated to len - 1); 0 if there is none. */
static int npy_string(NpyScan *s, char *buf, size_t len)
{
	npy_space(s);
	if (s->p >= s->end || (*s->p != '\'' && *s->p != '"'))
		return 0;
	char q = *s->p++;
	size_t n = 0;
	while (s->p < s->end && *s->p != q) {
		if (n + 1 < len)
			buf[n++] = *s->p;
		s->p++;
	}
	if (s->p >= s->end)
		return 0;
	s->p++;
	buf[n] = 0;
	return 1;
}

static int npy_word(NpyScan *s, const char *w)
{
	npy_space(s);
	size_t n = strlen(w);
	if ((size_t)(s->end - s->p) >= n && memcmp(s->p, w, n) == 0) {
		s->p += n;
		return 1;
	}
	return 0;
}

/* (d0, d1, ...) with Python's optional trailing comma and Python 2's L suffix. */
static int npy_shape(NpyScan *s, NpyArray *a)
{
	if (!npy_eat(s, '('))
		return 0;
	a->rank = 0;
	for (;;) {
		if (npy_eat(s, ')'))
			return 1;
		npy_space(s);
		if (s->p >= s->end || *s->p < '0' || *s->p > '9' || a->rank == NPY_MAX_RANK)
			return 0;
		int64_t v = 0;
		while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
			if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *s->p - '0', &v))
				return 0;
			s->p++;
		}
		if (s->p < s->end && *s->p == 'L')
			s->p++;
		a->shape[a->rank++] = v;
		if (!npy_eat(s, ','))
			return npy_eat(s, ')');
	}
}

static int npy_dtype(NpyArray *a, const char *path, char *err, size_t errlen)
{
	const char *d = a->descr;
	if (strlen(d) < 3 || !strchr("<>|=", d[0]) || !strchr("fiub", d[1]) || d[2] < '1' || d[2] > '8' || d[3])
		return rt_error(err, errlen, "%s has unsupported dtype '%s'", path, d);
	a->kind = d[1];
	a->size = d[2] - '0';
	int ok;
	switch (a->kind) {
	case 'f': ok = a->size == 4 || a->size == 8; break;
	case 'b': ok = a->size == 1; break;
	default: ok = a->size == 1 || a->size == 2 || a->size == 4 || a->size == 8; break;
	}
	if (!ok)
		return rt_error(err, errlen, "%s has unsupported dtype '%s'", path, d);
	int little = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
	if (a->size > 1 && (d[0] == '>' || (d[0] == '=' && !little)))
		return rt_error(err, errlen, "%s has big-endian dtype '%s'; only little-endian is supported", path, d);
	return 0;
}

static int npy_parse_header(NpyArray *a, const char *h, size_t len, const char *path, char *err, size_t errlen)
{
	NpyScan s = {h, h + len};
	int have_descr = 0, have_order = 0, have_shape = 0, fortran = 0;
	if (!npy_eat(&s, '{'))
		goto bad;
	while (!npy_eat(&s, '}')) {
		char key[32];
		if (!npy_string(&s, key, sizeof key) || !npy_eat(&s, ':'))
			goto bad;
		if (strcmp(key, "descr") == 0) {
			npy_space(&s);
			if (s.p < s.end && *s.p == '[')
				return rt_error(err, errlen, "%s holds a structured array; only plain numeric dtypes are supported",
				                  path);
			if (!npy_string(&s, a->descr, sizeof a->descr))
				goto bad;
			have_descr = 1;
		} else if (strcmp(key, "fortran_order") == 0) {
			if (npy_word(&s, "True"))
				fortran = 1;
			else if (!npy_word(&s, "False"))
				goto bad;
			have_order = 1;
		} else if (strcmp(key, "shape") == 0) {
			if (!npy_shape(&s, a))
				goto bad;
			have_shape = 1;
		} else {
			goto bad;
		}
		if (!npy_eat(&s, ',')) {
			if (!npy_eat(&s, '}'))
				goto bad;
			break;
		}
	}
	if (!have_descr || !have_order || !have_shape)
		goto bad;
	if (fortran)
		return rt_error(err, errlen, "%s is in Fortran order; save it C-contiguous (np.ascontiguousarray)", path);
	return npy_dtype(a, path, err, errlen);
bad:
	return rt_error(err, errlen, "%s has a malformed .npy header", path);
}

/* Converts count elements at p to floats. */
static void npy_convert(const NpyArray *a, const unsigned char *p, size_t count, float *out)
{
	if (a->kind == 'f' && a->size == 4 && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) {
		memcpy(out, p, count * sizeof *out); /* the common case, already in our format */
		return;
	}
	for (size_t i = 0; i < count; i++, p += a->size) {
		uint64_t bits = rd_le(p, a->size);
		switch (a->kind) {
		case 'f':
			if (a->size == 4) {
				uint32_t b = (uint32_t)bits;
				float f;
				memcpy(&f, &b, sizeof f);
				out[i] = f;
			} else {
				double f;
				memcpy(&f, &bits, sizeof f);
				out[i] = (float)f;
			}
			break;
		case 'i': {
			/* Sign-extend from size bytes. */
			int shift = 64 - 8 * a->size;
			out[i] = (float)((int64_t)(bits << shift) >> shift);
			break;
		}
		case 'u': out[i] = (float)bits; break;
		default: out[i] = bits != 0; break;
		}
	}
}

/* For integer labels: the most negative and the largest value, exactly. */
static void npy_int_range(const NpyArray *a, const unsigned char *p, size_t count, int64_t *lo, uint64_t *hi)
{
	for (size_t i = 0; i < count; i++, p += a->size) {
		uint64_t bits = rd_le(p, a->size);
		if (a->kind == 'i') {
			int shift = 64 - 8 * a->size;
			int64_t v = (int64_t)(bits << shift) >> shift;
			if (v < *lo)
				*lo = v;
			if (v > 0 && (uint64_t)v > *hi)
				*hi = (uint64_t)v;
		} else if (bits > *hi) {
			*hi = bits;
		}
	}
}

/* Reads one .npy file into a float matrix [rows, cols]; with lo and hi, also the range of integer
 * values (labels), taken from the raw integers rather than their float images. */
static float *npy_read(const char *path, NpyArray *a, int64_t *lo, uint64_t *hi, char *err, size_t errlen)
{
	float *out = NULL;
	unsigned char *chunk = NULL, pre[12];
	char *header = NULL;
	struct stat st;
	int fd = rt_open_regular(path, "", &st, err, errlen);
	if (fd < 0)
		return NULL;
	FILE *f = fdopen(fd, "rb");
	if (!f) {
		close(fd);
		rt_error(err, errlen, "out of memory reading %s", path);
		return NULL;
	}
	if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
		rt_error(err, errlen, "%s is not a .npy file", path);
		goto fail;
	}
	int major = pre[6];
	size_t hlen, off;
	if (major == 1) {
		hlen = rd_le(pre + 8, 2);
		off = 10;
	} else if (major == 2 || major == 3) {
		if (fread(pre + 10, 1, 2, f) != 2) {
			rt_error(err, errlen, "%s is truncated (.npy header)", path);
			goto fail;
		}
		hlen = rd_le(pre + 8, 4);
		off = 12;
	} else {
		rt_error(err, errlen, "%s has unsupported .npy version %d.%d", path, major, pre[7]);
		goto fail;
	}
	if (hlen > NPY_MAX_HEADER || (uint64_t)st.st_size < off + hlen) {
		rt_error(err, errlen, "%s is truncated (.npy header)", path);
		goto fail;
	}
	if (!(header = malloc(hlen + 1))) {
		rt_error(err, errlen, "out of memory reading %s", path);
		goto fail;
	}
	if (fread(header, 1, hlen, f) != hlen) {
		rt_error(err, errlen, "cannot read %s", path);
		goto fail;
	}
	if (npy_parse_header(a, header, hlen, path, err, errlen) < 0)
		goto fail;
	if (a->rank == 0) {
		rt_error(err, errlen, "%s holds a scalar; expected an array with one row per sample", path);
		goto fail;
	}
	a->rows = a->shape[0];
	a->cols = 1;
	for (int i = 1; i < a->rank; i++)
		if (__builtin_mul_overflow(a->cols, a->shape[i], &a->cols))
			goto too_big;
	int64_t count, bytes;
	size_t out_bytes;
	if (__builtin_mul_overflow(a->rows, a->cols, &count) || __builtin_mul_overflow(count, a->size, &bytes) ||
	    !float_bytes((uint64_t)count, 1, &out_bytes))
		goto too_big;
	if (bytes > (int64_t)st.st_size - (int64_t)(off + hlen)) {
		rt_error(err, errlen, "%s is truncated: its header promises %lld bytes of data, the file holds %lld",
		           path, (long long)bytes, (long long)(st.st_size - (off_t)(off + hlen)));
		goto fail;
	}
	if (a->rows == 0 || a->cols == 0) {
		rt_error(err, errlen, "%s is empty", path);
		goto fail;
	}
	/* The size is now backed by the file, so allocating it is honest. */
	if (!(out = malloc(out_bytes)) || !(chunk = malloc(DATA_CHUNK))) {
		rt_error(err, errlen, "out of memory reading %s", path);
		goto fail;
	}
	size_t per = DATA_CHUNK / a->size, done = 0;
	while (done < (size_t)count) {
		size_t k = (size_t)count - done < per ? (size_t)count - done : per;
		if (fread(chunk, a->size, k, f) != k) {
			rt_error(err, errlen, "cannot read %s: %s", path, ferror(f) ? strerror(errno) : "unexpected end of file");
			goto fail;
		}
		npy_convert(a, chunk, k, out + done);
		if (lo && (a->kind == 'i' || a->kind == 'u' || a->kind == 'b'))
			npy_int_range(a, chunk, k, lo, hi);
		done += k;
	}
	free(chunk);
	free(header);
	fclose(f);
	return out;
too_big:
	rt_error(err, errlen, "%s is too large", path);
fail:
	free(out);
	free(chunk);
	free(header);
	fclose(f);
	return NULL;
}

static void npy_shape_str(const NpyArray *a, char *buf, size_t len)
{
	size_t n = 0;
	n += snprintf(buf + n, len - n, "(");
	for (int i = 0; i < a->rank && n < len; i++)
		n += snprintf(buf + n, len - n, i ? ", %lld" : "%lld", (long long)a->shape[i]);
	if (n < len)
		snprintf(buf + n, len - n, a->rank == 1 ? ",)" : ")");
}

int nml_data_load_npy(NmlData *d, const char *x_npy, const char *y_npy, char *err, size_t errlen)
{
	NmlData r = {0};
	NpyArray xa = {0}, ya = {0};
	int64_t lo = 0;
	uint64_t hi = 0;
	if (!x_npy || !y_npy)
		return rt_error(err, errlen, "no %s path (NULL)", x_npy ? "y" : "x");
	if (!(r.x = npy_read(x_npy, &xa, NULL, NULL, err, errlen)))
		goto fail;
	if (!(r.y = npy_read(y_npy, &ya, &lo, &hi, err, errlen)))
		goto fail;
	if (xa.rows != ya.rows) {
		rt_error(err, errlen, "%s has %lld rows but %s has %lld", x_npy, (long long)xa.rows, y_npy,
		           (long long)ya.rows);
		goto fail;
	}
	r.n = xa.rows;
	r.xdim = xa.cols;
	if (xa.rank >= 2 && xa.rank <= NML_MAXRANK) { /* an image array [N, C, H, W] keeps its shape */
		r.xrank = xa.rank - 1;
		for (int i = 1; i < xa.rank; i++)
			r.xshape[i - 1] = xa.shape[i];
	}
	if (ya.kind == 'f') {
		r.ydim = ya.cols;
	} else {
		if (ya.cols != 1) {
			char shape[64];
			npy_shape_str(&ya, shape, sizeof shape);
			rt_error(err, errlen, "%s holds integer labels of shape %s; expected one class index per row "
			           "(use a float array for multi-dimensional targets)", y_npy, shape);
			goto fail;
		}
		if (lo < 0) {
			rt_error(err, errlen, "%s has a negative label (%lld)", y_npy, (long long)lo);
			goto fail;
		}
		if (hi >= DATA_MAX_LABEL) {
			rt_error(err, errlen, "%s has label %llu; labels must be below 2^24", y_npy, (unsigned long long)hi);
			goto fail;
		}
		r.classes = (int64_t)hi + 1;
	}
	*d = r;
	return 0;
fail:
	nml_data_free(&r);
	return -1;
}

/* ---- CSV ---- */

/* Numbers separated by commas, one sample a line; a first line that is not all numbers is a
 * header. Blank lines are skipped. */
int nml_data_load_csv(NmlData *d, const char *path, int label, int regression, char *err, size_t errlen)
{
	*d = (NmlData){0};
	if (!path)
		return rt_error(err, errlen, "no CSV path (NULL)");
	struct stat st;
	int fd = rt_open_regular(path, "", &st, err, errlen);
	if (fd < 0)
		return -1;
	FILE *f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return rt_error(err, errlen, "out of memory reading %s", path);
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int64_t lineno = 0, cols = -1, rows = 0, rowcap = 0;
	float *vals = NULL;
	int rc = -1;
	for (;;) {
		errno = 0;
		if ((len = getline(&line, &cap, f)) < 0) {
			/* getline says -1 at the end and on failure alike. */
			if (ferror(f) || errno == ENOMEM) {
				rt_error(err, errlen, "cannot read %s: %s", path, errno ? strerror(errno) : "read error");
				goto out;
			}
			break;
		}
		lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = 0;
		if (len == 0)
			continue;
		int64_t n = 1;
		for (char *c = line; *c; c++)
			n += *c == ',';
		if (cols < 0 && rows == 0) {
			char *end;
			int header = 0;
			for (char *c = line;; c = end + 1) {
				strtod(c, &end);
				while (*end == ' ' || *end == '\t')
					end++;
				if (end == c || (*end && *end != ','))
					header = 1;
				if (!*end || header)
					break;
			}
			cols = n;
			if (header)
				continue;
		}
		if (n != cols) {
			rt_error(err, errlen, "%s:%lld: %lld fields, the first line has %lld", path, (long long)lineno,
				 (long long)n, (long long)cols);
			goto out;
		}
		if (rows == rowcap) {
			/* The first block is sized in values, not rows: a file of one very wide row must not
			 * ask for room for many. */
			rowcap = rowcap ? 2 * rowcap : 1 + CSV_FIRST_VALUES / cols;
			size_t bytes;
			float *v = float_bytes((uint64_t)rowcap, (uint64_t)cols, &bytes) ? realloc(vals, bytes) : NULL;
			if (!v) {
				rt_error(err, errlen, "out of memory reading %s", path);
				goto out;
			}
			vals = v;
		}
		char *c = line, *end;
		for (int64_t k = 0; k < cols; k++, c = end + 1) {
			double v = strtod(c, &end);
			while (*end == ' ' || *end == '\t')
				end++;
			if (end == c || (*end && *end != ',') || !isfinite(v)) {
				rt_error(err, errlen, "%s:%lld: field %lld is not a number", path, (long long)lineno,
					 (long long)k + 1);
				goto out;
			}
			vals[rows * cols + k] = (float)v;
		}
		rows++;
	}
	if (rows == 0 || cols < 2) {
		rt_error(err, errlen, "%s holds no samples with features and a label", path);
		goto out;
	}
	int64_t lab = label < 0 ? cols + label : label;
	if (lab < 0 || lab >= cols) {
		rt_error(err, errlen, "%s has %lld columns, no column %d", path, (long long)cols, label);
		goto out;
	}
	d->n = rows;
	d->xdim = cols - 1;
	d->ydim = regression ? 1 : 0;
	size_t xbytes, ybytes;
	if (float_bytes((uint64_t)rows, (uint64_t)d->xdim, &xbytes) && float_bytes((uint64_t)rows, 1, &ybytes)) {
		d->x = malloc(xbytes);
		d->y = malloc(ybytes);
	}
	if (!d->x || !d->y) {
		rt_error(err, errlen, "out of memory reading %s", path);
		goto out;
	}
	for (int64_t r = 0; r < rows; r++) {
		float *src = vals + r * cols, *dst = d->x + r * d->xdim;
		for (int64_t k = 0; k < cols; k++)
			if (k != lab)
				*dst++ = src[k];
		float y = src[lab];
		if (!regression && (y < 0 || y != floorf(y) || y >= DATA_MAX_LABEL)) {
			rt_error(err, errlen, "%s: sample %lld has label %g, not a class index (for regression "
				 "targets say regression = 1)", path, (long long)r + 1, y);
			goto out;
		}
		if (!regression && (int64_t)y + 1 > d->classes)
			d->classes = (int64_t)y + 1;
		d->y[r] = y;
	}
	rc = 0;
out:
	if (rc)
		nml_data_free(d);
	free(vals);
	free(line);
	fclose(f);
	return rc;
}

/* ---- splitting and batching ---- */

int nml_data_split(NmlData *d, NmlData *held, int64_t count, char *err, size_t errlen)
{
	if (count <= 0 || count >= d->n)
		return rt_error(err, errlen, "cannot hold out %lld of %lld samples", (long long)count, (long long)d->n);
	int64_t keep = d->n - count, yw = d->ydim ? d->ydim : 1;
	/* Bytes of the held-out part (hx, hy) and of what stays (kx, ky): a data set whose sizes do
	 * not fit a size_t cannot be in memory, so its fields are wrong. */
	size_t hx, hy, kx, ky;
	if (d->xdim <= 0 || yw < 0 || !float_bytes((uint64_t)count, (uint64_t)d->xdim, &hx) ||
	    !float_bytes((uint64_t)count, (uint64_t)yw, &hy) || !float_bytes((uint64_t)keep, (uint64_t)d->xdim, &kx) ||
	    !float_bytes((uint64_t)keep, (uint64_t)yw, &ky))
		return rt_error(err, errlen, "cannot split a data set of %lld samples of %lld features and %lld targets",
		                (long long)d->n, (long long)d->xdim, (long long)yw);
	NmlData h = {.n = count, .xdim = d->xdim, .ydim = d->ydim, .classes = d->classes, .xrank = d->xrank};
	memcpy(h.xshape, d->xshape, sizeof h.xshape);
	h.x = malloc(hx);
	h.y = malloc(hy);
	if (!h.x || !h.y) {
		nml_data_free(&h);
		return rt_error(err, errlen, "out of memory splitting the data set");
	}
	memcpy(h.x, (const char *)d->x + kx, hx);
	memcpy(h.y, (const char *)d->y + ky, hy);
	/* Shrinking cannot lose data; if realloc declines, the larger block is still valid. */
	float *p = realloc(d->x, kx);
	if (p)
		d->x = p;
	p = realloc(d->y, ky);
	if (p)
		d->y = p;
	d->n = keep;
	*held = h;
	return 0;
}

void nml_data_free(NmlData *d)
{
	free(d->x);
	free(d->y);
	memset(d, 0, sizeof *d);
}

typedef struct {
	const NmlData *d;
	const int64_t *idx;
	float *xb, *yb;
} Gather;

/* Rows [lo, hi) of a gather. */
static void gather_rows(void *args, void *ctx, int64_t lo, int64_t hi)
{
	(void)args;
	const Gather *g = ctx;
	int64_t xw = g->d->xdim, yw = g->d->ydim ? g->d->ydim : 1;
	for (int64_t i = lo; i < hi; i++) {
		memcpy(g->xb + i * xw, g->d->x + g->idx[i] * xw, (size_t)xw * sizeof *g->xb);
		memcpy(g->yb + i * yw, g->d->y + g->idx[i] * yw, (size_t)yw * sizeof *g->yb);
	}
}

int openblas_get_num_threads(void);

/* The rows come from anywhere in the data set, so they are mostly memory's latency, not arithmetic:
 * the pool's threads (as many as the kernels use: OpenBLAS's setting) gather a share each, with a
 * byte of rows counted as one element of the pool's work. The 784-64-10 MLP at batch 32 (100 KB of
 * rows a step), nmlc run on 2 threads, 11 alternating runs: 470-580k samples/s (median 545k)
 * against 464-528k (488k) on one. */
void nml_data_gather(const NmlData *d, const int64_t *idx, int64_t n, float *xb, float *yb)
{
	Gather g = {d, idx, xb, yb};
	nml_pool_for(gather_rows, NULL, &g, n, n * d->xdim * (int64_t)sizeof *xb, openblas_get_num_threads());
}

/* Start loading rows idx[0..n) of x toward the cache: one prefetch per KB of each row, which is enough
 * for the hardware's stream prefetcher to fetch the rest and for the page walks to be done, while a
 * prefetch of every line stalls the caller on its misses. Issued for the next batch before a step,
 * it takes most of the next gather's DRAM latency out of the loop (row 2 of bench/: 5-6% more
 * samples/s, measured against no prefetch and a prefetch of every line). */
void nml_data_prefetch(const NmlData *d, const int64_t *idx, int64_t n)
{
	size_t bytes = (size_t)d->xdim * sizeof *d->x;
	for (int64_t i = 0; i < n; i++) {
		const char *row = (const char *)(d->x + idx[i] * d->xdim);
		for (size_t o = 0; o < bytes; o += 1024)
			__builtin_prefetch(row + o, 0, 1);
	}
}

/* A synthetic set from the seed alone: x ~ N(0, 1) per feature (Philox stream 0), a teacher
 * W ~ N(0, 1/dim) of one column per class, or one for a regression target (stream 1), noise
 * N(0, noise^2) per target (stream 2). classes 0: y = x W + noise; classes >= 2: y = the argmax of
 * x W + noise over the columns. At most 2^24 rows and features and 2^16 classes, far below what
 * could wrap a size. */
int nml_data_synthetic(NmlData *d, int64_t n, int64_t dim, int classes, double noise, uint64_t seed, char *err,
                       size_t errlen)
{
	memset(d, 0, sizeof *d);
	if (n < 1 || n > (1 << 24) || dim < 1 || dim > (1 << 24) || n * dim > ((int64_t)1 << 28))
		return rt_error(err, errlen, "synthetic data of %lld rows of %lld features: rows and features must be "
		                "from 1 to 2^24, and at most 2^28 values", (long long)n, (long long)dim);
	if (classes == 1 || classes < 0 || classes > (1 << 16))
		return rt_error(err, errlen, "synthetic data with %d classes: 0 (a regression target) or 2 to 65536",
		                classes);
	if (!(noise >= 0) || !isfinite(noise))
		return rt_error(err, errlen, "synthetic data: noise must be a finite number >= 0, got %g", noise);
	int64_t cols = classes ? classes : 1;
	double *w = malloc((size_t)(dim * cols) * sizeof *w), *s = malloc((size_t)cols * sizeof *s);
	d->x = malloc((size_t)(n * dim) * sizeof *d->x);
	d->y = malloc((size_t)n * sizeof *d->y);
	if (!w || !s || !d->x || !d->y) {
		free(w);
		free(s);
		nml_data_free(d);
		return rt_error(err, errlen, "out of memory for synthetic data of %lld rows", (long long)n);
	}
	NmlRng rx, rw, re;
	nml_rng_init(&rx, seed, 0);
	nml_rng_init(&rw, seed, 1);
	nml_rng_init(&re, seed, 2);
	for (int64_t i = 0; i < dim * cols; i++)
		w[i] = nml_rng_normal(&rw) / sqrt((double)dim);
	for (int64_t r = 0; r < n; r++) {
		float *x = d->x + r * dim;
		for (int64_t j = 0; j < dim; j++)
			x[j] = (float)nml_rng_normal(&rx);
		int64_t best = 0;
		for (int64_t c = 0; c < cols; c++) {
			s[c] = noise * nml_rng_normal(&re);
			for (int64_t j = 0; j < dim; j++)
				s[c] += (double)x[j] * w[j * cols + c];
			if (s[c] > s[best])
				best = c;
		}
		d->y[r] = classes ? (float)best : (float)s[0];
	}
	free(w);
	free(s);
	d->n = n;
	d->xdim = dim;
	d->ydim = classes ? 0 : 1;
	d->classes = classes;
	return 0;
}

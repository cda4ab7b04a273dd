/* test_fuzz.c: the file readers on randomly damaged files. Every load must end in success with a
 * consistent result or in an error message, never in a crash (run it under ASan/UBSan too). The
 * mutations are seeded, so a failure reproduces. */
#include "check.h"

#include <zlib.h>

#include "nmlrt.h"

/* Per reader; build with -DROUNDS=100000 for a longer soak. */
#ifndef ROUNDS
#define ROUNDS 400
#endif

static char dir[256];
static char err[512];
static NmlRng rng;

static const char *P(const char *name)
{
	static char buf[4][512];
	static int next;
	char *p = buf[next++ % 4];
	snprintf(p, sizeof buf[0], "%s/%s", dir, name);
	return p;
}

static void spit(const char *path, const void *data, size_t len, int gz)
{
	if (gz) {
		gzFile f = gzopen(path, "wb");
		gzwrite(f, data, (unsigned)len);
		gzclose(f);
		return;
	}
	FILE *f = fopen(path, "wb");
	fwrite(data, 1, len, f);
	fclose(f);
}

static size_t below(size_t n)
{
	return n ? nml_rng_u32(&rng) % n : 0;
}

/* Damages a copy of buf: flipped bits, bytes set to interesting values, digits, truncation or
 * insertion, mostly within the first `hot` bytes (the header). Returns the new length. */
static size_t mutate(unsigned char *out, const unsigned char *buf, size_t len, size_t hot)
{
	static const unsigned char special[] = {0, 0xff, 0x7f, 0x80, '9', '(', ')', ',', '"', '\'', '[', ']', '{', '}',
	                                        ':', '-', '.', 'e', ' '};
	memcpy(out, buf, len);
	int edits = 1 + (int)below(4);
	for (int e = 0; e < edits; e++) {
		size_t at = below(100) < 85 ? below(hot < len ? hot : len) : below(len);
		switch (below(5)) {
		case 0: out[at] ^= (unsigned char)(1u << below(8)); break;
		case 1: out[at] = special[below(sizeof special)]; break;
		case 2: out[at] = (unsigned char)nml_rng_u32(&rng); break;
		case 3: len = at + 1; break; /* truncate */
		default:                      /* insert a byte */
			memmove(out + at + 1, out + at, len - at);
			out[at] = special[below(sizeof special)];
			len++;
			break;
		}
	}
	return len;
}

/* A loaded data set must be self-consistent. */
static int data_sane(const NmlData *d)
{
	if (d->n <= 0 || d->xdim <= 0 || d->ydim < 0 || !d->x || !d->y)
		return 0;
	if (d->ydim == 0)
		for (int64_t i = 0; i < d->n; i++)
			if (!(d->y[i] >= 0 && d->y[i] < d->classes))
				return 0;
	return 1;
}

static void check_outcome(int rc, const char *what, int round, int sane)
{
	check_report(rc == 0 ? sane : rc == -1 && err[0], __FILE__, __LINE__, "%s round %d: rc %d, err \"%s\"", what,
	             round, rc, err);
}

static void fuzz_idx(void)
{
	unsigned char img[16 + 4 * 9], lab[8 + 4], buf[256];
	unsigned char h1[] = {0, 0, 8, 3, 0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0, 3};
	unsigned char h2[] = {0, 0, 8, 1, 0, 0, 0, 4};
	memcpy(img, h1, 16);
	memcpy(lab, h2, 8);
	for (int i = 0; i < 36; i++)
		img[16 + i] = (unsigned char)(i * 7);
	for (int i = 0; i < 4; i++)
		lab[8 + i] = (unsigned char)i;
	for (int round = 0; round < ROUNDS; round++) {
		int which = round % 2, gz = round % 4 >= 2;
		size_t n = which ? mutate(buf, lab, sizeof lab, 8) : mutate(buf, img, sizeof img, 16);
		spit(P("img"), which ? img : buf, which ? sizeof img : n, gz && !which);
		spit(P("lab"), which ? buf : lab, which ? n : sizeof lab, gz && which);
		NmlData d = {0};
		err[0] = 0;
		int rc = nml_data_load_idx(&d, P("img"), P("lab"), err, sizeof err);
		check_outcome(rc, "idx", round, rc == 0 && data_sane(&d));
		nml_data_free(&d);
	}

	/* Damaged gzip streams (not damaged contents): zlib must report, we must pass it on. */
	unsigned char z[512];
	spit(P("img.gz"), img, sizeof img, 1);
	FILE *f = fopen(P("img.gz"), "rb");
	size_t zn = fread(z, 1, sizeof z, f);
	fclose(f);
	spit(P("lab"), lab, sizeof lab, 0);
	for (int round = 0; round < ROUNDS; round++) {
		size_t n = mutate(buf, z, zn, zn);
		spit(P("img.gz"), buf, n, 0);
		NmlData d = {0};
		err[0] = 0;
		int rc = nml_data_load_idx(&d, P("img.gz"), P("lab"), err, sizeof err);
		check_outcome(rc, "gzip", round, rc == 0 && data_sane(&d));
		nml_data_free(&d);
	}
}

static size_t npy(unsigned char *out, const char *dict, const void *data, size_t len)
{
	size_t dl = strlen(dict), hl = (10 + dl + 1 + 63) / 64 * 64 - 10;
	memcpy(out, "\x93NUMPY\x01\x00", 8);
	out[8] = (unsigned char)hl;
	out[9] = (unsigned char)(hl >> 8);
	memcpy(out + 10, dict, dl);
	memset(out + 10 + dl, ' ', hl - dl - 1);
	out[10 + hl - 1] = '\n';
	memcpy(out + 10 + hl, data, len);
	return 10 + hl + len;
}

static void fuzz_npy(void)
{
	float xv[6] = {1, 2, 3, 4, 5, 6};
	int64_t yv[3] = {0, 2, 1};
	unsigned char x[512], y[512], buf[600];
	size_t xn = npy(x, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", xv, sizeof xv);
	size_t yn = npy(y, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", yv, sizeof yv);
	for (int round = 0; round < ROUNDS; round++) {
		int which = round % 2;
		size_t n = which ? mutate(buf, y, yn, 128) : mutate(buf, x, xn, 128);
		spit(P("x.npy"), which ? x : buf, which ? xn : n, 0);
		spit(P("y.npy"), which ? buf : y, which ? n : yn, 0);
		NmlData d = {0};
		err[0] = 0;
		int rc = nml_data_load_npy(&d, P("x.npy"), P("y.npy"), err, sizeof err);
		check_outcome(rc, "npy", round, rc == 0 && data_sane(&d));
		nml_data_free(&d);
	}
}

static void fuzz_safetensors(void)
{
	float a[6] = {1, 2, 3, 4, 5, 6}, b[2] = {7, 8};
	NmlTensorRef t[] = {{"a", 2, {2, 3}, a}, {"b", 1, {2}, b}};
	NmlMeta meta[] = {{"step", "12"}, {"hparam.lr", "0.050000000000000003"}};
	if (nml_ckpt_save_meta(P("base.st"), t, 2, meta, 2, err, sizeof err) < 0) {
		check_report(0, __FILE__, __LINE__, "%s", err);
		return;
	}
	unsigned char base[512], buf[600];
	FILE *f = fopen(P("base.st"), "rb");
	size_t bn = fread(base, 1, sizeof base, f);
	fclose(f);
	for (int round = 0; round < ROUNDS; round++) {
		size_t n = mutate(buf, base, bn, bn - sizeof a - sizeof b);
		spit(P("m.st"), buf, n, 0);
		err[0] = 0;
		int rc = nml_ckpt_load(P("m.st"), t, 2, err, sizeof err);
		check_outcome(rc, "safetensors", round, 1);
		/* Metadata: found (a string that fits the buffer), absent, or an error. */
		char v[8];
		const char *key = round % 2 ? "step" : "hparam.lr";
		err[0] = 0;
		v[0] = 'x';
		rc = nml_ckpt_meta(P("m.st"), key, v, sizeof v, err, sizeof err);
		check_report(rc == 0 ? strlen(v) < sizeof v : rc == 1 ? v[0] == 'x' : rc == -1 && err[0], __FILE__,
		             __LINE__, "metadata round %d: rc %d, err \"%s\"", round, rc, err);
	}
}

static void fuzz_csv(void)
{
	static const char base[] = "a,b,label\n1.5,-2,0\n3,4e-3,2\n\n0.25,7,1\n";
	unsigned char buf[128];
	for (int round = 0; round < ROUNDS; round++) {
		size_t n = mutate(buf, (const unsigned char *)base, sizeof base - 1, sizeof base - 1);
		spit(P("m.csv"), buf, n, 0);
		NmlData d = {0};
		err[0] = 0;
		int rc = nml_data_load_csv(&d, P("m.csv"), -1, round % 3 == 0, err, sizeof err);
		check_outcome(rc, "csv", round, rc == 0 && data_sane(&d));
		nml_data_free(&d);
	}
}

int main(void)
{
	check_tmpdir(dir, sizeof dir);
	nml_rng_init(&rng, 2024, 0);
	fuzz_idx();
	fuzz_npy();
	fuzz_safetensors();
	fuzz_csv();
	check_rmtree(dir);
	return check_done();
}

/* test_data.c: IDX, NPY and CSV readers, their error messages, splitting and gathering.
 *
 *   test_data            files written by hand in a temporary directory
 *   test_data --fashion  the installed Fashion-MNIST (skipped if absent)
 *   test_data --numpy    .npy files written by numpy itself (skipped without numpy) */
#include "check.h"

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <unistd.h>
#include <zlib.h>

#include "nmlrt.h"

#define FASHION "/usr/share/datasets/fashion-mnist/"

static char dir[256];
static char err[512];

/* A path in the test directory; four rotating buffers so a call can take two or three. */
static const char *P(const char *name)
{
	static char buf[4][512];
	static int next;
	char *p = buf[next++ % 4];
	snprintf(p, sizeof buf[0], "%s/%s", dir, name);
	return p;
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

static void write_gz(const char *path, const void *data, size_t len)
{
	gzFile f = gzopen(path, "wb");
	if (!f || gzwrite(f, data, (unsigned)len) != (int)len || gzclose(f) != Z_OK) {
		perror(path);
		exit(1);
	}
}

/* A read that blocks (on a FIFO) would hang the test; fail it instead. */
static void watchdog_fired(int sig)
{
	(void)sig;
	static const char msg[] = "test_data: timed out: a data file read blocked\n";
	if (write(2, msg, sizeof msg - 1) < 0)
		_exit(2);
	_exit(1);
}

static void be32(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v;
}

/* IDX images [n, rows, cols] with pixel (i, k) = (i * 7 + k) % 256; returns the byte count. */
static size_t make_images(unsigned char *buf, uint32_t n, uint32_t rows, uint32_t cols)
{
	be32(buf, 0x803);
	be32(buf + 4, n);
	be32(buf + 8, rows);
	be32(buf + 12, cols);
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t k = 0; k < rows * cols; k++)
			buf[16 + i * rows * cols + k] = (unsigned char)((i * 7 + k) % 256);
	return 16 + (size_t)n * rows * cols;
}

static size_t make_labels(unsigned char *buf, uint32_t n)
{
	be32(buf, 0x801);
	be32(buf + 4, n);
	for (uint32_t i = 0; i < n; i++)
		buf[8 + i] = (unsigned char)(i % 5);
	return 8 + n;
}

static void idx_tests(void)
{
	unsigned char img[16 + 6 * 3 * 4], lab[8 + 6], lab5[8 + 5];
	size_t ni = make_images(img, 6, 3, 4), nl = make_labels(lab, 6), nl5 = make_labels(lab5, 5);
	write_gz(P("img.gz"), img, ni);
	write_gz(P("lab.gz"), lab, nl);
	write_file(P("img"), img, ni);
	write_file(P("lab"), lab, nl);
	write_gz(P("lab5.gz"), lab5, nl5);

	/* gzip'd and plain files read alike. */
	const char *pairs[][2] = {{"img.gz", "lab.gz"}, {"img", "lab"}, {"img.gz", "lab"}};
	for (int k = 0; k < 3; k++) {
		NmlData d;
		int rc = nml_data_load_idx(&d, P(pairs[k][0]), P(pairs[k][1]), err, sizeof err);
		if (!check_report(rc == 0, __FILE__, __LINE__, "load %s: %s", pairs[k][0], err))
			continue;
		CHECK(d.n == 6 && d.xdim == 12 && d.ydim == 0 && d.classes == 5);
		int ok = 1;
		for (int i = 0; i < 6; i++) {
			for (int j = 0; j < 12; j++)
				ok &= d.x[i * 12 + j] == (float)((i * 7 + j) % 256) / 255;
			ok &= d.y[i] == i % 5;
		}
		CHECK(ok);
		nml_data_free(&d);
		CHECK(d.x == NULL && d.n == 0);
	}

	/* Errors name the file and leave d untouched. */
	NmlData d = {.n = 99};
	CHECK(nml_data_load_idx(&d, P("missing.gz"), P("lab.gz"), err, sizeof err) < 0);
	CHECK_ERR(err, "cannot open");
	CHECK_ERR(err, "missing.gz");
	CHECK(d.n == 99);

	CHECK(nml_data_load_idx(&d, P("lab.gz"), P("img.gz"), err, sizeof err) < 0);
	CHECK_ERR(err, "lab.gz is an IDX label file, expected images");

	CHECK(nml_data_load_idx(&d, P("img.gz"), P("lab5.gz"), err, sizeof err) < 0);
	CHECK_ERR(err, "has 6 images but");
	CHECK_ERR(err, "lab5.gz has 5 labels");

	write_gz(P("short.gz"), img, ni - 5);
	CHECK(nml_data_load_idx(&d, P("short.gz"), P("lab.gz"), err, sizeof err) < 0);
	CHECK_ERR(err, "short.gz is truncated");

	write_gz(P("hdr.gz"), img, 10);
	CHECK(nml_data_load_idx(&d, P("hdr.gz"), P("lab.gz"), err, sizeof err) < 0);
	CHECK_ERR(err, "hdr.gz is truncated");

	unsigned char bad[16];
	memcpy(bad, img, 16);
	be32(bad, 0x12345678);
	write_file(P("magic"), bad, 16);
	CHECK(nml_data_load_idx(&d, P("magic"), P("lab.gz"), err, sizeof err) < 0);
	CHECK_ERR(err, "magic 0x12345678");

	/* A header promising 4 billion huge images must not allocate for them. */
	be32(bad, 0x803);
	be32(bad + 4, 0xffffffff);
	be32(bad + 8, 0xffffffff);
	be32(bad + 12, 0xffffffff);
	write_file(P("huge"), bad, 16);
	unsigned char hl[8];
	be32(hl, 0x801);
	be32(hl + 4, 0xffffffff);
	write_file(P("hugel"), hl, 8);
	CHECK(nml_data_load_idx(&d, P("huge"), P("hugel"), err, sizeof err) < 0);
	CHECK_ERR(err, "huge is too large");
	be32(bad + 8, 28);
	be32(bad + 12, 28);
	write_file(P("huge"), bad, 16);
	CHECK(nml_data_load_idx(&d, P("huge"), P("hugel"), err, sizeof err) < 0);
	CHECK_ERR(err, "huge is truncated");

	/* Not gzip at all but a gzip magic: zlib's complaint, with the file name. */
	write_file(P("corrupt.gz"), "\x1f\x8b\x08\x00garbagegarbagegarbage", 25);
	CHECK(nml_data_load_idx(&d, P("corrupt.gz"), P("lab.gz"), err, sizeof err) < 0);
	CHECK_ERR(err, "corrupt.gz");

	/* A directory is not a data file. */
	CHECK(nml_data_load_idx(&d, dir, P("lab.gz"), err, sizeof err) < 0);
	CHECK_ERR(err, dir);
	CHECK(d.n == 99);
}

/* A .npy file: numpy's preamble, the dictionary padded to a multiple of 64, then data. */
static void write_npy(const char *path, int major, const char *dict, const void *data, size_t len)
{
	unsigned char buf[4096];
	size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
	size_t hlen = (pre + dl + 1 + 63) / 64 * 64 - pre;
	memcpy(buf, "\x93NUMPY", 6);
	buf[6] = (unsigned char)major;
	buf[7] = 0;
	for (size_t i = 0; i < pre - 8; i++)
		buf[8 + i] = (unsigned char)(hlen >> 8 * i);
	memcpy(buf + pre, dict, dl);
	memset(buf + pre + dl, ' ', hlen - dl - 1);
	buf[pre + hlen - 1] = '\n';
	memcpy(buf + pre + hlen, data, len);
	write_file(path, buf, pre + hlen + len);
}

static void npy_dict(char *buf, size_t len, const char *descr, const char *shape)
{
	snprintf(buf, len, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
}

static void npy_tests(void)
{
	char h[256];
	/* x: every supported dtype holding 1, -2 (or 254 unsigned), 3, 4, 5, 6 in shape (3, 2). */
	static const struct {
		const char *descr;
		int size;
		float second;
	} types[] = {
		{"<f4", 4, -2}, {"<f8", 8, -2}, {"<i1", 1, -2}, {"|i1", 1, -2}, {"<i2", 2, -2}, {"<i4", 4, -2},
		{"<i8", 8, -2}, {"<u1", 1, 254}, {"|u1", 1, 254}, {"<u2", 2, 65534}, {"<u4", 4, 4294967294.0f},
		{"<u8", 8, 18446744073709551614.0f},
	};
	float fy[3] = {0.5f, 1.5f, 2.5f};
	npy_dict(h, sizeof h, "<f4", "(3,)");
	write_npy(P("fy.npy"), 1, h, fy, sizeof fy);
	for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
		unsigned char raw[48];
		for (int i = 0; i < 6; i++) {
			double v = i == 1 ? -2 : i + 1;
			if (types[k].descr[1] == 'f') {
				if (types[k].size == 4) {
					float f = (float)v;
					memcpy(raw + 4 * i, &f, 4);
				} else {
					memcpy(raw + 8 * i, &v, 8);
				}
			} else {
				int64_t iv = (int64_t)v;
				memcpy(raw + types[k].size * i, &iv, types[k].size); /* little-endian host */
			}
		}
		npy_dict(h, sizeof h, types[k].descr, "(3, 2)");
		write_npy(P("x.npy"), 1 + k % 3, h, raw, 6 * types[k].size);
		NmlData d;
		int rc = nml_data_load_npy(&d, P("x.npy"), P("fy.npy"), err, sizeof err);
		if (!check_report(rc == 0, __FILE__, __LINE__, "load %s: %s", types[k].descr, err))
			continue;
		check_report(d.n == 3 && d.xdim == 2 && d.x[0] == 1 && d.x[1] == types[k].second && d.x[5] == 6,
		             __FILE__, __LINE__, "%s: n %lld xdim %lld x %g %g %g", types[k].descr, (long long)d.n,
		             (long long)d.xdim, d.x[0], d.x[1], d.x[5]);
		CHECK(d.ydim == 1 && d.classes == 0 && d.y[2] == 2.5f);
		nml_data_free(&d);
	}

	/* Bool x, 3-d x flattened, integer labels → classes. */
	unsigned char bools[6] = {1, 0, 0, 1, 1, 1};
	npy_dict(h, sizeof h, "|b1", "(3, 1, 2)");
	write_npy(P("bx.npy"), 1, h, bools, 6);
	int64_t labels[3] = {2, 0, 7};
	npy_dict(h, sizeof h, "<i8", "(3,)");
	write_npy(P("iy.npy"), 1, h, labels, sizeof labels);
	NmlData d;
	if (check_report(nml_data_load_npy(&d, P("bx.npy"), P("iy.npy"), err, sizeof err) == 0, __FILE__, __LINE__,
	                 "%s", err)) {
		CHECK(d.n == 3 && d.xdim == 2 && d.x[0] == 1 && d.x[1] == 0 && d.x[4] == 1);
		CHECK(d.ydim == 0 && d.classes == 8 && d.y[0] == 2 && d.y[2] == 7);
		nml_data_free(&d);
	}

	/* (n, 1) integer labels are also one index per row; float (n, 2, 2) targets have ydim 4. */
	uint8_t l8[3] = {1, 1, 0};
	npy_dict(h, sizeof h, "|u1", "(3, 1)");
	write_npy(P("u8y.npy"), 1, h, l8, 3);
	if (check_report(nml_data_load_npy(&d, P("bx.npy"), P("u8y.npy"), err, sizeof err) == 0, __FILE__, __LINE__,
	                 "%s", err)) {
		CHECK(d.ydim == 0 && d.classes == 2);
		nml_data_free(&d);
	}
	float ty[12];
	for (int i = 0; i < 12; i++)
		ty[i] = i * 0.25f;
	npy_dict(h, sizeof h, "<f4", "(3, 2, 2)");
	write_npy(P("ty.npy"), 1, h, ty, sizeof ty);
	if (check_report(nml_data_load_npy(&d, P("bx.npy"), P("ty.npy"), err, sizeof err) == 0, __FILE__, __LINE__,
	                 "%s", err)) {
		CHECK(d.ydim == 4 && d.classes == 0 && d.y[11] == 2.75f);
		nml_data_free(&d);
	}

	/* Python 2 style long integers and double quotes are valid header syntax. */
	write_npy(P("py2.npy"), 1, "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (3L, 2L)}", ty, 24);
	if (check_report(nml_data_load_npy(&d, P("py2.npy"), P("iy.npy"), err, sizeof err) == 0, __FILE__, __LINE__,
	                 "%s", err)) {
		CHECK(d.xdim == 2);
		nml_data_free(&d);
	}

	/* Errors, each naming its file. */
	d = (NmlData){.n = 99};
	int64_t neg[3] = {0, -1, 2};
	write_npy(P("neg.npy"), 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", neg, sizeof neg);
	CHECK(nml_data_load_npy(&d, P("bx.npy"), P("neg.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "neg.npy has a negative label (-1)");

	int32_t wide[6] = {0};
	write_npy(P("wide.npy"), 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3, 2), }", wide, sizeof wide);
	CHECK(nml_data_load_npy(&d, P("bx.npy"), P("wide.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "wide.npy holds integer labels of shape (3, 2)");

	write_npy(P("fort.npy"), 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 2), }", ty, 24);
	CHECK(nml_data_load_npy(&d, P("fort.npy"), P("iy.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "fort.npy is in Fortran order");

	write_npy(P("be.npy"), 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (3, 2), }", ty, 24);
	CHECK(nml_data_load_npy(&d, P("be.npy"), P("iy.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "be.npy has big-endian dtype '>f4'");

	write_npy(P("c8.npy"), 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }", ty, 24);
	CHECK(nml_data_load_npy(&d, P("c8.npy"), P("iy.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "c8.npy has unsupported dtype '<c8'");

	write_npy(P("rec.npy"), 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }", ty, 12);
	CHECK(nml_data_load_npy(&d, P("rec.npy"), P("iy.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "rec.npy holds a structured array");

	write_npy(P("short.npy"), 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", ty, 20);
	CHECK(nml_data_load_npy(&d, P("short.npy"), P("iy.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "short.npy is truncated");

	write_npy(P("four.npy"), 3, "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 2), }", ty, 32);
	CHECK(nml_data_load_npy(&d, P("four.npy"), P("iy.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "four.npy has 4 rows but");
	CHECK_ERR(err, "iy.npy has 3");

	write_npy(P("scalar.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", ty, 4);
	CHECK(nml_data_load_npy(&d, P("scalar.npy"), P("iy.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "scalar.npy holds a scalar");

	write_npy(P("huge.npy"), 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999, 99999999999), }",
	          ty, 8);
	CHECK(nml_data_load_npy(&d, P("huge.npy"), P("iy.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "huge.npy is too large");

	const char *bad_headers[] = {
		"{'descr': '<f4', 'shape': (3, 2), }",
		"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), 'extra': 1}",
		"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (3, 2)}",
		"{'descr': '<f4', 'fortran_order': False, 'shape': (3, -2)}",
		"{'descr': '<f4', 'fortran_order': False, 'shape': (3 2)}",
		"{'descr: '<f4', 'fortran_order': False, 'shape': (3, 2)}",
		"['descr', '<f4']",
		"",
	};
	for (size_t k = 0; k < sizeof bad_headers / sizeof bad_headers[0]; k++) {
		write_npy(P("bad.npy"), 1, bad_headers[k], ty, 24);
		int rc = nml_data_load_npy(&d, P("bad.npy"), P("iy.npy"), err, sizeof err);
		check_report(rc < 0 && strstr(err, "bad.npy has a malformed .npy header"), __FILE__, __LINE__,
		             "header %zu: rc %d, %s", k, rc, err);
	}
	write_file(P("text.npy"), "hello, world", 12);
	CHECK(nml_data_load_npy(&d, P("text.npy"), P("iy.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "text.npy is not a .npy file");
	unsigned char v9[16] = "\x93NUMPY\x09\x00";
	write_file(P("v9.npy"), v9, 16);
	CHECK(nml_data_load_npy(&d, P("v9.npy"), P("iy.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "unsupported .npy version 9.0");
	CHECK(nml_data_load_npy(&d, P("nope.npy"), P("iy.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "cannot open");
	CHECK(d.n == 99);
}

/* Data files must be regular files: anything else is refused at once, naming the file and what it
 * is (a FIFO blocked forever; csv("/dev/zero") read until memory ran out). */
static void non_regular_tests(void)
{
	unsigned char img[16 + 2 * 2 * 2], lab[8 + 2];
	write_file(P("img"), img, make_images(img, 2, 2, 2));
	write_file(P("lab"), lab, make_labels(lab, 2));
	float xv[2] = {1, 2};
	char h[256];
	npy_dict(h, sizeof h, "<f4", "(2,)");
	write_npy(P("x.npy"), 1, h, xv, sizeof xv);
	write_npy(P("y.npy"), 1, h, xv, sizeof xv);
	write_file(P("ok.csv"), "1,0\n2,1\n", 8);
	CHECK(mkfifo(P("fifo"), 0666) == 0);

	signal(SIGALRM, watchdog_fired);
	alarm(10);
	NmlData d = {.n = 99};
	char want[600];
	snprintf(want, sizeof want, "%s is a FIFO, not a regular file", P("fifo"));
	CHECK(nml_data_load_idx(&d, P("fifo"), P("lab"), err, sizeof err) < 0);
	CHECK_STR(err, want);
	CHECK(nml_data_load_idx(&d, P("img"), P("fifo"), err, sizeof err) < 0);
	CHECK_STR(err, want);
	CHECK(nml_data_load_npy(&d, P("fifo"), P("y.npy"), err, sizeof err) < 0);
	CHECK_STR(err, want);
	CHECK(nml_data_load_npy(&d, P("x.npy"), P("fifo"), err, sizeof err) < 0);
	CHECK_STR(err, want);
	CHECK(d.n == 99);
	CHECK(nml_data_load_csv(&d, P("fifo"), -1, 0, err, sizeof err) < 0);
	CHECK_STR(err, want);

	CHECK(nml_data_load_csv(&d, "/dev/zero", -1, 0, err, sizeof err) < 0);
	CHECK_STR(err, "/dev/zero is a character device, not a regular file");
	CHECK(nml_data_load_npy(&d, "/dev/zero", P("y.npy"), err, sizeof err) < 0);
	CHECK_STR(err, "/dev/zero is a character device, not a regular file");
	CHECK(nml_data_load_idx(&d, P("img"), "/dev/zero", err, sizeof err) < 0);
	CHECK_STR(err, "/dev/zero is a character device, not a regular file");
	snprintf(want, sizeof want, "%s is a directory, not a regular file", dir);
	CHECK(nml_data_load_csv(&d, dir, -1, 0, err, sizeof err) < 0);
	CHECK_STR(err, want);
	CHECK(nml_data_load_npy(&d, dir, P("y.npy"), err, sizeof err) < 0);
	CHECK_STR(err, want);
	CHECK(nml_data_load_idx(&d, dir, P("lab"), err, sizeof err) < 0);
	CHECK_STR(err, want);
	alarm(0);

	/* A missing path (a data source that names only test files) is an error, not fopen(NULL). */
	d = (NmlData){.n = 99};
	CHECK(nml_data_load_npy(&d, NULL, P("y.npy"), err, sizeof err) < 0);
	CHECK_STR(err, "no x path (NULL)");
	CHECK(nml_data_load_npy(&d, P("x.npy"), NULL, err, sizeof err) < 0);
	CHECK_STR(err, "no y path (NULL)");
	CHECK(nml_data_load_idx(&d, NULL, P("lab"), err, sizeof err) < 0);
	CHECK_STR(err, "no images path (NULL)");
	CHECK(nml_data_load_idx(&d, P("img"), NULL, err, sizeof err) < 0);
	CHECK_STR(err, "no labels path (NULL)");
	CHECK(d.n == 99);
	CHECK(nml_data_load_csv(&d, NULL, -1, 0, err, sizeof err) < 0);
	CHECK_STR(err, "no CSV path (NULL)");

	/* The same files, regular, load. */
	if (check_report(nml_data_load_npy(&d, P("x.npy"), P("y.npy"), err, sizeof err) == 0, __FILE__, __LINE__, "%s",
	                 err))
		nml_data_free(&d);
	if (check_report(nml_data_load_csv(&d, P("ok.csv"), -1, 0, err, sizeof err) == 0, __FILE__, __LINE__, "%s", err))
		nml_data_free(&d);
}

/* CSV: a wide row, a header, blank lines and CRLF endings. */
static void csv_tests(void)
{
	enum { WIDE = 5000 };
	char *wide = malloc(WIDE * 8 + 16);
	size_t n = 0;
	for (int r = 0; r < 3; r++) {
		for (int k = 0; k < WIDE; k++)
			n += (size_t)sprintf(wide + n, "%d,", k % 7);
		n += (size_t)sprintf(wide + n, "%d\r\n\n", r);
	}
	write_file(P("wide.csv"), wide, n);
	free(wide);
	NmlData d;
	if (check_report(nml_data_load_csv(&d, P("wide.csv"), -1, 0, err, sizeof err) == 0, __FILE__, __LINE__, "%s",
	                 err)) {
		CHECK(d.n == 3 && d.xdim == WIDE && d.classes == 3 && d.x[WIDE + 6] == 6 && d.y[2] == 2);
		nml_data_free(&d);
	}
	write_file(P("h.csv"), "a,b,y\n1,2,0\n3,4,1\n", 18);
	if (check_report(nml_data_load_csv(&d, P("h.csv"), 0, 1, err, sizeof err) == 0, __FILE__, __LINE__, "%s", err)) {
		CHECK(d.n == 2 && d.xdim == 2 && d.ydim == 1 && d.y[1] == 3 && d.x[0] == 2 && d.x[3] == 1);
		nml_data_free(&d);
	}
	CHECK(nml_data_load_csv(&d, P("nope.csv"), -1, 0, err, sizeof err) < 0);
	CHECK_ERR(err, "cannot open");
	CHECK_ERR(err, "nope.csv");
}

void openblas_set_num_threads(int n);

static void split_gather_tests(void)
{
	NmlData d = {.n = 10, .xdim = 3, .ydim = 2};
	d.x = malloc(30 * sizeof *d.x);
	d.y = malloc(20 * sizeof *d.y);
	for (int i = 0; i < 30; i++)
		d.x[i] = i;
	for (int i = 0; i < 20; i++)
		d.y[i] = -i;

	NmlData held;
	CHECK(nml_data_split(&d, &held, 10, err, sizeof err) < 0);
	CHECK(nml_data_split(&d, &held, 0, err, sizeof err) < 0);
	CHECK(nml_data_split(&d, &held, -1, err, sizeof err) < 0);
	CHECK(d.n == 10);
	CHECK(nml_data_split(&d, &held, 3, err, sizeof err) == 0);
	CHECK(d.n == 7 && held.n == 3 && held.xdim == 3 && held.ydim == 2);
	CHECK(held.x[0] == 21 && held.x[8] == 29 && held.y[0] == -14 && held.y[5] == -19);
	CHECK(d.x[20] == 20 && d.y[13] == -13);

	int64_t idx[3] = {6, 0, 6};
	float xb[9], yb[6];
	nml_data_gather(&d, idx, 3, xb, yb);
	CHECK(xb[0] == 18 && xb[2] == 20 && xb[3] == 0 && xb[8] == 20);
	CHECK(yb[0] == -12 && yb[1] == -13 && yb[2] == 0 && yb[5] == -13);
	nml_data_free(&d);
	nml_data_free(&held);

	/* Class-index data: one y per row, classes carried into the held-out part. */
	NmlData c = {.n = 4, .xdim = 1, .classes = 3};
	c.x = malloc(4 * sizeof *c.x);
	c.y = malloc(4 * sizeof *c.y);
	for (int i = 0; i < 4; i++)
		c.x[i] = i, c.y[i] = i % 3;
	CHECK(nml_data_split(&c, &held, 1, err, sizeof err) == 0);
	CHECK(held.n == 1 && held.classes == 3 && held.y[0] == 0 && held.x[0] == 3 && c.n == 3);
	int64_t j[2] = {2, 1};
	nml_data_gather(&c, j, 2, xb, yb);
	CHECK(xb[0] == 2 && xb[1] == 1 && yb[0] == 2 && yb[1] == 1);
	nml_data_free(&c);
	nml_data_free(&held);

	/* A gather large enough for the pool's threads (runtime/data.c): every row where it belongs, on
	 * 1, 2 and 3 threads; a row twice, rows of y too. */
	{
		enum { N = 500, W = 700, B = 64 };
		NmlData w = {.n = N, .xdim = W, .ydim = 3};
		w.x = malloc((size_t)N * W * sizeof *w.x);
		w.y = malloc((size_t)N * 3 * sizeof *w.y);
		float *gx = malloc((size_t)B * W * sizeof *gx), gy[B * 3];
		CHECK(w.x && w.y && gx);
		for (int64_t i = 0; w.x && i < (int64_t)N * W; i++)
			w.x[i] = (float)i;
		for (int i = 0; w.y && i < N * 3; i++)
			w.y[i] = (float)-i;
		int64_t rows[B];
		for (int i = 0; i < B; i++)
			rows[i] = (int64_t)(i * 37 % N);
		rows[B - 1] = rows[0];
		for (int t = 1; t <= 3 && w.x && w.y && gx; t++) {
			openblas_set_num_threads(t);
			memset(gx, 0, (size_t)B * W * sizeof *gx);
			memset(gy, 0, sizeof gy);
			nml_data_gather(&w, rows, B, gx, gy);
			int same = 1;
			for (int i = 0; i < B; i++) {
				same &= memcmp(gx + (int64_t)i * W, w.x + rows[i] * W, W * sizeof *gx) == 0;
				same &= memcmp(gy + i * 3, w.y + rows[i] * 3, 3 * sizeof *gy) == 0;
			}
			check_report(same, __FILE__, __LINE__, "gather of %d rows of %d on %d thread(s)", B, W, t);
		}
		openblas_set_num_threads(1);
		free(gx);
		nml_data_free(&w);
	}

	/* Sizes whose byte counts overflow are refused, not wrapped into a small copy. */
	float one[2] = {0};
	NmlData big = {.n = 4, .xdim = INT64_MAX / 2, .x = one, .y = one};
	CHECK(nml_data_split(&big, &held, 1, err, sizeof err) < 0);
	CHECK_ERR(err, "cannot split a data set of 4 samples");
	CHECK(big.n == 4 && big.x == one);
	big = (NmlData){.n = 4, .xdim = 1, .ydim = INT64_MAX / 4 + 1, .x = one, .y = one};
	CHECK(nml_data_split(&big, &held, 1, err, sizeof err) < 0);
	CHECK(big.n == 4 && big.y == one);
}

static int fashion(void)
{
	if (access(FASHION "train-images-idx3-ubyte.gz", R_OK) != 0) {
		printf("no Fashion-MNIST under " FASHION ", skipped\n");
		return 77;
	}
	NmlData tr, te;
	int rc = nml_data_load_idx(&tr, FASHION "train-images-idx3-ubyte.gz", FASHION "train-labels-idx1-ubyte.gz", err,
	                           sizeof err);
	if (!check_report(rc == 0, __FILE__, __LINE__, "%s", err))
		return check_done();
	CHECK(tr.n == 60000 && tr.xdim == 784 && tr.ydim == 0 && tr.classes == 10);
	double sum = 0;
	float lo = 1, hi = 0;
	int64_t count[10] = {0};
	for (int64_t i = 0; i < tr.n * tr.xdim; i++) {
		sum += tr.x[i];
		lo = tr.x[i] < lo ? tr.x[i] : lo;
		hi = tr.x[i] > hi ? tr.x[i] : hi;
	}
	for (int64_t i = 0; i < tr.n; i++)
		count[(int)tr.y[i]]++;
	/* Fashion-MNIST: the first training image is an ankle boot (9), the mean pixel is 0.2860, and
	 * each class has 6000 training images. */
	CHECK(tr.y[0] == 9);
	CHECK(lo == 0 && hi == 1);
	CHECK(fabs(sum / (tr.n * tr.xdim) - 0.2860) < 1e-3);
	int even = 1;
	for (int c = 0; c < 10; c++)
		even &= count[c] == 6000;
	CHECK(even);
	rc = nml_data_load_idx(&te, FASHION "t10k-images-idx3-ubyte.gz", FASHION "t10k-labels-idx1-ubyte.gz", err,
	                       sizeof err);
	if (check_report(rc == 0, __FILE__, __LINE__, "%s", err)) {
		CHECK(te.n == 10000 && te.xdim == 784 && te.classes == 10);
		nml_data_free(&te);
	}
	/* Mismatched pair: train images with test labels. */
	CHECK(nml_data_load_idx(&te, FASHION "train-images-idx3-ubyte.gz", FASHION "t10k-labels-idx1-ubyte.gz", err,
	                        sizeof err) < 0);
	CHECK_ERR(err, "has 60000 images but");
	nml_data_free(&tr);
	return check_done();
}

/* numpy writes the files (with its own header layout and padding); we must read what it wrote. */
static int numpy(void)
{
	if (!check_have_numpy()) {
		printf("numpy not available to /usr/bin/python3, skipped\n");
		return 77;
	}
	char cmd[2048];
	snprintf(cmd, sizeof cmd,
	         "cd '%s' && /usr/bin/python3 -c \""
	         "import numpy as np\n"
	         "x = np.arange(24, dtype=np.float64).reshape(4, 3, 2) / 8 - 1\n"
	         "np.save('x8.npy', x)\n"
	         "np.save('x4.npy', x.astype(np.float32))\n"
	         "np.save('xi2.npy', (x * 8).astype(np.int16))\n"
	         "np.save('xf.npy', np.asfortranarray(x.astype(np.float32)))\n"
	         "np.save('xb.npy', x > 0)\n"
	         "np.save('y.npy', np.array([3, 0, 1, 3]))\n"
	         "np.save('yu.npy', np.array([3, 0, 1, 3], dtype=np.uint8))\n"
	         "np.save('yt.npy', np.ones((4, 2), dtype=np.float32))\n"
	         "np.save('xbe.npy', x.astype('>f4'))\n"
	         "from numpy.lib import format as F\n"
	         "with open('x2.npy', 'wb') as f: F.write_array(f, x.astype(np.float32), version=(2, 0))\n"
	         "\"",
	         dir);
	if (!check_report(check_system(cmd) == 0, __FILE__, __LINE__, "python failed: %s", cmd))
		return check_done();
	const char *xs[] = {"x8.npy", "x4.npy", "x2.npy"};
	for (int k = 0; k < 3; k++) {
		NmlData d;
		if (!check_report(nml_data_load_npy(&d, P(xs[k]), P("y.npy"), err, sizeof err) == 0, __FILE__, __LINE__,
		                  "%s: %s", xs[k], err))
			continue;
		int ok = d.n == 4 && d.xdim == 6 && d.ydim == 0 && d.classes == 4 && d.y[0] == 3;
		for (int i = 0; i < 24; i++)
			ok &= d.x[i] == (float)(i / 8.0 - 1);
		check_report(ok, __FILE__, __LINE__, "%s contents", xs[k]);
		nml_data_free(&d);
	}
	NmlData d;
	if (check_report(nml_data_load_npy(&d, P("xi2.npy"), P("yt.npy"), err, sizeof err) == 0, __FILE__, __LINE__,
	                 "%s", err)) {
		CHECK(d.x[0] == -8 && d.x[23] == 15 && d.ydim == 2 && d.classes == 0);
		nml_data_free(&d);
	}
	if (check_report(nml_data_load_npy(&d, P("xb.npy"), P("yu.npy"), err, sizeof err) == 0, __FILE__, __LINE__,
	                 "%s", err)) {
		CHECK(d.x[0] == 0 && d.x[23] == 1 && d.classes == 4);
		nml_data_free(&d);
	}
	CHECK(nml_data_load_npy(&d, P("xf.npy"), P("y.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "Fortran order");
	CHECK(nml_data_load_npy(&d, P("xbe.npy"), P("y.npy"), err, sizeof err) < 0);
	CHECK_ERR(err, "big-endian");
	return check_done();
}

int main(int argc, char **argv)
{
	check_tmpdir(dir, sizeof dir);
	int rc;
	if (argc > 1 && strcmp(argv[1], "--fashion") == 0) {
		rc = fashion();
	} else if (argc > 1 && strcmp(argv[1], "--numpy") == 0) {
		rc = numpy();
	} else {
		idx_tests();
		npy_tests();
		non_regular_tests();
		csv_tests();
		split_gather_tests();
		rc = check_done();
	}
	check_rmtree(dir);
	return rc;
}

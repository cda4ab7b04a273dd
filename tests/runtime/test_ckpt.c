/* test_ckpt.c: safetensors checkpoints: round trip, atomic replacement, what a save may replace, load
 * errors.
 *
 *   test_ckpt          the C side
 *   test_ckpt --numpy  numpy reads a checkpoint we wrote (skipped without numpy) */
#include "check.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "nmlrt.h"

static char dir[256];
static char err[512];

static const char *P(const char *name)
{
	static char buf[4][512];
	static int next;
	char *p = buf[next++ % 4];
	snprintf(p, sizeof buf[0], "%s/%s", dir, name);
	return p;
}

/* Whole file into a malloc'd buffer; NULL if it cannot be read. */
static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	rewind(f);
	unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
	*len = fread(buf, 1, (size_t)n, f);
	fclose(f);
	return buf;
}

static void spit(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

/* Files in directory `in` whose names contain ".tmp." (leftovers of a save). */
static int temp_files_in(const char *in)
{
	DIR *d = opendir(in);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		n += strstr(e->d_name, ".tmp.") != NULL;
	closedir(d);
	return n;
}

static int temp_files(void) { return temp_files_in(dir); }

/* Every umask call of this program, the runtime's included, comes here (the runtime is linked in
 * statically, so this definition wins over libc's): changes counts the calls that changed the process
 * umask, which a save must never do, since every thread creating a file meanwhile would get the
 * temporary mask. */
static int umask_changes;

mode_t umask(mode_t mask)
{
	mode_t old = (mode_t)syscall(SYS_umask, mask);
	if (old != mask)
		__atomic_add_fetch(&umask_changes, 1, __ATOMIC_SEQ_CST);
	return old;
}

/* A read that blocks (on a FIFO) would hang the test; fail it instead. */
static void watchdog_fired(int sig)
{
	(void)sig;
	static const char msg[] = "test_ckpt: timed out: a checkpoint read blocked\n";
	if (write(2, msg, sizeof msg - 1) < 0)
		_exit(2);
	_exit(1);
}

static void watchdog(unsigned seconds)
{
	signal(SIGALRM, watchdog_fired);
	alarm(seconds);
}

static int is_link_to(const char *link, const char *want)
{
	char buf[512];
	ssize_t n = readlink(link, buf, sizeof buf - 1);
	if (n < 0)
		return 0;
	buf[n] = 0;
	return strcmp(buf, want) == 0;
}

static mode_t file_type(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0 ? st.st_mode & S_IFMT : 0;
}

/* The model of these tests: a 784x128 weight, a bias, a scalar and an empty tensor. */
static float w[784 * 128], b[128], s[1];
static NmlTensorRef model[] = {
	{"l1.w", 2, {784, 128}, w},
	{"l1.b", 1, {128}, b},
	{"step", 0, {0}, s},
	{"empty", 2, {0, 3}, NULL},
};
enum { NMODEL = sizeof model / sizeof model[0] };

static void fill(float k)
{
	for (int i = 0; i < 784 * 128; i++)
		w[i] = (i % 1000) * 0.001f * k - 0.5f;
	for (int i = 0; i < 128; i++)
		b[i] = -i * k;
	s[0] = 42 * k;
}

static int model_is(float k)
{
	float w0[784 * 128], b0[128], s0 = s[0];
	memcpy(w0, w, sizeof w);
	memcpy(b0, b, sizeof b);
	fill(k);
	int same = memcmp(w0, w, sizeof w) == 0 && memcmp(b0, b, sizeof b) == 0 && s0 == s[0];
	memcpy(w, w0, sizeof w);
	memcpy(b, b0, sizeof b);
	s[0] = s0;
	return same;
}

static void round_trip(void)
{
	fill(1);
	CHECK(nml_ckpt_save(P("a.safetensors"), model, NMODEL, err, sizeof err) == 0);
	CHECK(temp_files() == 0);
	fill(0);
	if (!check_report(nml_ckpt_load(P("a.safetensors"), model, NMODEL, err, sizeof err) == 0, __FILE__, __LINE__,
	                  "%s", err))
		return;
	CHECK(model_is(1));

	/* Header: u64 length, a multiple of 8, JSON padded with spaces, metadata, data right after. */
	size_t len;
	unsigned char *f = slurp(P("a.safetensors"), &len);
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | f[i];
	CHECK(hlen % 8 == 0);
	CHECK(len == 8 + hlen + sizeof w + sizeof b + sizeof s);
	CHECK(f[8] == '{');
	char *h = strndup((char *)f + 8, hlen);
	CHECK(strstr(h, "\"__metadata__\":{\"format\":\"nml\"}") != NULL);
	CHECK(strstr(h, "\"l1.w\":{\"dtype\":\"F32\",\"shape\":[784,128],\"data_offsets\":[0,401408]}") != NULL);
	CHECK(strstr(h, "\"step\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[401920,401924]}") != NULL);
	char *close = strrchr(h, '}');
	int spaces = 1;
	for (char *p = close + 1; *p; p++)
		spaces &= *p == ' ';
	CHECK(spaces);
	CHECK(memcmp(f + 8 + hlen, w, sizeof w) == 0);
	free(h);
	free(f);

	/* Permissions follow the umask like any new file, not mkstemp's 0600, and the save reads the
	 * umask without changing it. */
	struct stat st;
	mode_t mask = umask(027);
	int changes = umask_changes;
	CHECK(nml_ckpt_save(P("mode.safetensors"), model, NMODEL, err, sizeof err) == 0);
	CHECK(umask_changes == changes);
	umask(mask);
	CHECK(stat(P("mode.safetensors"), &st) == 0 && (st.st_mode & 0777) == 0640);

	/* Overwriting replaces the file; loading a subset is fine. */
	fill(2);
	CHECK(nml_ckpt_save(P("a.safetensors"), model, NMODEL, err, sizeof err) == 0);
	fill(0);
	CHECK(nml_ckpt_load(P("a.safetensors"), model, 2, err, sizeof err) == 0);
	CHECK(w[5] == (5 % 1000) * 0.001f * 2 - 0.5f && b[3] == -6 && s[0] == 0);
	CHECK(temp_files() == 0);

	/* A relative path in the current directory (the directory fsync uses "."). */
	char cwd[512];
	if (getcwd(cwd, sizeof cwd) && chdir(dir) == 0) {
		CHECK(nml_ckpt_save("rel.safetensors", model, 1, err, sizeof err) == 0);
		CHECK(chdir(cwd) == 0);
	}
	CHECK(access(P("rel.safetensors"), R_OK) == 0);
	CHECK(nml_ckpt_save(P("none.safetensors"), model, 0, err, sizeof err) == 0);
	CHECK(nml_ckpt_load(P("none.safetensors"), model, 0, err, sizeof err) == 0);
}

static void save_failures(void)
{
	fill(3);
	CHECK(nml_ckpt_save(P("keep.safetensors"), model, NMODEL, err, sizeof err) == 0);
	size_t len0, len1;
	unsigned char *before = slurp(P("keep.safetensors"), &len0);

	/* No such directory: nothing is created. */
	CHECK(nml_ckpt_save(P("no/such/dir/x.safetensors"), model, NMODEL, err, sizeof err) < 0);
	CHECK_ERR(err, "cannot save checkpoint");
	CHECK_ERR(err, "no/such/dir/x.safetensors");

	/* The write fails half way (file size limit, so it works as root too): the old file survives
	 * byte for byte and the temporary file is gone. */
	struct rlimit old, small;
	getrlimit(RLIMIT_FSIZE, &old);
	small = old;
	small.rlim_cur = 64 * 1024;
	void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
	CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);
	fill(4);
	int rc = nml_ckpt_save(P("keep.safetensors"), model, NMODEL, err, sizeof err);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, prev);
	CHECK(rc < 0);
	CHECK_ERR(err, "cannot save checkpoint");
	CHECK(temp_files() == 0);
	unsigned char *after = slurp(P("keep.safetensors"), &len1);
	CHECK(len0 == len1 && memcmp(before, after, len0) == 0);
	free(before);
	free(after);

	/* Tensors that cannot be described are refused before any file is made. */
	NmlTensorRef dup[] = {{"a", 1, {1}, s}, {"a", 1, {1}, s}};
	CHECK(nml_ckpt_save(P("dup.safetensors"), dup, 2, err, sizeof err) < 0);
	CHECK_ERR(err, "two tensors named 'a'");
	NmlTensorRef bad[] = {{"r", NML_MAXRANK + 1, {1}, s}, {"__metadata__", 1, {1}, s}, {NULL, 1, {1}, s}, {"neg", 1, {-1}, s},
	                      {"nodata", 1, {3}, NULL}};
	for (int i = 0; i < 5; i++) {
		CHECK(nml_ckpt_save(P("bad.safetensors"), &bad[i], 1, err, sizeof err) < 0);
		CHECK_ERR(err, "is invalid");
	}
	CHECK(access(P("dup.safetensors"), F_OK) != 0 && access(P("bad.safetensors"), F_OK) != 0);
	CHECK(temp_files() == 0);

	/* Odd names are JSON-escaped and come back. */
	float v = 7;
	NmlTensorRef odd = {"quote\"back\\slash\nnl", 1, {1}, &v};
	CHECK(nml_ckpt_save(P("odd.safetensors"), &odd, 1, err, sizeof err) == 0);
	v = 0;
	CHECK(nml_ckpt_load(P("odd.safetensors"), &odd, 1, err, sizeof err) == 0 && v == 7);
}

/* A file with this header text and nbytes of data (values 1, 2, 3, ...). */
static void handmade(const char *name, const char *json, size_t nbytes)
{
	size_t jl = strlen(json), hl = (jl + 7) / 8 * 8;
	unsigned char *buf = calloc(1, 8 + hl + nbytes);
	for (int i = 0; i < 8; i++)
		buf[i] = (unsigned char)((uint64_t)hl >> 8 * i);
	memcpy(buf + 8, json, jl);
	memset(buf + 8 + jl, ' ', hl - jl);
	for (size_t i = 0; i < nbytes / 4; i++) {
		float f = (float)(i + 1);
		memcpy(buf + 8 + hl + 4 * i, &f, 4);
	}
	spit(P(name), buf, 8 + hl + nbytes);
	free(buf);
}

static void load_failures(void)
{
	fill(5);
	CHECK(nml_ckpt_save(P("m.safetensors"), model, 2, err, sizeof err) == 0);
	fill(6);

	/* Missing and mis-shaped tensors are named, and nothing is loaded. */
	CHECK(nml_ckpt_load(P("m.safetensors"), model, NMODEL, err, sizeof err) < 0);
	char want[600];
	snprintf(want, sizeof want, "checkpoint %s has no tensor 'step'", P("m.safetensors"));
	CHECK_STR(err, want);
	CHECK(model_is(6));

	NmlTensorRef narrow = {"l1.w", 2, {784, 256}, NULL};
	CHECK(nml_ckpt_save(P("wide.safetensors"), &narrow, 1, err, sizeof err) < 0); /* no data: refused */
	float *big = calloc(784 * 256, sizeof *big);
	narrow.data = big;
	CHECK(nml_ckpt_save(P("wide.safetensors"), &narrow, 1, err, sizeof err) == 0);
	free(big);
	CHECK(nml_ckpt_load(P("wide.safetensors"), model, 1, err, sizeof err) < 0);
	snprintf(want, sizeof want, "tensor 'l1.w' has shape [784, 256] in %s, model expects [784, 128]",
	         P("wide.safetensors"));
	CHECK_STR(err, want);
	CHECK(nml_ckpt_load(P("m.safetensors"), &model[2], 1, err, sizeof err) < 0);
	CHECK_ERR(err, "has no tensor 'step'");
	NmlTensorRef b2 = {"l1.b", 2, {128, 1}, b};
	CHECK(nml_ckpt_load(P("m.safetensors"), &b2, 1, err, sizeof err) < 0);
	CHECK_ERR(err, "tensor 'l1.b' has shape [128] in");
	CHECK_ERR(err, "model expects [128, 1]");
	CHECK(model_is(6));

	/* Truncation: the data of the last tensor is cut short. */
	size_t len;
	unsigned char *f = slurp(P("m.safetensors"), &len);
	spit(P("cut.safetensors"), f, len - 4);
	CHECK(nml_ckpt_load(P("cut.safetensors"), model, 2, err, sizeof err) < 0);
	CHECK_ERR(err, "is truncated");
	CHECK_ERR(err, "'l1.b'");
	spit(P("cut.safetensors"), f, 100);
	CHECK(nml_ckpt_load(P("cut.safetensors"), model, 2, err, sizeof err) < 0);
	CHECK_ERR(err, "not a safetensors file or is truncated");
	spit(P("cut.safetensors"), f, 5);
	CHECK(nml_ckpt_load(P("cut.safetensors"), model, 2, err, sizeof err) < 0);
	CHECK_ERR(err, "too short");
	free(f);
	CHECK(model_is(6));

	/* Hand-made headers. */
	float v[4] = {0};
	NmlTensorRef t = {"t", 1, {2}, v};
	handmade("f16.st", "{\"t\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
	CHECK(nml_ckpt_load(P("f16.st"), &t, 1, err, sizeof err) < 0);
	CHECK_ERR(err, "tensor 't' has dtype F16 in");
	CHECK_ERR(err, "expects F32");

	handmade("ok.st", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},\"u\":{}}", 12);
	CHECK(nml_ckpt_load(P("ok.st"), &t, 1, err, sizeof err) == 0 && v[0] == 2 && v[1] == 3);

	const char *bad[] = {
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0.5,8.5]}}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1e300,1e300]}}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[1e400],\"data_offsets\":[0,8]}}",
		"{\"t\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}",
		"{\"t\":[1,2]}",
		"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}",
		"[1, 2, 3]",
		"not json",
	};
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		handmade("bad.st", bad[k], 8);
		v[0] = -1;
		int rc = nml_ckpt_load(P("bad.st"), &t, 1, err, sizeof err);
		check_report(rc < 0 && v[0] == -1 && strstr(err, P("bad.st")), __FILE__, __LINE__, "header %zu: rc %d, %s",
		             k, rc, err);
	}
	handmade("past.st", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 8);
	CHECK(nml_ckpt_load(P("past.st"), &t, 1, err, sizeof err) < 0);
	CHECK_ERR(err, "lies past the end of the file");

	/* A length field claiming a 2^63-byte header. */
	unsigned char huge[16] = {0, 0, 0, 0, 0, 0, 0, 0x80, '{', '}'};
	spit(P("huge.st"), huge, sizeof huge);
	CHECK(nml_ckpt_load(P("huge.st"), &t, 1, err, sizeof err) < 0);
	CHECK_ERR(err, "not a safetensors file");
	CHECK(nml_ckpt_load(P("absent.st"), &t, 1, err, sizeof err) < 0);
	CHECK_ERR(err, "cannot open checkpoint");
	CHECK(nml_ckpt_load(dir, &t, 1, err, sizeof err) < 0);
	CHECK_ERR(err, "not a regular file");
}

static int numpy(void)
{
	if (!check_have_numpy()) {
		printf("numpy not available to /usr/bin/python3, skipped\n");
		return 77;
	}
	fill(1);
	if (!check_report(nml_ckpt_save(P("np.safetensors"), model, NMODEL, err, sizeof err) == 0, __FILE__, __LINE__,
	                  "%s", err))
		return check_done();
	/* The reader below follows the safetensors format description, nothing NML-specific. */
	char cmd[2048];
	snprintf(cmd, sizeof cmd,
	         "/usr/bin/python3 -c \""
	         "import json, struct, sys, numpy as np\n"
	         "raw = open(sys.argv[1], 'rb').read()\n"
	         "n, = struct.unpack('<Q', raw[:8])\n"
	         "assert n %% 8 == 0\n"
	         "h = json.loads(raw[8:8 + n])\n"
	         "data = raw[8 + n:]\n"
	         "assert h.pop('__metadata__') == {'format': 'nml'}\n"
	         "t = {k: np.frombuffer(data[v['data_offsets'][0]:v['data_offsets'][1]], dtype='<f4').reshape(v['shape'])"
	         " for k, v in h.items() if v['dtype'] == 'F32'}\n"
	         "assert sorted(t) == ['empty', 'l1.b', 'l1.w', 'step'], sorted(t)\n"
	         "i = np.arange(784 * 128)\n"
	         "w = ((i %% 1000).astype(np.float32) * np.float32(0.001) - np.float32(0.5)).reshape(784, 128)\n"
	         "assert t['l1.w'].shape == (784, 128) and np.array_equal(t['l1.w'], w)\n"
	         "assert np.array_equal(t['l1.b'], -np.arange(128, dtype=np.float32))\n"
	         "assert t['step'].shape == () and t['step'] == 42\n"
	         "assert t['empty'].shape == (0, 3)\n"
	         "ends = sorted(v['data_offsets'] for v in h.values())\n"
	         "assert ends[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ends, ends[1:])) and ends[-1][1] == len(data)\n"
	         "\" '%s'",
	         P("np.safetensors"));
	CHECK(check_system(cmd) == 0);
	return check_done();
}

/* Metadata: pairs written beside the tensors, read back by key; "format" stays "nml". */
static void metadata(void)
{
	fill(3);
	NmlMeta meta[] = {{"epoch", "7"}, {"step", "1234"}, {"format", "other"}};
	CHECK(nml_ckpt_save_meta(P("meta.safetensors"), model, 3, meta, 3, err, sizeof err) == 0);
	char v[64];
	CHECK(nml_ckpt_meta(P("meta.safetensors"), "epoch", v, sizeof v, err, sizeof err) == 0);
	CHECK_STR(v, "7");
	CHECK(nml_ckpt_meta(P("meta.safetensors"), "step", v, sizeof v, err, sizeof err) == 0);
	CHECK_STR(v, "1234");
	CHECK(nml_ckpt_meta(P("meta.safetensors"), "format", v, sizeof v, err, sizeof err) == 0);
	CHECK_STR(v, "nml");
	CHECK(nml_ckpt_meta(P("meta.safetensors"), "seed", v, sizeof v, err, sizeof err) == 1);
	CHECK(nml_ckpt_meta(P("nope.safetensors"), "epoch", v, sizeof v, err, sizeof err) == -1);
	CHECK_ERR(err, "nope.safetensors");
	fill(0);
	CHECK(nml_ckpt_load(P("meta.safetensors"), model, 3, err, sizeof err) == 0 && model_is(3));

	/* A value that does not fit the caller's buffer is an error, not a truncated value (a learning
	 * rate written with 80 digits once loaded as its first 63, 0). A value that just fits is read. */
	char lr[81];
	memset(lr, '0', 80);
	memcpy(lr, "0.", 2);
	memcpy(lr + 75, "5e+72", 5);
	lr[80] = 0;
	char fits[64];
	memset(fits, '7', 63);
	fits[63] = 0;
	NmlMeta longer[] = {{"hparam.lr", lr}, {"fits", fits}};
	CHECK(nml_ckpt_save_meta(P("long.st"), model, 1, longer, 2, err, sizeof err) == 0);
	strcpy(v, "unchanged");
	CHECK(nml_ckpt_meta(P("long.st"), "hparam.lr", v, sizeof v, err, sizeof err) == -1);
	CHECK_ERR(err, P("long.st"));
	CHECK_ERR(err, "value of 'hparam.lr' is longer than 63 characters");
	CHECK_STR(v, "unchanged");
	char wide[81];
	CHECK(nml_ckpt_meta(P("long.st"), "hparam.lr", wide, sizeof wide, err, sizeof err) == 0);
	CHECK_STR(wide, lr);
	CHECK(nml_ckpt_meta(P("long.st"), "fits", v, sizeof v, err, sizeof err) == 0);
	CHECK_STR(v, fits);

	/* safetensors metadata maps strings to strings: a number (a step written as 3, not "3") is an
	 * error rather than absent, and so is metadata that is not an object. */
	handmade("num.st", "{\"__metadata__\":{\"format\":\"nml\",\"step\":3,\"seed\":null}}", 0);
	CHECK(nml_ckpt_meta(P("num.st"), "step", v, sizeof v, err, sizeof err) == -1);
	CHECK_ERR(err, P("num.st"));
	CHECK_ERR(err, "metadata 'step' is not a string");
	CHECK(nml_ckpt_meta(P("num.st"), "seed", v, sizeof v, err, sizeof err) == -1);
	CHECK_ERR(err, "metadata 'seed' is not a string");
	CHECK(nml_ckpt_meta(P("num.st"), "format", v, sizeof v, err, sizeof err) == 0);
	CHECK(nml_ckpt_meta(P("num.st"), "epoch", v, sizeof v, err, sizeof err) == 1);
	handmade("mdarr.st", "{\"__metadata__\":[\"step\",\"3\"]}", 0);
	CHECK(nml_ckpt_meta(P("mdarr.st"), "step", v, sizeof v, err, sizeof err) == -1);
	CHECK_ERR(err, "__metadata__ is not an object");
	handmade("nomd.st", "{}", 0);
	CHECK(nml_ckpt_meta(P("nomd.st"), "step", v, sizeof v, err, sizeof err) == 1);

	/* A header length past the end of the file is refused before anything is allocated for it. */
	unsigned char lie[16] = {0, 0, 0, 0x06, 0, 0, 0, 0, '{', '}'};
	spit(P("lie.st"), lie, sizeof lie);
	CHECK(nml_ckpt_meta(P("lie.st"), "step", v, sizeof v, err, sizeof err) == -1);
	CHECK_ERR(err, "not a safetensors file or is truncated");
}

/* A save writes regular files only: whatever else sits at the path is refused and left as it was,
 * and a symbolic link is written through (the file it leads to is replaced, the link stays). */
static void save_targets(void)
{
	fill(1);
	CHECK(mkdir(P("adir"), 0777) == 0);
	CHECK(nml_ckpt_save(P("adir"), model, NMODEL, err, sizeof err) < 0);
	CHECK_ERR(err, P("adir"));
	CHECK_ERR(err, "is a directory, not a regular file");
	CHECK(file_type(P("adir")) == S_IFDIR);

	CHECK(mkfifo(P("fifo"), 0666) == 0);
	CHECK(nml_ckpt_save(P("fifo"), model, NMODEL, err, sizeof err) < 0);
	CHECK_ERR(err, P("fifo"));
	CHECK_ERR(err, "is a FIFO");
	CHECK(file_type(P("fifo")) == S_IFIFO);

	int sock = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", P("sock"));
	if (check_report(sock >= 0 && bind(sock, (struct sockaddr *)&sa, sizeof sa) == 0, __FILE__, __LINE__,
	                 "bind %s", P("sock"))) {
		CHECK(nml_ckpt_save(P("sock"), model, NMODEL, err, sizeof err) < 0);
		CHECK_ERR(err, "is a socket");
		CHECK(file_type(P("sock")) == S_IFSOCK);
	}
	if (sock >= 0)
		close(sock);

	/* A device behind a link (as root, saving to /dev/full once replaced the device node; a link
	 * keeps this test from touching a device if the check regresses). */
	CHECK(symlink("/dev/null", P("null.st")) == 0);
	CHECK(nml_ckpt_save(P("null.st"), model, NMODEL, err, sizeof err) < 0);
	CHECK_ERR(err, P("null.st"));
	CHECK_ERR(err, "/dev/null is a character device");
	CHECK(is_link_to(P("null.st"), "/dev/null"));
	CHECK(file_type("/dev/null") == S_IFCHR);
	CHECK(temp_files() == 0);

	/* A relative link to a regular file: the file gets the new checkpoint, the link survives. */
	CHECK(nml_ckpt_save(P("real.st"), model, NMODEL, err, sizeof err) == 0);
	CHECK(symlink("real.st", P("link.st")) == 0);
	fill(2);
	CHECK(nml_ckpt_save(P("link.st"), model, NMODEL, err, sizeof err) == 0);
	CHECK(is_link_to(P("link.st"), "real.st"));
	fill(0);
	CHECK(nml_ckpt_load(P("real.st"), model, NMODEL, err, sizeof err) == 0 && model_is(2));
	CHECK(symlink(P("real.st"), P("abs.st")) == 0);
	fill(3);
	CHECK(nml_ckpt_save(P("abs.st"), model, NMODEL, err, sizeof err) == 0);
	CHECK(is_link_to(P("abs.st"), P("real.st")));
	fill(0);
	CHECK(nml_ckpt_load(P("real.st"), model, NMODEL, err, sizeof err) == 0 && model_is(3));

	/* A chain of links into another directory, ending at a file that does not exist yet: it is
	 * created there, and the temporary file was made there too (a rename cannot cross file
	 * systems, and the target's directory is the one that must hold it). */
	CHECK(mkdir(P("sub"), 0777) == 0);
	CHECK(symlink("target.st", P("sub/hop.st")) == 0);
	CHECK(symlink("sub/hop.st", P("chain.st")) == 0);
	fill(4);
	CHECK(nml_ckpt_save(P("chain.st"), model, NMODEL, err, sizeof err) == 0);
	CHECK(is_link_to(P("chain.st"), "sub/hop.st") && is_link_to(P("sub/hop.st"), "target.st"));
	CHECK(file_type(P("sub/target.st")) == S_IFREG);
	fill(0);
	CHECK(nml_ckpt_load(P("sub/target.st"), model, NMODEL, err, sizeof err) == 0 && model_is(4));
	CHECK(temp_files() == 0 && temp_files_in(P("sub")) == 0);

	/* A link to a directory, and a loop of links. */
	CHECK(symlink("adir", P("dirlink.st")) == 0);
	CHECK(nml_ckpt_save(P("dirlink.st"), model, NMODEL, err, sizeof err) < 0);
	CHECK_ERR(err, "adir is a directory");
	CHECK(is_link_to(P("dirlink.st"), "adir"));
	CHECK(symlink("loop2.st", P("loop1.st")) == 0 && symlink("loop1.st", P("loop2.st")) == 0);
	CHECK(nml_ckpt_save(P("loop1.st"), model, NMODEL, err, sizeof err) < 0);
	CHECK_ERR(err, P("loop1.st"));
	CHECK_ERR(err, "symbolic links");
	CHECK(is_link_to(P("loop1.st"), "loop2.st") && is_link_to(P("loop2.st"), "loop1.st"));
	CHECK(temp_files() == 0);
}

/* The pid of a process that has exited and been reaped. */
static pid_t dead_pid(void)
{
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	waitpid(pid, NULL, 0);
	return pid;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

/* Temporary files of writers that were killed are removed by the next save of that checkpoint;
 * those of live writers and of other checkpoints stay. */
static void stale_temps(void)
{
	char name[128];
	pid_t dead = dead_pid();
	snprintf(name, sizeof name, "s.st.tmp.%d.AbC123", (int)dead);
	spit(P(name), "x", 1);
	char live[128], other[128];
	snprintf(live, sizeof live, "s.st.tmp.%d.AbC123", (int)getpid());
	spit(P(live), "x", 1);
	snprintf(other, sizeof other, "other.st.tmp.%d.AbC123", (int)dead);
	spit(P(other), "x", 1);
	spit(P("s.st.tmp.AbC123"), "x", 1); /* no pid: its writer is unknown */
	fill(1);
	CHECK(nml_ckpt_save(P("s.st"), model, NMODEL, err, sizeof err) == 0);
	CHECK(!exists(P(name)));
	CHECK(exists(P(live)) && exists(P(other)) && exists(P("s.st.tmp.AbC123")));
	unlink(P(live));
	unlink(P(other));
	unlink(P("s.st.tmp.AbC123"));

	/* A writer killed half way (by the file size limit's signal, so it works as root): its
	 * temporary file carries its pid, and the next save removes it. */
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		struct rlimit small = {64 * 1024, 64 * 1024}, core = {0, 0};
		setrlimit(RLIMIT_CORE, &core);
		setrlimit(RLIMIT_FSIZE, &small);
		signal(SIGXFSZ, SIG_DFL);
		nml_ckpt_save(P("k.st"), model, NMODEL, err, sizeof err);
		_exit(0);
	}
	int status;
	CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGXFSZ);
	snprintf(name, sizeof name, "k.st.tmp.%d.", (int)pid);
	int found = 0;
	DIR *d = opendir(dir);
	for (struct dirent *e; (e = readdir(d));)
		found += strncmp(e->d_name, name, strlen(name)) == 0;
	closedir(d);
	CHECK(found == 1 && temp_files() == 1);
	CHECK(nml_ckpt_save(P("k.st"), model, NMODEL, err, sizeof err) == 0);
	CHECK(temp_files() == 0);
}

/* Saves from several threads at once: each checkpoint gets the mode the umask gives, and the
 * process umask never changes, not even for a moment (reading it with umask(0); umask(mask) once let
 * a concurrent save see 0 and write a 0666 checkpoint, or left the process umask at 0). The main
 * thread creates files while the saves run: each must get 0644 too. */
enum { RACE_THREADS = 3, RACE_SAVES = 400 };
static int race_bad[RACE_THREADS], race_failed[RACE_THREADS], race_running;

static void *race_saver(void *arg)
{
	int id = (int)(intptr_t)arg;
	char path[600], e[512];
	float v[4] = {1, 2, 3, 4};
	NmlTensorRef t = {"v", 1, {4}, v};
	snprintf(path, sizeof path, "%s/race%d.st", dir, id);
	for (int i = 0; i < RACE_SAVES; i++) {
		struct stat st;
		if (nml_ckpt_save(path, &t, 1, e, sizeof e) < 0) {
			race_failed[id]++;
			continue;
		}
		if (stat(path, &st) != 0 || (st.st_mode & 0777) != 0644)
			race_bad[id]++;
	}
	__atomic_fetch_sub(&race_running, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void umask_race(void)
{
	mode_t old = umask(022);
	pthread_t th[RACE_THREADS];
	race_running = RACE_THREADS;
	for (int i = 0; i < RACE_THREADS; i++)
		pthread_create(&th[i], NULL, race_saver, (void *)(intptr_t)i);
	int own_bad = 0, probes = 0;
	while (__atomic_load_n(&race_running, __ATOMIC_SEQ_CST) > 0) {
		int fd = open(P("plain"), O_WRONLY | O_CREAT | O_TRUNC, 0666);
		struct stat st;
		if (fd >= 0 && fstat(fd, &st) == 0 && (st.st_mode & 0777) != 0644)
			own_bad++;
		if (fd >= 0)
			close(fd);
		unlink(P("plain"));
		probes++;
	}
	int bad = 0, failed = 0;
	for (int i = 0; i < RACE_THREADS; i++) {
		pthread_join(th[i], NULL);
		bad += race_bad[i];
		failed += race_failed[i];
	}
	mode_t now = umask(old);
	check_report(failed == 0 && bad == 0 && own_bad == 0 && now == 022, __FILE__, __LINE__,
	             "%d saves failed; with a mode other than 0644: %d checkpoints, %d of %d other files; umask %03o",
	             failed, bad, own_bad, probes, (unsigned)now);
}

/* Reading refuses anything but a regular file at once: a FIFO used to block forever. */
static void load_targets(void)
{
	float v[4] = {0};
	NmlTensorRef t = {"t", 1, {2}, v};
	char value[64];
	watchdog(10);
	CHECK(nml_ckpt_load(P("fifo"), &t, 1, err, sizeof err) < 0);
	CHECK_ERR(err, P("fifo"));
	CHECK_ERR(err, "is a FIFO, not a regular file");
	CHECK(nml_ckpt_meta(P("fifo"), "step", value, sizeof value, err, sizeof err) < 0);
	CHECK_ERR(err, "is a FIFO, not a regular file");
	CHECK(nml_ckpt_load("/dev/null", &t, 1, err, sizeof err) < 0);
	CHECK_ERR(err, "checkpoint /dev/null is a character device");
	CHECK(nml_ckpt_meta("/dev/null", "step", value, sizeof value, err, sizeof err) < 0);
	CHECK_ERR(err, "checkpoint /dev/null is a character device");
	CHECK(nml_ckpt_meta(dir, "step", value, sizeof value, err, sizeof err) < 0);
	CHECK_ERR(err, "is a directory");
	alarm(0);

	CHECK(nml_ckpt_save(NULL, &t, 1, err, sizeof err) < 0);
	CHECK_ERR(err, "no checkpoint path");
	CHECK(nml_ckpt_load(NULL, &t, 1, err, sizeof err) < 0);
	CHECK_ERR(err, "no checkpoint path");
	CHECK(nml_ckpt_meta(NULL, "step", value, sizeof value, err, sizeof err) < 0);
	CHECK_ERR(err, "no checkpoint path");
}

int main(int argc, char **argv)
{
	check_tmpdir(dir, sizeof dir);
	int rc;
	if (argc > 1 && strcmp(argv[1], "--numpy") == 0) {
		rc = numpy();
	} else {
		round_trip();
		save_failures();
		load_failures();
		metadata();
		save_targets();
		stale_temps();
		umask_race();
		load_targets();
		rc = check_done();
	}
	check_rmtree(dir);
	return rc;
}

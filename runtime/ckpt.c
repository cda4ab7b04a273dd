/* ckpt.c: checkpoints as safetensors files (https://github.com/huggingface/safetensors), so numpy,
 * PyTorch and the safetensors library read them without NML.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON (padded with spaces to a multiple of 8
 * so the data that follows is aligned), then the tensors' raw little-endian bytes back to back, each
 * located by data_offsets relative to the end of the header. */
#include "nmlrt.h"
#include "rtutil.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum {
	CKPT_MAX_RANK = NML_MAXRANK, /* NmlTensorRef.shape */
	CKPT_SHOW_RANK = 8,        /* longest shape an error message quotes */
	CKPT_CHUNK = 1 << 14,      /* floats per byte-swapped write on big-endian hosts */
	CKPT_MAX_LINKS = 40,       /* symbolic links followed to the target: Linux's own limit (ELOOP) */
	CKPT_TEMP_TRIES = 100,     /* names tried for the temporary file before giving up */
	CKPT_SUFFIX = 6,           /* random characters ending a temporary file's name, as mkstemp's */
};

/* The safetensors reference implementation refuses headers over 100 MB; so do we. */
#define CKPT_MAX_HEADER (100u << 20)
/* Offsets travel through JSON doubles: integers are exact up to 2^53. */
#define CKPT_MAX_OFFSET 9007199254740992.0

#define CKPT_LITTLE (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)

/* Elements of t, or -1 if the count does not fit the format or memory (so its bytes fit a size_t). */
static int64_t ckpt_numel(const NmlTensorRef *t)
{
	int64_t n = 1;
	size_t bytes;
	for (int i = 0; i < t->rank; i++)
		if (t->shape[i] < 0 || __builtin_mul_overflow(n, t->shape[i], &n))
			return -1;
	if ((uint64_t)n > SIZE_MAX || __builtin_mul_overflow((size_t)n, sizeof(float), &bytes))
		return -1;
	return (double)bytes <= CKPT_MAX_OFFSET ? n : -1;
}

static void ckpt_shape_str(const int64_t *shape, int rank, char *buf, size_t len)
{
	size_t n = snprintf(buf, len, "[");
	for (int i = 0; i < rank && n < len; i++)
		n += snprintf(buf + n, len - n, i ? ", %lld" : "%lld", (long long)shape[i]);
	if (n < len)
		snprintf(buf + n, len - n, "]");
}

static uint32_t ckpt_bswap_f32(float f)
{
	uint32_t b;
	memcpy(&b, &f, sizeof b);
	return __builtin_bswap32(b);
}

static int ckpt_write_floats(FILE *f, const float *p, int64_t n)
{
	if (n == 0)
		return 0;
	if (CKPT_LITTLE)
		return fwrite(p, sizeof *p, (size_t)n, f) == (size_t)n ? 0 : -1;
	uint32_t buf[CKPT_CHUNK];
	while (n > 0) {
		int64_t k = n < CKPT_CHUNK ? n : CKPT_CHUNK;
		for (int64_t i = 0; i < k; i++)
			buf[i] = ckpt_bswap_f32(p[i]);
		if (fwrite(buf, sizeof *buf, (size_t)k, f) != (size_t)k)
			return -1;
		p += k;
		n -= k;
	}
	return 0;
}

/* The JSON header, unpadded; NULL with err set if the tensors cannot be described. */
static char *ckpt_header(const char *path, const NmlTensorRef *t, int count, const NmlMeta *meta, int nmeta,
			 char *err, size_t errlen)
{
	cJSON *root = cJSON_CreateObject();
	char *json = NULL;
	double offset = 0;
	if (!root)
		goto oom;
	for (int i = 0; i < count; i++) {
		int64_t numel = t[i].rank >= 0 && t[i].rank <= CKPT_MAX_RANK ? ckpt_numel(&t[i]) : -1;
		if (!t[i].name || !*t[i].name || strcmp(t[i].name, "__metadata__") == 0 || numel < 0 ||
		    (numel > 0 && !t[i].data)) {
			rt_error(err, errlen, "cannot save checkpoint %s: tensor %d ('%s') is invalid", path, i,
			           t[i].name ? t[i].name : "(null)");
			goto fail;
		}
		for (int j = 0; j < i; j++)
			if (strcmp(t[i].name, t[j].name) == 0) {
				rt_error(err, errlen, "cannot save checkpoint %s: two tensors named '%s'", path, t[i].name);
				goto fail;
			}
		double end = offset + (double)numel * sizeof(float);
		if (end > CKPT_MAX_OFFSET) {
			rt_error(err, errlen, "cannot save checkpoint %s: too much data", path);
			goto fail;
		}
		cJSON *e = cJSON_AddObjectToObject(root, t[i].name), *shape, *offs;
		if (!e || !cJSON_AddStringToObject(e, "dtype", "F32") || !(shape = cJSON_AddArrayToObject(e, "shape")))
			goto oom;
		for (int d = 0; d < t[i].rank; d++) {
			cJSON *v = cJSON_CreateNumber((double)t[i].shape[d]);
			if (!v || !cJSON_AddItemToArray(shape, v))
				goto oom;
		}
		if (!(offs = cJSON_AddArrayToObject(e, "data_offsets")))
			goto oom;
		cJSON *b = cJSON_CreateNumber(offset), *x = cJSON_CreateNumber(end);
		if (!b || !cJSON_AddItemToArray(offs, b) || !x || !cJSON_AddItemToArray(offs, x))
			goto oom;
		offset = end;
	}
	cJSON *md = cJSON_AddObjectToObject(root, "__metadata__");
	if (!md || !cJSON_AddStringToObject(md, "format", "nml"))
		goto oom;
	for (int i = 0; i < nmeta; i++)
		if (strcmp(meta[i].key, "format") != 0 && !cJSON_AddStringToObject(md, meta[i].key, meta[i].value))
			goto oom;
	if (!(json = cJSON_PrintUnformatted(root)))
		goto oom;
	cJSON_Delete(root);
	return json;
oom:
	rt_error(err, errlen, "out of memory saving checkpoint %s", path);
fail:
	cJSON_Delete(root);
	return NULL;
}

/* The directory part of path ("." for a bare name, "/" for a name in the root); NULL if out of memory. */
static char *ckpt_dirname(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
}

/* fsync the directory holding path, so the rename itself survives a crash. */
static int ckpt_sync_dir(const char *path)
{
	char *dir = ckpt_dirname(path);
	if (!dir)
		return -1;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (fd < 0)
		return -1;
	/* Some file systems cannot sync a directory (EINVAL); there is nothing more to do there. */
	int rc = fsync(fd) < 0 && errno != EINVAL ? -1 : 0;
	int saved = errno;
	if (close(fd) < 0 && rc == 0)
		return -1;
	errno = saved;
	return rc;
}

/* The text of symbolic link path (st: its lstat); NULL with errno set on failure. */
static char *ckpt_readlink(const char *path, const struct stat *st)
{
	/* st_size is the link's length, except on file systems (procfs) that report 0. */
	size_t cap = st->st_size > 0 ? (size_t)st->st_size + 1 : 256;
	for (;;) {
		char *buf = malloc(cap);
		if (!buf)
			return NULL;
		ssize_t n = readlink(path, buf, cap);
		if (n >= 0 && (size_t)n < cap) {
			buf[n] = 0;
			return buf;
		}
		int saved = errno;
		free(buf);
		errno = saved;
		if (n < 0 || __builtin_mul_overflow(cap, 2, &cap))
			return NULL;
	}
}

/* The file a save replaces: path, or where its chain of symbolic links ends, since renaming over a
 * link would replace the link and leave the file it leads to stale. That must be a regular file or a
 * name not taken yet: renaming over a device, FIFO or socket would replace it (as root, a save to
 * /dev/full replaced the device node with a checkpoint). NULL with err set otherwise. */
static char *ckpt_target(const char *path, char *err, size_t errlen)
{
	char *target = strdup(path);
	for (int links = 0; target; links++) {
		struct stat st;
		if (lstat(target, &st) < 0) {
			if (errno == ENOENT) /* a new file; if its directory is missing, creating it says so */
				return target;
			rt_error(err, errlen, "cannot save checkpoint %s: %s", path, strerror(errno));
			goto fail;
		}
		if (S_ISREG(st.st_mode))
			return target;
		if (!S_ISLNK(st.st_mode)) {
			if (links == 0)
				rt_error(err, errlen, "cannot save checkpoint %s: it is %s, not a regular file", path,
				         rt_file_kind(st.st_mode));
			else
				rt_error(err, errlen, "cannot save checkpoint %s: %s is %s, not a regular file", path, target,
				         rt_file_kind(st.st_mode));
			goto fail;
		}
		if (links == CKPT_MAX_LINKS) {
			rt_error(err, errlen, "cannot save checkpoint %s: %s", path, strerror(ELOOP));
			goto fail;
		}
		char *link = ckpt_readlink(target, &st);
		if (!link) {
			rt_error(err, errlen, "cannot save checkpoint %s: reading link %s: %s", path, target, strerror(errno));
			goto fail;
		}
		/* A relative link is relative to the directory holding it. */
		const char *slash = strrchr(target, '/');
		size_t keep = link[0] != '/' && slash ? (size_t)(slash - target) + 1 : 0, llen = strlen(link);
		char *next = malloc(keep + llen + 1);
		if (next) {
			memcpy(next, target, keep);
			memcpy(next + keep, link, llen + 1);
		}
		free(link);
		free(target);
		target = next;
	}
	rt_error(err, errlen, "out of memory saving checkpoint %s", path);
	return NULL;
fail:
	free(target);
	return NULL;
}

/* A name for a temporary file: the clock and a counter, scrambled (splitmix64's finalizer). Only
 * collisions matter, and O_EXCL catches those. */
static uint64_t ckpt_random(void)
{
	static uint64_t counter;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t z = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30 ^
	             __atomic_add_fetch(&counter, 0x9e3779b97f4a7c15u, __ATOMIC_RELAXED);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

static const char ckpt_alnum[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* Creates target.tmp.PID.XXXXXX for writing; *tmp gets its name. The pid lets a later save tell a
 * killed writer's leftover from a file being written right now. Mode 0666, so the kernel applies the
 * umask (or the directory's default ACL) as to any new file: the umask cannot be read without setting
 * it, and setting it, even for a moment, changes the mode of files other threads create meanwhile
 * (mkstemp's 0600 then fchmod needed it: two models saving at once made 0666 checkpoints). Returns
 * the descriptor, or -1 with errno set. */
static int ckpt_create_temp(const char *target, char **tmp)
{
	size_t cap = strlen(target) + sizeof ".tmp." + 3 * sizeof(long) + 1 + CKPT_SUFFIX;
	char *name = malloc(cap);
	if (!name) {
		errno = ENOMEM;
		return -1;
	}
	for (int i = 0; i < CKPT_TEMP_TRIES; i++) {
		char suffix[CKPT_SUFFIX + 1];
		uint64_t r = ckpt_random();
		for (int k = 0; k < CKPT_SUFFIX; k++, r /= sizeof ckpt_alnum - 1)
			suffix[k] = ckpt_alnum[r % (sizeof ckpt_alnum - 1)];
		suffix[CKPT_SUFFIX] = 0;
		snprintf(name, cap, "%s.tmp.%ld.%s", target, (long)getpid(), suffix);
		int fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
		if (fd >= 0) {
			*tmp = name;
			return fd;
		}
		if (errno != EEXIST)
			break;
	}
	int saved = errno;
	free(name);
	errno = saved;
	return -1;
}

/* Whether name is base.tmp.PID.XXXXXX (the names ckpt_create_temp makes); *pid gets PID. */
static int ckpt_temp_name(const char *name, const char *base, size_t blen, long *pid)
{
	if (strncmp(name, base, blen) != 0 || strncmp(name + blen, ".tmp.", 5) != 0)
		return 0;
	const char *p = name + blen + 5;
	char *end;
	if (*p < '1' || *p > '9')
		return 0;
	errno = 0;
	*pid = strtol(p, &end, 10);
	if (errno || *pid > INT_MAX || *end != '.' || strlen(end + 1) != CKPT_SUFFIX ||
	    strspn(end + 1, ckpt_alnum) != CKPT_SUFFIX)
		return 0;
	return 1;
}

/* Removes temporary files of this checkpoint left by writers that are gone (kill -9 during a save
 * left one in a third of the kills). A writer that is alive, or alive under another user (EPERM),
 * keeps its file; so does a name without a pid. Processes in another pid namespace or on another
 * host sharing the directory look gone: their save then fails at the rename, and the checkpoint is
 * still never torn. Best effort: failing to clean up does not fail the save. */
static void ckpt_remove_stale(const char *target)
{
	char *dir = ckpt_dirname(target);
	DIR *d = dir ? opendir(dir) : NULL;
	free(dir);
	if (!d)
		return;
	const char *slash = strrchr(target, '/'), *base = slash ? slash + 1 : target;
	size_t blen = strlen(base);
	struct dirent *e;
	while ((e = readdir(d))) {
		long pid;
		if (ckpt_temp_name(e->d_name, base, blen, &pid) && kill((pid_t)pid, 0) < 0 && errno == ESRCH)
			unlinkat(dirfd(d), e->d_name, 0);
	}
	closedir(d);
}

int nml_ckpt_check_save(const char *path, char *err, size_t errlen)
{
	if (!path)
		return rt_error(err, errlen, "no checkpoint path (NULL)");
	char *target = ckpt_target(path, err, errlen), *tmp = NULL;
	if (!target)
		return -1;
	/* What a save does first, undone: a missing directory, permissions, a read-only file system or a
	 * directory in which files cannot be made (/proc) fail here as they would there. */
	int fd = ckpt_create_temp(target, &tmp), rc = 0;
	if (fd < 0)
		rc = rt_error(err, errlen, "cannot save checkpoint %s: %s", path, strerror(errno));
	else {
		close(fd);
		unlink(tmp);
	}
	free(tmp);
	free(target);
	return rc;
}

int nml_ckpt_save(const char *path, const NmlTensorRef *t, int count, char *err, size_t errlen)
{
	return nml_ckpt_save_meta(path, t, count, NULL, 0, err, errlen);
}

int nml_ckpt_save_meta(const char *path, const NmlTensorRef *t, int count, const NmlMeta *meta, int nmeta,
		       char *err, size_t errlen)
{
	if (!path)
		return rt_error(err, errlen, "no checkpoint path (NULL)");
	if (count < 0)
		return rt_error(err, errlen, "cannot save checkpoint %s: negative tensor count", path);
	char *json = ckpt_header(path, t, count, meta, nmeta, err, errlen);
	if (!json)
		return -1;
	size_t jlen = strlen(json), hlen = (jlen + 7) / 8 * 8;
	char *target = ckpt_target(path, err, errlen), *tmp = NULL;
	if (!target) {
		free(json);
		return -1;
	}
	ckpt_remove_stale(target);

	/* Write beside the target and rename over it: readers see the old file or the new one, never a
	 * torn one, and a failure leaves the old file as it was. */
	int fd = ckpt_create_temp(target, &tmp);
	if (fd < 0)
		goto io_fail;
	FILE *f = fdopen(fd, "wb");
	if (!f) {
		int saved = errno;
		close(fd);
		errno = saved;
		goto io_fail;
	}
	unsigned char len8[8];
	for (int i = 0; i < 8; i++)
		len8[i] = (unsigned char)((uint64_t)hlen >> 8 * i);
	int bad = fwrite(len8, 1, 8, f) != 8 || fwrite(json, 1, jlen, f) != jlen;
	for (size_t i = jlen; i < hlen && !bad; i++)
		bad = fputc(' ', f) == EOF;
	for (int i = 0; i < count && !bad; i++)
		bad = ckpt_write_floats(f, t[i].data, ckpt_numel(&t[i])) < 0;
	bad = bad || fflush(f) != 0 || fsync(fileno(f)) != 0;
	int saved = errno;
	if (fclose(f) != 0 && !bad) {
		bad = 1;
		saved = errno;
	}
	errno = saved;
	if (bad || rename(tmp, target) != 0)
		goto io_fail;
	int synced = ckpt_sync_dir(target);
	saved = errno;
	free(tmp);
	free(target);
	free(json);
	if (synced < 0)
		return rt_error(err, errlen, "checkpoint %s was written but its directory could not be synced: %s", path,
		                strerror(saved));
	return 0;
io_fail:
	rt_error(err, errlen, "cannot save checkpoint %s: %s", path, strerror(errno));
	if (tmp)
		unlink(tmp);
	free(tmp);
	free(target);
	free(json);
	return -1;
}

/* A JSON number that is an exact integer in [0, 2^53]. */
static int ckpt_uint(const cJSON *v, double *out)
{
	if (!cJSON_IsNumber(v))
		return 0;
	double d = v->valuedouble;
	if (!(d >= 0 && d <= CKPT_MAX_OFFSET) || d != (double)(int64_t)d)
		return 0;
	*out = d;
	return 1;
}

/* Checks one tensor's entry against what the model expects; *begin gets its data offset. */
static int ckpt_check(const char *path, const cJSON *root, const NmlTensorRef *t, double data_bytes, double *begin,
                      char *err, size_t errlen)
{
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, t->name);
	if (!e)
		return rt_error(err, errlen, "checkpoint %s has no tensor '%s'", path, t->name);
	const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
	const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
	const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
	if (!cJSON_IsObject(e) || !cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) ||
	    cJSON_GetArraySize(offs) != 2)
		return rt_error(err, errlen, "checkpoint %s has a malformed entry for tensor '%s'", path, t->name);
	if (strcmp(dtype->valuestring, "F32") != 0)
		return rt_error(err, errlen, "tensor '%s' has dtype %.32s in %s, model expects F32", t->name,
		                  dtype->valuestring, path);

	int64_t dims[CKPT_SHOW_RANK] = {0}; /* gcc cannot see that a rank-0 shape reads none */
	int rank = 0, same = 1;
	const cJSON *v;
	cJSON_ArrayForEach(v, shape) {
		double d;
		if (!ckpt_uint(v, &d))
			return rt_error(err, errlen, "checkpoint %s has a malformed shape for tensor '%s'", path, t->name);
		if (rank < CKPT_SHOW_RANK)
			dims[rank] = (int64_t)d;
		same &= rank < t->rank && (int64_t)d == t->shape[rank];
		rank++;
	}
	if (!same || rank != t->rank) {
		char got[128], want[128];
		ckpt_shape_str(dims, rank < CKPT_SHOW_RANK ? rank : CKPT_SHOW_RANK, got, sizeof got);
		if (rank > CKPT_SHOW_RANK)
			snprintf(got, sizeof got, "rank %d", rank);
		ckpt_shape_str(t->shape, t->rank, want, sizeof want);
		return rt_error(err, errlen, "tensor '%s' has shape %s in %s, model expects %s", t->name, got, path, want);
	}

	double b, x;
	int64_t numel = ckpt_numel(t);
	if (!ckpt_uint(cJSON_GetArrayItem(offs, 0), &b) || !ckpt_uint(cJSON_GetArrayItem(offs, 1), &x) || b > x ||
	    numel < 0 || x - b != (double)numel * sizeof(float))
		return rt_error(err, errlen, "checkpoint %s has bad data offsets for tensor '%s'", path, t->name);
	if (x > data_bytes)
		return rt_error(err, errlen, "checkpoint %s is truncated (tensor '%s' lies past the end of the file)", path,
		                  t->name);
	*begin = b;
	return 0;
}

/* An open checkpoint: the file, positioned after the header, and the header parsed. */
typedef struct CkptFile {
	FILE *f;
	uint64_t size, hlen; /* bytes in the file and in the header */
	cJSON *root;
} CkptFile;

static void ckpt_close(CkptFile *c)
{
	cJSON_Delete(c->root);
	if (c->f)
		fclose(c->f);
	*c = (CkptFile){0};
}

/* Opens a checkpoint and parses its header: 0, or -1 with err set and nothing left open. */
static int ckpt_open(const char *path, CkptFile *c, const char *doing, char *err, size_t errlen)
{
	*c = (CkptFile){0};
	if (!path)
		return rt_error(err, errlen, "no checkpoint path (NULL)");
	struct stat st;
	char *header = NULL;
	int fd = rt_open_regular(path, "checkpoint ", &st, err, errlen);
	if (fd < 0)
		return -1;
	if (!(c->f = fdopen(fd, "rb"))) {
		close(fd);
		return rt_error(err, errlen, "out of memory %s checkpoint %s", doing, path);
	}
	c->size = (uint64_t)st.st_size;
	unsigned char len8[8];
	if (fread(len8, 1, 8, c->f) != 8) {
		rt_error(err, errlen, "checkpoint %s is not a safetensors file (too short)", path);
		goto fail;
	}
	for (int i = 7; i >= 0; i--)
		c->hlen = c->hlen << 8 | len8[i];
	if (c->hlen > CKPT_MAX_HEADER || c->hlen > c->size - 8) {
		rt_error(err, errlen, "checkpoint %s is not a safetensors file or is truncated (header length %llu)", path,
		         (unsigned long long)c->hlen);
		goto fail;
	}
	if (!(header = malloc(c->hlen + 1))) {
		rt_error(err, errlen, "out of memory %s checkpoint %s", doing, path);
		goto fail;
	}
	if (fread(header, 1, c->hlen, c->f) != c->hlen) {
		rt_error(err, errlen, "cannot read checkpoint %s", path);
		goto fail;
	}
	c->root = cJSON_ParseWithLength(header, c->hlen);
	free(header);
	header = NULL;
	if (!cJSON_IsObject(c->root)) {
		rt_error(err, errlen, "checkpoint %s has a malformed header", path);
		goto fail;
	}
	return 0;
fail:
	free(header);
	ckpt_close(c);
	return -1;
}

int nml_ckpt_load(const char *path, const NmlTensorRef *t, int count, char *err, size_t errlen)
{
	CkptFile c;
	if (ckpt_open(path, &c, "loading", err, errlen) < 0)
		return -1;
	double *begin = NULL;
	size_t bytes;
	int rc = -1;
	if (__builtin_mul_overflow(count > 0 ? (size_t)count : 1, sizeof *begin, &bytes) || !(begin = malloc(bytes))) {
		rt_error(err, errlen, "out of memory loading checkpoint %s", path);
		goto out;
	}

	/* Check every tensor before touching any, so a failed load leaves the model as it was. */
	double data_bytes = (double)(c.size - 8 - c.hlen);
	for (int i = 0; i < count; i++)
		if (ckpt_check(path, c.root, &t[i], data_bytes, &begin[i], err, errlen) < 0)
			goto out;
	for (int i = 0; i < count; i++) {
		size_t numel = (size_t)ckpt_numel(&t[i]); /* checked by ckpt_check */
		if (numel == 0)
			continue;
		if (fseeko(c.f, (off_t)(8 + c.hlen) + (off_t)begin[i], SEEK_SET) != 0 ||
		    fread(t[i].data, sizeof(float), numel, c.f) != numel) {
			rt_error(err, errlen, "cannot read tensor '%s' from checkpoint %s", t[i].name, path);
			goto out;
		}
		if (!CKPT_LITTLE)
			for (size_t k = 0; k < numel; k++) {
				uint32_t b = ckpt_bswap_f32(t[i].data[k]);
				memcpy(&t[i].data[k], &b, sizeof b);
			}
	}
	rc = 0;
out:
	free(begin);
	ckpt_close(&c);
	return rc;
}

int nml_ckpt_meta(const char *path, const char *key, char *value, size_t len, char *err, size_t errlen)
{
	if (!key || !value || len == 0)
		return rt_error(err, errlen, "nml_ckpt_meta: no key or no room for the value");
	CkptFile c;
	if (ckpt_open(path, &c, "reading", err, errlen) < 0)
		return -1;
	/* safetensors metadata maps strings to strings; anything else is a damaged or foreign file, and
	 * ignoring it would quietly drop a setting (a step written as the number 3 was never read). */
	const cJSON *md = cJSON_GetObjectItemCaseSensitive(c.root, "__metadata__");
	const cJSON *v = cJSON_IsObject(md) ? cJSON_GetObjectItemCaseSensitive(md, key) : NULL;
	int rc = 1;
	if (md && !cJSON_IsObject(md))
		rc = rt_error(err, errlen, "checkpoint %s: __metadata__ is not an object", path);
	else if (v && !cJSON_IsString(v))
		rc = rt_error(err, errlen, "checkpoint %s: metadata '%s' is not a string", path, key);
	else if (v && strlen(v->valuestring) >= len)
		/* A truncated number is a different number (a learning rate read as its first 63 digits). */
		rc = rt_error(err, errlen, "checkpoint %s: value of '%s' is longer than %zu characters", path, key, len - 1);
	else if (v) {
		memcpy(value, v->valuestring, strlen(v->valuestring) + 1);
		rc = 0;
	}
	ckpt_close(&c);
	return rc;
}

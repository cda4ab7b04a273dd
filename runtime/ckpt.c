/* ckpt.c: checkpoints as safetensors files (https://github.com/huggingface/safetensors), so numpy,
 * PyTorch and the safetensors library read them without NML.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON (padded with spaces to a multiple of 8
 * so the data that follows is aligned), then the tensors' raw little-endian bytes back to back, each
 * located by data_offsets relative to the end of the header. */
#include "nmlrt.h"
#include "rtutil.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
	CKPT_MAX_RANK = 4,         /* NmlTensorRef.shape */
	CKPT_SHOW_RANK = 8,        /* longest shape an error message quotes */
	CKPT_CHUNK = 1 << 14,      /* floats per byte-swapped write on big-endian hosts */
};

/* The safetensors reference implementation refuses headers over 100 MB; so do we. */
#define CKPT_MAX_HEADER (100u << 20)
/* Offsets travel through JSON doubles: integers are exact up to 2^53. */
#define CKPT_MAX_OFFSET 9007199254740992.0

#define CKPT_LITTLE (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)

/* Elements of t, or -1 if the count does not fit the format. */
static int64_t ckpt_numel(const NmlTensorRef *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->rank; i++)
		if (t->shape[i] < 0 || __builtin_mul_overflow(n, t->shape[i], &n))
			return -1;
	return (double)n * sizeof(float) <= CKPT_MAX_OFFSET ? n : -1;
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

/* fsync the directory holding path, so the rename itself survives a crash. */
static int ckpt_sync_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
	if (!dir)
		return -1;
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	free(dir);
	if (fd < 0)
		return -1;
	/* Some file systems cannot sync a directory (EINVAL); there is nothing more to do there. */
	int rc = fsync(fd) < 0 && errno != EINVAL ? -1 : 0;
	close(fd);
	return rc;
}

int nml_ckpt_save(const char *path, const NmlTensorRef *t, int count, char *err, size_t errlen)
{
	return nml_ckpt_save_meta(path, t, count, NULL, 0, err, errlen);
}

int nml_ckpt_save_meta(const char *path, const NmlTensorRef *t, int count, const NmlMeta *meta, int nmeta,
		       char *err, size_t errlen)
{
	if (count < 0)
		return rt_error(err, errlen, "cannot save checkpoint %s: negative tensor count", path);
	char *json = ckpt_header(path, t, count, meta, nmeta, err, errlen);
	if (!json)
		return -1;
	size_t jlen = strlen(json), hlen = (jlen + 7) / 8 * 8;

	/* Write beside the target and rename over it: readers see the old file or the new one, never a
	 * torn one, and a failure leaves the old file as it was. */
	size_t plen = strlen(path);
	char *tmp = malloc(plen + sizeof ".tmp.XXXXXX");
	if (!tmp) {
		free(json);
		return rt_error(err, errlen, "out of memory saving checkpoint %s", path);
	}
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
	int fd = mkstemp(tmp);
	if (fd < 0) {
		rt_error(err, errlen, "cannot save checkpoint %s: %s", path, strerror(errno));
		free(tmp);
		free(json);
		return -1;
	}
	/* mkstemp creates 0600; give the checkpoint the permissions an ordinary new file would get. */
	mode_t mask = umask(0);
	umask(mask);
	fchmod(fd, 0666 & ~mask);

	FILE *f = fdopen(fd, "wb");
	if (!f) {
		close(fd);
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
	if (bad || rename(tmp, path) != 0)
		goto io_fail;
	free(tmp);
	free(json);
	if (ckpt_sync_dir(path) < 0)
		return rt_error(err, errlen, "checkpoint %s was written but its directory could not be synced: %s", path,
		                  strerror(errno));
	return 0;
io_fail:
	rt_error(err, errlen, "cannot save checkpoint %s: %s", path, strerror(errno));
	unlink(tmp);
	free(tmp);
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

	int64_t dims[CKPT_SHOW_RANK];
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

int nml_ckpt_load(const char *path, const NmlTensorRef *t, int count, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return rt_error(err, errlen, "cannot open checkpoint %s: %s", path, strerror(errno));
	char *header = NULL;
	cJSON *root = NULL;
	double *begin = NULL;
	int rc = -1;

	struct stat st;
	unsigned char len8[8];
	if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode)) {
		rt_error(err, errlen, "checkpoint %s is not a regular file", path);
		goto out;
	}
	if (fread(len8, 1, 8, f) != 8) {
		rt_error(err, errlen, "checkpoint %s is not a safetensors file (too short)", path);
		goto out;
	}
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | len8[i];
	if (hlen > CKPT_MAX_HEADER || hlen > (uint64_t)st.st_size - 8) {
		rt_error(err, errlen, "checkpoint %s is not a safetensors file or is truncated (header length %llu)",
		           path, (unsigned long long)hlen);
		goto out;
	}
	if (!(header = malloc(hlen + 1)) || !(begin = malloc((count > 0 ? count : 1) * sizeof *begin))) {
		rt_error(err, errlen, "out of memory loading checkpoint %s", path);
		goto out;
	}
	if (fread(header, 1, hlen, f) != hlen) {
		rt_error(err, errlen, "cannot read checkpoint %s", path);
		goto out;
	}
	root = cJSON_ParseWithLength(header, hlen);
	if (!cJSON_IsObject(root)) {
		rt_error(err, errlen, "checkpoint %s has a malformed header", path);
		goto out;
	}

	/* Check every tensor before touching any, so a failed load leaves the model as it was. */
	double data_bytes = (double)((uint64_t)st.st_size - 8 - hlen);
	for (int i = 0; i < count; i++)
		if (ckpt_check(path, root, &t[i], data_bytes, &begin[i], err, errlen) < 0)
			goto out;
	for (int i = 0; i < count; i++) {
		size_t numel = (size_t)ckpt_numel(&t[i]);
		if (numel == 0)
			continue;
		if (fseeko(f, (off_t)(8 + hlen) + (off_t)begin[i], SEEK_SET) != 0 ||
		    fread(t[i].data, sizeof(float), numel, f) != numel) {
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
	cJSON_Delete(root);
	free(header);
	free(begin);
	fclose(f);
	return rc;
}

int nml_ckpt_meta(const char *path, const char *key, char *value, size_t len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return rt_error(err, errlen, "cannot open checkpoint %s: %s", path, strerror(errno));
	unsigned char len8[8];
	uint64_t hlen = 0;
	char *header = NULL;
	cJSON *root = NULL;
	int rc = -1;
	if (fread(len8, 1, 8, f) != 8) {
		rt_error(err, errlen, "checkpoint %s is not a safetensors file (too short)", path);
		goto out;
	}
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | len8[i];
	if (hlen > CKPT_MAX_HEADER || !(header = malloc(hlen + 1)) || fread(header, 1, hlen, f) != hlen) {
		rt_error(err, errlen, "checkpoint %s is not a safetensors file or is truncated", path);
		goto out;
	}
	root = cJSON_ParseWithLength(header, hlen);
	if (!cJSON_IsObject(root)) {
		rt_error(err, errlen, "checkpoint %s has a malformed header", path);
		goto out;
	}
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "__metadata__"), key);
	rc = 1;
	if (cJSON_IsString(v)) {
		snprintf(value, len, "%s", v->valuestring);
		rc = 0;
	}
out:
	cJSON_Delete(root);
	free(header);
	fclose(f);
	return rc;
}

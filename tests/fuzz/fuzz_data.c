/* fuzz_data.c: the data readers (runtime/data.c) on fuzzed files. The first byte picks the reader,
 * the rest is the file, handed over as /proc/self/fd/N of a memfd (a regular file, as the readers
 * require):
 *   0  NPY x, with tests/data/blobs_y.npy for y     1  NPY y, with tests/data/blobs_x.npy for x
 *   2  CSV, label last, classes                     3  CSV, label first, regression
 *   4  IDX images, with labels made to match        5  IDX labels, with 1x1 images made to match
 * A reader's error is expected output; a crash, a sanitizer report or a leak is a finding. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"
#include "nmlrt.h"

static int memfd_with(const void *data, size_t size, char *file, size_t len)
{
	int fd = memfd_create("fuzz-data", 0);
	if (fd >= 0 && write(fd, data, size) != (ssize_t)size) {
		close(fd);
		fd = -1;
	}
	snprintf(file, len, "/proc/self/fd/%d", fd);
	return fd;
}

/* The other file of an IDX pair: its count taken from the fuzzed file's header (bytes 4 to 7, big
 * endian), so that both can be read; zeros past a header of magic and count (and 1x1 for images). */
static int idx_partner(const uint8_t *fuzzed, size_t size, int images, char *file, size_t len)
{
	uint32_t n = size >= 8 ? (uint32_t)fuzzed[4] << 24 | fuzzed[5] << 16 | fuzzed[6] << 8 | fuzzed[7] : 0;
	if (n > 4096)
		n = 4096;
	uint8_t buf[16 + 4096] = {0, 0, 8, images ? 3 : 1, n >> 24, n >> 16 & 255, n >> 8 & 255, n & 255, 0, 0, 0, 1, 0, 0, 0, 1};
	return memfd_with(buf, (images ? 16 : 8) + n, file, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > FUZZ_MAX_INPUT)
		return 0;
	char file[64], other[64], err[512];
	int fd = memfd_with(data + 1, size - 1, file, sizeof file), fd2 = -1;
	if (fd < 0)
		return 0;
	NmlData d = {0};
	int rc;
	switch (data[0] % 6) {
	case 0: rc = nml_data_load_npy(&d, file, NML_SOURCE_DIR "/tests/data/blobs_y.npy", err, sizeof err); break;
	case 1: rc = nml_data_load_npy(&d, NML_SOURCE_DIR "/tests/data/blobs_x.npy", file, err, sizeof err); break;
	case 2: rc = nml_data_load_csv(&d, file, -1, 0, err, sizeof err); break;
	case 3: rc = nml_data_load_csv(&d, file, 0, 1, err, sizeof err); break;
	case 4:
		fd2 = idx_partner(data + 1, size - 1, 0, other, sizeof other);
		rc = nml_data_load_idx(&d, file, other, err, sizeof err);
		break;
	default:
		fd2 = idx_partner(data + 1, size - 1, 1, other, sizeof other);
		rc = nml_data_load_idx(&d, other, file, err, sizeof err);
		break;
	}
	if (getenv("NML_FUZZ_VERBOSE"))
		fprintf(stderr, "fuzz-data: reader %d: %s\n", data[0] % 6, rc ? err : "read");
	nml_data_free(&d);
	close(fd);
	if (fd2 >= 0)
		close(fd2);
	return 0;
}

/* rng.c: Philox-4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3",
 * SC 2011). A stream is the key (the seed) plus the high half of the counter (the stream id); the low
 * half counts blocks, so every number is a pure function of (seed, stream, position). */
#include "nmlrt.h"

#include <math.h>

/* Multipliers and Weyl key increments from the paper (Random123's PHILOX_M4x32_*, PHILOX_W32_*). */
#define PHILOX_M0 UINT32_C(0xD2511F53)
#define PHILOX_M1 UINT32_C(0xCD9E8D57)
#define PHILOX_W0 UINT32_C(0x9E3779B9) /* golden ratio */
#define PHILOX_W1 UINT32_C(0xBB67AE85) /* sqrt(3) - 1 */

void nml_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
	uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
	uint32_t k0 = key[0], k1 = key[1];
	for (int round = 0; round < 10; round++) {
		uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
		uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
		uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
		uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
		c0 = n0;
		c1 = (uint32_t)p1;
		c2 = n2;
		c3 = (uint32_t)p0;
		k0 += PHILOX_W0;
		k1 += PHILOX_W1;
	}
	out[0] = c0;
	out[1] = c1;
	out[2] = c2;
	out[3] = c3;
}

double nml_step_uniform(uint64_t seed, double t, uint32_t stream, int64_t index)
{
	/* The top bit of the last counter word keeps these apart from the shuffling and initialization
	 * streams of nml_rng_init, whose last word is 0 or a small block number. */
	uint32_t ctr[4] = {(uint32_t)index, (uint32_t)((uint64_t)index >> 32), (uint32_t)(int64_t)t,
			   stream | UINT32_C(0x80000000)};
	uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)}, out[4];
	nml_philox4x32(ctr, key, out);
	return (double)(out[0] >> 8) * 0x1p-24;
}

void nml_rng_init(NmlRng *r, uint64_t seed, uint64_t stream)
{
	r->key[0] = (uint32_t)seed;
	r->key[1] = (uint32_t)(seed >> 32);
	r->ctr[0] = 0;
	r->ctr[1] = 0;
	r->ctr[2] = (uint32_t)stream;
	r->ctr[3] = (uint32_t)(stream >> 32);
	r->avail = 0;
}

uint32_t nml_rng_u32(NmlRng *r)
{
	if (r->avail <= 0) {
		nml_philox4x32(r->ctr, r->key, r->buf);
		/* 2^64 blocks per stream: the carry never reaches the stream words in practice. */
		if (++r->ctr[0] == 0)
			r->ctr[1]++;
		r->avail = 4;
	}
	return r->buf[4 - r->avail--];
}

static uint64_t rng_u64(NmlRng *r)
{
	uint64_t hi = nml_rng_u32(r);
	return hi << 32 | nml_rng_u32(r);
}

double nml_rng_uniform(NmlRng *r)
{
	/* 27 + 26 bits, as in genrand_res53: k / 2^53 for a uniform k in [0, 2^53). */
	uint32_t a = nml_rng_u32(r) >> 5, b = nml_rng_u32(r) >> 6;
	return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

double nml_rng_normal(NmlRng *r)
{
	/* Box-Muller, cosine branch only: the sine partner is dropped so the generator state stays the
	 * four Philox words, which keeps checkpointing and stream positions simple. 1 - u lies in (0, 1],
	 * so the log is finite. */
	double u1 = 1.0 - nml_rng_uniform(r), u2 = nml_rng_uniform(r);
	return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}

/* A uniform integer in [0, range), range >= 1, without modulo bias. */
static uint64_t rng_below(NmlRng *r, uint64_t range)
{
	if (range <= UINT32_MAX) {
		/* Lemire, "Fast random integer generation in an interval" (2019). */
		uint32_t s = (uint32_t)range;
		uint64_t m = (uint64_t)nml_rng_u32(r) * s;
		uint32_t lo = (uint32_t)m;
		if (lo < s) {
			uint32_t threshold = -s % s;
			while (lo < threshold) {
				m = (uint64_t)nml_rng_u32(r) * s;
				lo = (uint32_t)m;
			}
		}
		return m >> 32;
	}
	/* Beyond 2^32 rows: mask to the next power of two and reject, at most 2 draws expected. */
	uint64_t mask = range - 1;
	mask |= mask >> 1, mask |= mask >> 2, mask |= mask >> 4;
	mask |= mask >> 8, mask |= mask >> 16, mask |= mask >> 32;
	uint64_t v;
	do
		v = rng_u64(r) & mask;
	while (v >= range);
	return v;
}

void nml_rng_shuffle(NmlRng *r, int64_t *idx, int64_t n)
{
	for (int64_t i = n - 1; i > 0; i--) {
		int64_t j = (int64_t)rng_below(r, (uint64_t)i + 1);
		int64_t tmp = idx[i];
		idx[i] = idx[j];
		idx[j] = tmp;
	}
}

void nml_epoch_order(uint64_t seed, int epoch, int64_t *idx, int64_t n)
{
	/* Stream e belongs to epoch e, so a resumed run shuffles exactly as an uninterrupted one. */
	NmlRng r;
	nml_rng_init(&r, seed, (uint64_t)epoch);
	for (int64_t i = 0; i < n; i++)
		idx[i] = i;
	if (epoch >= 0)
		nml_rng_shuffle(&r, idx, n);
}

void nml_init_values(NmlInit init, uint64_t seed, NmlBlock block, uint64_t index, double *out, int64_t n)
{
	uint64_t stream = 0; /* the block's place among the MODEL blocks */
	for (int b = 0; b < (int)block; b++)
		stream += nml_block_kind((NmlBlock)b) == NML_BK_MODEL;
	NmlRng r;
	nml_rng_init(&r, seed, (stream << 32) + index);
	for (int64_t j = 0; j < n; j++) {
		switch (init.kind) {
		case NML_INIT_CONST: out[j] = init.a; break;
		case NML_INIT_NORMAL: out[j] = init.a + init.b * nml_rng_normal(&r); break;
		case NML_INIT_UNIFORM: out[j] = init.a + (init.b - init.a) * nml_rng_uniform(&r); break;
		}
	}
}

/* test_rng.c: Philox known answers, stream independence, uniform/normal moments, shuffling. */
#include "check.h"

#include <math.h>

#include "nmlrt.h"

static void known_answers(void)
{
	/* Random123's kat_vectors for philox4x32_10. */
	static const struct {
		uint32_t ctr[4], key[2], out[4];
	} kat[] = {
		{{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
		{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
		 {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
		{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
		 {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
	};
	for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
		uint32_t out[4];
		nml_philox4x32(kat[i].ctr, kat[i].key, out);
		for (int w = 0; w < 4; w++)
			check_report(out[w] == kat[i].out[w], __FILE__, __LINE__,
			             "kat %zu word %d: %08x, want %08x", i, w, out[w], kat[i].out[w]);
	}

	/* The stream hands out the block words in order: seed 0, stream 0 starts at counter 0. */
	NmlRng r;
	nml_rng_init(&r, 0, 0);
	CHECK(nml_rng_u32(&r) == 0x6627e8d5);
	CHECK(nml_rng_u32(&r) == 0xe169c58d);
	CHECK(nml_rng_u32(&r) == 0xbc57ac4c);
	CHECK(nml_rng_u32(&r) == 0x9b00dbd8);
	uint32_t ctr1[4] = {1, 0, 0, 0}, key0[2] = {0, 0}, b1[4];
	nml_philox4x32(ctr1, key0, b1);
	CHECK(nml_rng_u32(&r) == b1[0]);

	/* Seed goes to the key, stream to the high counter words. */
	uint64_t seed = 0x299f31d0a4093822ull, stream = 0x0370734413198a2eull;
	uint32_t ctr[4] = {0, 0, 0x13198a2e, 0x03707344}, key[2] = {0xa4093822, 0x299f31d0}, want[4];
	nml_philox4x32(ctr, key, want);
	nml_rng_init(&r, seed, stream);
	int same = 1;
	for (int w = 0; w < 4; w++)
		same &= nml_rng_u32(&r) == want[w];
	CHECK(same);
}

static void determinism(void)
{
	NmlRng a, b, c;
	nml_rng_init(&a, 42, 7);
	nml_rng_init(&b, 42, 7);
	nml_rng_init(&c, 42, 8);
	int same = 1, diff = 0;
	for (int i = 0; i < 1000; i++) {
		uint32_t x = nml_rng_u32(&a), y = nml_rng_u32(&b), z = nml_rng_u32(&c);
		same &= x == y;
		diff += x != z;
	}
	CHECK(same);
	CHECK(diff > 990);

	/* A copied state continues identically (what a checkpoint relies on). */
	NmlRng d = a;
	double u = nml_rng_uniform(&a), v = nml_rng_uniform(&d);
	CHECK(u == v);
}

static void moments(void)
{
	NmlRng r;
	nml_rng_init(&r, 12345, 1);
	enum { N = 1000000 };
	double s = 0, s2 = 0, lo = 1, hi = 0;
	for (int i = 0; i < N; i++) {
		double u = nml_rng_uniform(&r);
		s += u;
		s2 += u * u;
		lo = u < lo ? u : lo;
		hi = u > hi ? u : hi;
	}
	double mean = s / N, var = s2 / N - mean * mean;
	/* Standard errors: mean 0.29/sqrt(N) = 3e-4, variance about 9e-5; allow 5 sigma and more. */
	CHECK(fabs(mean - 0.5) < 2e-3);
	CHECK(fabs(var - 1.0 / 12) < 1e-3);
	CHECK(lo >= 0 && hi < 1);
	CHECK(lo < 1e-4 && hi > 1 - 1e-4);

	s = s2 = 0;
	double s3 = 0, s4 = 0;
	int finite = 1;
	for (int i = 0; i < N; i++) {
		double z = nml_rng_normal(&r);
		finite &= isfinite(z);
		s += z, s2 += z * z, s3 += z * z * z, s4 += z * z * z * z;
	}
	mean = s / N, var = s2 / N - mean * mean;
	CHECK(finite);
	CHECK(fabs(mean) < 5e-3);
	CHECK(fabs(var - 1) < 1e-2);
	CHECK(fabs(s3 / N) < 2e-2);
	CHECK(fabs(s4 / N - 3) < 5e-2);
}

static void shuffling(void)
{
	enum { N = 1000 };
	int64_t idx[N];
	int seen[N] = {0};
	for (int i = 0; i < N; i++)
		idx[i] = i;
	NmlRng r;
	nml_rng_init(&r, 1, 1);
	nml_rng_shuffle(&r, idx, N);
	int perm = 1, moved = 0;
	for (int i = 0; i < N; i++) {
		if (idx[i] < 0 || idx[i] >= N || seen[idx[i]]++)
			perm = 0;
		moved += idx[i] != i;
	}
	CHECK(perm);
	CHECK(moved > N - 20);

	/* Same seed and stream: the same permutation. */
	int64_t again[N];
	for (int i = 0; i < N; i++)
		again[i] = i;
	nml_rng_init(&r, 1, 1);
	nml_rng_shuffle(&r, again, N);
	CHECK(memcmp(idx, again, sizeof idx) == 0);

	/* Edge sizes do nothing odd. */
	int64_t one = 5;
	nml_rng_shuffle(&r, &one, 1);
	nml_rng_shuffle(&r, NULL, 0);
	CHECK(one == 5);

	/* Every position of a 3-element shuffle is uniform: 6 permutations, 60000 draws. */
	int count[3][3] = {{0}};
	for (int k = 0; k < 60000; k++) {
		int64_t p[3] = {0, 1, 2};
		nml_rng_shuffle(&r, p, 3);
		for (int i = 0; i < 3; i++)
			count[i][p[i]]++;
	}
	int fair = 1;
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 3; j++)
			fair &= abs(count[i][j] - 20000) < 600; /* sd about 115 */
	CHECK(fair);
}

int main(void)
{
	known_answers();
	determinism();
	moments();
	shuffling();
	return check_done();
}

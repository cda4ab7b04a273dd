#!/usr/bin/python3
"""Writes the small data sets the tests train and check gradients on (committed; rerun to remake)."""
import numpy as np

rng = np.random.default_rng(7)
n, d, k = 96, 6, 3
centers = rng.normal(0, 2, (k, d))
y = rng.integers(0, k, n)
x = (centers[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
np.save("blobs_x.npy", x)
np.save("blobs_y.npy", y.astype(np.int64))
w = rng.normal(0, 1, (d, 2))
t = (np.tanh(x @ w) + 0.1 * rng.normal(0, 1, (n, 2))).astype(np.float32)
np.save("reg_t.npy", t)

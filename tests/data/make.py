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

# The same samples as CSV: a header, features then the class; and a regression file whose first
# column is the first target.
with open("blobs.csv", "w") as f:
    f.write("f1,f2,f3,f4,f5,f6,class\n")
    for i in range(n):
        f.write(",".join("%.9g" % v for v in x[i]) + ",%d\n" % y[i])
with open("reg.csv", "w") as f:
    for i in range(n):
        f.write("%.9g," % t[i, 0] + ",".join("%.9g" % v for v in x[i]) + "\n")

# Small two-channel images for the convolution and pooling layers: the class is which quadrant
# holds the brightest blob.
m = 48
img_y = rng.integers(0, 3, m)
img = rng.normal(0, 0.5, (m, 2, 7, 7))
for i in range(m):
    r, c = [(1, 1), (1, 5), (5, 3)][img_y[i]]
    img[i, :, r - 1:r + 2, c - 1:c + 2] += 1.5
np.save("img_x.npy", img.astype(np.float32))
np.save("img_y.npy", img_y.astype(np.int64))

"""Fashion-MNIST as nmlc reads it: the gzip'd IDX files of Debian's dataset-fashion-mnist, pixels
scaled to [0, 1], labels as int64 class indices."""
import gzip
import os

import numpy as np

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(int)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(prefix, shape=(-1, 784)):
    """x [n, 784] float32 (or `shape`, e.g. (-1, 1, 28, 28)) and y [n] int64, as torch tensors."""
    import torch

    x = read_idx(f"{prefix}-images-idx3-ubyte.gz").reshape(shape).astype(np.float32)
    x /= 255  # in place: a second full-size copy would count in the peak memory row
    y = read_idx(f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)

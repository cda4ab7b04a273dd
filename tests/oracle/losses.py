#!/usr/bin/python3
"""Oracle: std.loss's losses with torch's options against torch.nn.functional.

Through models.py's harness (which see for what is compared and the tolerances): a Linear(6, 3)
`s` on tests/data's blobs (after the input offset a), and where the loss needs more inputs the
heads `t` and `r` (Linear(6, 3) of x), trained for 10 steps of plain SGD by the loss alone; each
epoch's train and test loss, the parameters, and the last gradient of every parameter (t's and r's
included: the derivative with respect to targets, second inputs and negatives) must match torch's.
Class weights are a buffer `cw` ([0.3, 1, 2.5]) written into the starting checkpoint.

nll_loss against F.nll_loss (weights, ignore_index); cross_entropy_weighted against
F.cross_entropy (weights, ignore_index, label smoothing, together); bce against
F.binary_cross_entropy (hard and soft targets); poisson_nll against F.poisson_nll_loss (log
input or not, full); cosine_embedding against F.cosine_embedding_loss (both labels, margin);
margin_ranking against F.margin_ranking_loss; triplet_margin against F.triplet_margin_loss (p = 2,
1, 3; swap; margin); kl_div against F.kl_div (probabilities with zeros, log targets, 'mean' and
'batchmean').

Usage: losses.py NMLC [PREFIX...]
"""
import os
import sys
import warnings

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle  # noqa: E402,F401  (exits 77, skipped, when numpy or torch is missing)
import models  # noqa: E402
from models import Case  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

warnings.filterwarnings("ignore", "reduction: 'mean' divides the total loss")  # kl_div's 'mean', on purpose

HEADS = ("t", "r")
CLASS_WEIGHTS = np.array([0.3, 1.0, 2.5])


def onehot(y):
    return F.one_hot(y, 3).to(torch.float32)


def loss_case(name, nml, fn):
    """nml: the loss of model(x) (s), model.t(x), model.r(x), model.cw and y; fn(s, t, r, cw, y):
    torch's."""
    heads = [h for h in HEADS if f"model.{h}(" in nml]
    members = "  s = Linear(6, 3)\n" + "".join(f"  {h} = Linear(6, 3)\n" for h in heads)
    weighted = "model.cw" in nml
    if weighted:
        members += "  buffer cw[3] = 1\n"

    def init(rng):
        d = {}
        for h in ("s",) + tuple(heads):
            d[h + ".w"] = rng.uniform(-0.4, 0.4, (6, 3))
            d[h + ".b"] = rng.uniform(-0.4, 0.4, 3)
        return d

    def forward(p, b, x, training):
        s = (x + p["a"]) @ p["s.w"] + p["s.b"]
        t, r = ((x @ p[h + ".w"] + p[h + ".b"]) if h in heads else None for h in HEADS)
        return s, t, r, b.get("cw")

    return Case(name, members.rstrip("\n"), "    return s(h)", init, forward,
                buffers={"cw": CLASS_WEIGHTS} if weighted else None, data=("blobs_x", "blobs_y"), head=False,
                raw=True, loss=(nml, lambda out, y: fn(*out, y)))


lsm, sm = F.log_softmax, F.softmax

CASES = [
    loss_case("nll", "nll_loss(log_softmax(model(x)), y)", lambda s, t, r, cw, y: F.nll_loss(lsm(s, -1), y)),
    loss_case("nll-weight", "nll_loss(log_softmax(model(x)), y, model.cw)",
              lambda s, t, r, cw, y: F.nll_loss(lsm(s, -1), y, weight=cw)),
    loss_case("nll-weight-ignore", "nll_loss(log_softmax(model(x)), y, model.cw, ignore_index = 1)",
              lambda s, t, r, cw, y: F.nll_loss(lsm(s, -1), y, weight=cw, ignore_index=1)),
    loss_case("ce-weight", "cross_entropy_weighted(model(x), y, model.cw)",
              lambda s, t, r, cw, y: F.cross_entropy(s, y, weight=cw)),
    loss_case("ce-ignore", "cross_entropy_weighted(model(x), y, ignore_index = 0)",
              lambda s, t, r, cw, y: F.cross_entropy(s, y, ignore_index=0)),
    loss_case("ce-smoothing", "cross_entropy_weighted(model(x), y, smoothing = 0.1)",
              lambda s, t, r, cw, y: F.cross_entropy(s, y, label_smoothing=0.1)),
    loss_case("ce-weight-ignore-smoothing",
              "cross_entropy_weighted(model(x), y, model.cw, ignore_index = 2, smoothing = 0.2)",
              lambda s, t, r, cw, y: F.cross_entropy(s, y, weight=cw, ignore_index=2, label_smoothing=0.2)),
    loss_case("bce", "bce(sigmoid(model(x)), onehot(y, 3))",
              lambda s, t, r, cw, y: F.binary_cross_entropy(torch.sigmoid(s), onehot(y))),
    loss_case("bce-soft", "bce(sigmoid(model(x)), sigmoid(model.t(x)))",
              lambda s, t, r, cw, y: F.binary_cross_entropy(torch.sigmoid(s), torch.sigmoid(t))),
    loss_case("poisson", "poisson_nll(model(x), 2 * onehot(y, 3))",
              lambda s, t, r, cw, y: F.poisson_nll_loss(s, 2 * onehot(y))),
    loss_case("poisson-no-log", "poisson_nll(exp(model(x)), 2 * onehot(y, 3), log_input = 0)",
              lambda s, t, r, cw, y: F.poisson_nll_loss(torch.exp(s), 2 * onehot(y), log_input=False)),
    loss_case("poisson-full", "poisson_nll(model(x), 3 * exp(model.t(x)), full = 1)",
              lambda s, t, r, cw, y: F.poisson_nll_loss(s, 3 * torch.exp(t), full=True)),
    loss_case("cosine", "cosine_embedding(model(x), model.t(x), 2 * (y == 0) - 1)",
              lambda s, t, r, cw, y: F.cosine_embedding_loss(s, t, 2 * (y == 0).long() - 1)),
    loss_case("cosine-margin", "cosine_embedding(model(x), model.t(x), 1 - 2 * (y == 1), margin = 0.2)",
              lambda s, t, r, cw, y: F.cosine_embedding_loss(s, t, 1 - 2 * (y == 1).long(), margin=0.2)),
    loss_case("margin-ranking", "margin_ranking(model(x), model.t(x), 2 * onehot(y, 3) - 1, margin = 0.3)",
              lambda s, t, r, cw, y: F.margin_ranking_loss(s, t, 2 * onehot(y) - 1, margin=0.3)),
    loss_case("triplet", "triplet_margin(model(x), model.t(x), model.r(x))",
              lambda s, t, r, cw, y: F.triplet_margin_loss(s, t, r)),
    loss_case("triplet-p1-swap", "triplet_margin(model(x), model.t(x), model.r(x), margin = 0.8, p = 1, swap = 1)",
              lambda s, t, r, cw, y: F.triplet_margin_loss(s, t, r, margin=0.8, p=1, swap=True)),
    loss_case("triplet-p3", "triplet_margin(model(x), model.t(x), model.r(x), margin = 2, p = 3)",
              lambda s, t, r, cw, y: F.triplet_margin_loss(s, t, r, margin=2, p=3)),
    loss_case("kl", "kl_div(log_softmax(model(x)), softmax(model.t(x)))",
              lambda s, t, r, cw, y: F.kl_div(lsm(s, -1), sm(t, -1))),
    loss_case("kl-zero-targets", "kl_div(log_softmax(model(x)), 0.8 * onehot(y, 3) + 0.2 * reshape(y == 0, [1]))",
              lambda s, t, r, cw, y: F.kl_div(lsm(s, -1), 0.8 * onehot(y) + 0.2 * (y == 0).float()[:, None])),
    loss_case("kl-log-target-batchmean",
              "kl_div(log_softmax(model(x)), log_softmax(model.t(x)), log_target = 1, batchmean = 1)",
              lambda s, t, r, cw, y: F.kl_div(lsm(s, -1), lsm(t, -1), reduction="batchmean", log_target=True)),
    loss_case("kl-batchmean", "kl_div(log_softmax(model(x)), softmax(model.t(x)), batchmean = 1)",
              lambda s, t, r, cw, y: F.kl_div(lsm(s, -1), sm(t, -1), reduction="batchmean")),
]


if __name__ == "__main__":
    sys.exit(models.main(CASES))

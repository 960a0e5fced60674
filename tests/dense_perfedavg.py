"""The dense numpy reference of Per-FedAvg's kernels (`clients.kernels.meta_train`, `adapt`):
Fallah et al. 2020's MAML-style local meta-training and the personalization step.

Meta-training learns a model that is good after one gradient step of size `alpha` on a
client's own data. Each meta-step uses distinct batches: D to take the inner step, D' to
evaluate it, and (Hessian-free variant) D'' for a finite-difference Hessian-vector product.

Steps are counted like FedAvg's: an epoch makes one outer step per minibatch of the epoch
(ceil(n / batch_size)), the batches taken cyclically (`meta_batches`), so each batch is once
D, once D' (and once D''). Walking the epoch in disjoint pairs instead made half as many
outer steps per epoch, so for the same budget (lr, local-epochs) the meta-model was less
trained than FedAvg's model; now both take the same number of steps, and meta-training
computes two (three) gradients per step.
"""

from __future__ import annotations

import numpy as np

from clients.data import Split
from core.params import Params, copy_params
from tests.dense_training import batch_slices, gradient

FD_DELTA = 1e-3  # finite-difference step of the Hessian-vector product


def _axpy(a: float, x: Params, y: Params) -> Params:
    """y + a * x, key by key."""
    return {k: (y[k] + np.float32(a) * x[k]).astype(np.float32) for k in y}


def meta_batches(epoch: list[np.ndarray], per_step: int) -> list[tuple[np.ndarray, ...]]:
    """One epoch's meta-steps: one per batch of the epoch, step i taking batches i, i+1, ...
    (`per_step` of them, cyclically), so the steps equal FedAvg's SGD steps on the same data.

    With fewer batches than a step needs (tiny data), batches repeat within a step.
    """
    m = len(epoch)
    return [tuple(epoch[(i + j) % m] for j in range(per_step)) for i in range(m)]


def meta_train(
    params: Params,
    split: Split,
    *,
    alpha: float,
    beta: float,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
    variant: str = "first-order",
) -> tuple[Params, float]:
    """Local Per-FedAvg meta-training; returns the meta-model and the last epoch's post-step loss."""
    per_step = 3 if variant == "hessian-free" else 2
    w, x, y = copy_params(params), split.x, split.y
    loss_sum, seen = 0.0, 0
    for epoch in batch_slices(len(split), epochs, batch_size, rng):
        loss_sum, seen = 0.0, 0
        for step in meta_batches(epoch, per_step):
            inner, outer = step[0], step[1]
            g_inner, _ = gradient(w, x[inner], y[inner])
            g_outer, loss = gradient(_axpy(-alpha, g_inner, w), x[outer], y[outer])
            if variant == "hessian-free":
                hv_rows = step[2]
                g_plus, _ = gradient(_axpy(FD_DELTA, g_outer, w), x[hv_rows], y[hv_rows])
                g_minus, _ = gradient(_axpy(-FD_DELTA, g_outer, w), x[hv_rows], y[hv_rows])
                hessian_v = {k: (g_plus[k] - g_minus[k]) / np.float32(2 * FD_DELTA) for k in w}
                g_outer = _axpy(-alpha, hessian_v, g_outer)
            w = _axpy(-beta, g_outer, w)
            loss_sum += loss * len(outer)
            seen += len(outer)
    return w, (loss_sum / seen if seen else float("nan"))


def adapt(params: Params, train: Split, *, steps: int, lr: float, batch_size: int, rng: np.random.Generator) -> Params:
    """Personalize a received model: `steps` SGD steps on the client's training split only."""
    w = copy_params(params)
    if steps == 0 or len(train) == 0:
        return w
    epochs = -(-steps * batch_size // len(train))
    rows = [b for epoch in batch_slices(len(train), epochs, batch_size, rng) for b in epoch][:steps]
    for batch in rows:
        g, _ = gradient(w, train.x[batch], train.y[batch])
        w = _axpy(-lr, g, w)
    return w


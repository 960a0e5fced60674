"""The trainers `benchmarks/local_step.py` times the compiled kernels against: a dense numpy
trainer (the product's before the kernels) and torch autograd over the same batch order.

Frozen copies, not imports: benchmarks import only the product, and the tests' references
(tests/dense_training.py, tests/torch_training.py) may change with the tests, while a yardstick
should stay what earlier results in benchmarks/RESULTS.md were measured against.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from core.params import Params, copy_params
from core.torch_model import to_params, to_torch

_THREADPOOLS = ThreadpoolController()  # scanned once; limiting through it then costs ~30 us


def batch_slices(
    n: int, epochs: int, batch_size: int, rng: np.random.Generator
) -> Iterator[list[np.ndarray]]:
    """The one data order: per epoch, consecutive `batch_size` slices of `rng.permutation(n)`.

    Yields one list of index arrays per epoch; the last batch of an epoch may be partial.
    """
    for _ in range(epochs):
        perm = rng.permutation(n)
        yield [perm[start : start + batch_size] for start in range(0, n, batch_size)]


class _Workspace:
    """Buffers for one batch size, reused by every step of that size so steps barely allocate.

    `x` and `a` carry a trailing column of ones: the biases live in the last column of the
    augmented weights, so each layer is one matmul and its gradient one more.
    """

    def __init__(self, rows: int, width: int, hidden: int) -> None:
        self.x = np.ones((rows, width + 1), np.float32)
        self.x_features = self.x[:, :width]
        self.z = np.empty((rows, hidden), np.float32)
        self.a = np.ones((rows, hidden + 1), np.float32)
        self.a_hidden = self.a[:, :hidden]
        self.logit = np.empty(rows, np.float32)
        self.softplus = np.empty(rows, np.float32)
        self.g = np.empty(rows, np.float32)
        self.g_column = self.g[:, None]
        self.active = np.empty((rows, hidden), bool)
        self.dz = np.empty((rows, hidden), np.float32)
        self.grad_w1 = np.empty((hidden, width + 1), np.float32)
        self.grad_w2 = np.empty(hidden + 1, np.float32)


def _sgd_step(
    w1: np.ndarray, w2: np.ndarray, X: np.ndarray, y: np.ndarray, idx: np.ndarray,
    ws: _Workspace, lr: float, with_loss: bool, prox: tuple[float, np.ndarray, np.ndarray] | None = None,
) -> float:
    """One SGD step on rows `idx`, updating the augmented w1/w2 in place; returns the summed
    loss of the batch before the update, or 0 when `with_loss` is off to save two reductions.
    `prox` = (mu, anchor w1, anchor w2) adds the gradient of mu/2 * ||w - anchor||^2."""
    X.take(idx, axis=0, out=ws.x_features)
    yb = y[idx]
    np.matmul(ws.x, w1.T, out=ws.z)
    np.maximum(ws.z, 0.0, out=ws.a_hidden)
    np.matmul(ws.a, w2, out=ws.logit)
    np.logaddexp(0.0, ws.logit, out=ws.softplus)
    loss = float(ws.softplus.sum() - yb @ ws.logit) if with_loss else 0.0
    # d(loss)/d(logit) = sigmoid(logit) - y, with sigmoid = exp(logit - softplus): no overflow.
    np.subtract(ws.logit, ws.softplus, out=ws.g)
    np.exp(ws.g, out=ws.g)
    ws.g -= yb
    ws.g *= lr / len(idx)
    np.greater(ws.z, 0.0, out=ws.active)
    np.multiply(ws.g_column, w2[:-1], out=ws.dz)  # needs w2 before its update below
    ws.dz *= ws.active
    np.matmul(ws.g, ws.a, out=ws.grad_w2)
    np.matmul(ws.dz.T, ws.x, out=ws.grad_w1)
    if prox is not None:
        mu, a1, a2 = prox
        ws.grad_w2 += np.float32(lr * mu) * (w2 - a2)
        ws.grad_w1 += np.float32(lr * mu) * (w1 - a1)
    w2 -= ws.grad_w2
    w1 -= ws.grad_w1
    return loss


def train_sgd(
    params: Params, X: np.ndarray, y: np.ndarray, *,
    lr: float, epochs: int, batch_size: int, rng: np.random.Generator,
    prox_mu: float = 0.0, anchor: Params | None = None,
) -> tuple[Params, float]:
    """Minibatch SGD on mean BCE-with-logits; returns new params and the last epoch's mean loss.

    `prox_mu > 0` adds the proximal term prox_mu/2 * ||w - anchor||^2 (FedProx, Ditto); the
    anchor defaults to the starting params. The input params are never modified. With no
    data or no epochs the params come back as a copy and the loss is nan.
    """
    n, width = X.shape
    if n == 0 or epochs <= 0:
        return copy_params(params), float("nan")
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.float32)
    # Augmented weights [W | b], copies of the inputs, updated in place below.
    w1 = np.column_stack([params["fc1.weight"], params["fc1.bias"]]).astype(np.float32)
    w2 = np.concatenate([params["fc2.weight"][0], params["fc2.bias"]]).astype(np.float32)
    hidden = w1.shape[0]
    prox = None
    if prox_mu > 0:
        a = params if anchor is None else anchor
        prox = (prox_mu, np.column_stack([a["fc1.weight"], a["fc1.bias"]]).astype(np.float32),
                np.concatenate([a["fc2.weight"][0], a["fc2.bias"]]).astype(np.float32))
    workspaces: dict[int, _Workspace] = {}
    with _THREADPOOLS.limit(limits=1, user_api="blas"):
        for number, epoch in enumerate(batch_slices(n, epochs, batch_size, rng), start=1):
            total, last = 0.0, number == epochs
            for idx in epoch:
                ws = workspaces.get(len(idx))
                if ws is None:
                    ws = workspaces[len(idx)] = _Workspace(len(idx), width, hidden)
                total += _sgd_step(w1, w2, X, y, idx, ws, lr, last, prox)
    new = {
        "fc1.weight": w1[:, :width],
        "fc1.bias": w1[:, width],
        "fc2.weight": w2[None, :hidden],
        "fc2.bias": w2[hidden:],
    }
    return copy_params(new), total / n


def train_sgd_torch(
    params: Params, X: np.ndarray, y: np.ndarray, *,
    lr: float, epochs: int, batch_size: int, rng: np.random.Generator,
) -> tuple[Params, float]:
    """Reference trainer: TorchMLP, autograd and torch.optim.SGD over the same batch order."""
    n = X.shape[0]
    if n == 0 or epochs <= 0:
        return copy_params(params), float("nan")
    model = to_torch(params)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    for epoch in batch_slices(n, epochs, batch_size, rng):
        total = 0.0
        for idx in epoch:
            rows = torch.from_numpy(idx)
            loss = loss_fn(model(Xt[rows]), yt[rows])
            total += loss.item() * len(idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return to_params(model), total / n

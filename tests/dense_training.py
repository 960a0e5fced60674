"""The dense numpy reference of the client's compiled kernels (`clients.kernels`): training,
evaluation and model scoring on dense one-hot matrices, which the kernels must equal.

This was the product's trainer before the kernels, so it is fast for numpy: the forward and
backward passes are a fixed sequence of numpy calls writing into preallocated float32 buffers,
with both biases folded into the weight matrices. `train_sgd_torch` (tests/torch_training.py)
is the autograd reference it is tested against; both walk the data in the order of
`batch_slices`.

BLAS is held to one thread while training and for whole-split passes (`predict_proba`,
`mean_loss`): splitting matrices this small across threads gains nothing, and on a busy
machine (parallel clients) a batch of 256 then ran 40x slower; evaluating all 46 states'
test splits took 0.44-0.73 s with two threads and 0.15 s with one, on an idle machine.
`gradient` is left alone: it runs once per minibatch (personalization), where entering the
limit (~20-35 us) would cost a third of a 32-row step.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from threadpoolctl import ThreadpoolController

from clients.data import Split
from core.counts import confusion_counts, population_metrics
from core.params import PARAM_KEYS, Params, copy_params
from core.wire import Evaluation

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


def _forward(params: Params, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hidden activations and logits for every row of X."""
    z = X @ params["fc1.weight"].T + params["fc1.bias"]
    a = np.maximum(z, 0.0)
    return a, a @ params["fc2.weight"][0] + params["fc2.bias"][0]


def _mean_bce(logit: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, logit) - y * logit)) if len(y) else float("nan")


def predict_proba(params: Params, X: np.ndarray) -> np.ndarray:
    """P(label = 1) for every row of X, as float32."""
    with _THREADPOOLS.limit(limits=1, user_api="blas"):
        _, logit = _forward(params, X)
    return np.exp(-np.logaddexp(0.0, -logit))


def mean_loss(params: Params, X: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of the model on (X, y); nan on an empty set."""
    with _THREADPOOLS.limit(limits=1, user_api="blas"):
        _, logit = _forward(params, X)
    return _mean_bce(logit, np.asarray(y, dtype=np.float32))


def gradient(params: Params, X: np.ndarray, y: np.ndarray) -> tuple[Params, float]:
    """Gradient of the mean BCE on (X, y) and that loss; zeros and nan on an empty set."""
    y = np.asarray(y, dtype=np.float32)
    a, logit = _forward(params, X)
    dlogit = (np.exp(logit - np.logaddexp(0.0, logit)) - y) / max(len(y), 1)
    dz = np.outer(dlogit, params["fc2.weight"][0]) * (a > 0.0)
    grads = {
        "fc1.weight": dz.T @ X,
        "fc1.bias": dz.sum(axis=0),
        "fc2.weight": (dlogit @ a)[None, :],
        "fc2.bias": np.array([dlogit.sum()]),
    }
    return {k: grads[k].astype(np.float32) for k in PARAM_KEYS}, _mean_bce(logit, y)


def evaluate_dense(params: Params, split: Split, client_index: int) -> Evaluation:
    """Dense reference of `clients.local.evaluate_local`: loss and per-group confusion counts."""
    y_pred = predict_proba(params, split.x) >= 0.5
    y_true = split.y >= 0.5
    return Evaluation(
        client_index=client_index,
        n=len(split),
        loss=mean_loss(params, split.x, split.y) if len(split) else float("nan"),
        counts={a: confusion_counts(y_true, y_pred, g) for a, g in split.groups.items()},
    )


def score_models_dense(
    models: list[Params], split: Split, attribute: str, fair_metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Dense reference of `clients.local.score_models`: each model's mean loss and fairness gap."""
    y_true = split.y >= 0.5
    losses, gaps = [], []
    for params in models:
        losses.append(mean_loss(params, split.x, split.y))
        counts = confusion_counts(y_true, predict_proba(params, split.x) >= 0.5, split.groups[attribute])
        gaps.append(population_metrics(counts)[f"{fair_metric}_gap"])
    return np.asarray(losses), np.asarray(gaps)

"""The torch autograd trainer the dense numpy reference and the kernels are tested against.

Kept apart from tests/dense_training.py so that tests of the numpy reference alone do not
import torch.
"""

from __future__ import annotations

import numpy as np
import torch

from core.params import Params, copy_params
from core.torch_model import to_params, to_torch
from tests.dense_training import batch_slices


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

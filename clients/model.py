"""The client model: a one-hidden-layer MLP, held as a dict of float32 numpy arrays.

Parameters travel as plain numpy so that Flower, the strategies and the fast trainer all
share one representation; `TorchMLP` is the reference that fixes their layout and init.
"""

from __future__ import annotations

import numpy as np
import torch

Params = dict[str, np.ndarray]

PARAM_KEYS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


class TorchMLP(torch.nn.Module):
    """Linear(d, h) -> ReLU -> Linear(h, 1), returning one logit per row."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(width, hidden)
        self.relu = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x))).squeeze(-1)


def init_params(width: int, hidden: int, seed: int) -> Params:
    """Torch's default Linear init under `torch.manual_seed(seed)`, so runs are reproducible.

    The global torch RNG is forked, so calling this never disturbs other seeded code.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return to_params(TorchMLP(width, hidden))


def to_params(model: TorchMLP) -> Params:
    """Independent float32 numpy copies of the model's weights, in `PARAM_KEYS` order."""
    state = model.state_dict()
    return {k: state[k].detach().numpy().astype(np.float32, copy=True) for k in PARAM_KEYS}


def to_torch(params: Params) -> TorchMLP:
    """A fresh TorchMLP holding copies of `params` (shapes give width and hidden)."""
    hidden, width = params["fc1.weight"].shape
    model = TorchMLP(width, hidden)
    model.load_state_dict({k: torch.tensor(params[k], dtype=torch.float32) for k in PARAM_KEYS})
    return model


def copy_params(params: Params) -> Params:
    """Deep float32 copy, so callers never share buffers with a trainer."""
    return {k: np.array(params[k], dtype=np.float32, copy=True) for k in PARAM_KEYS}

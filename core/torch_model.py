"""The torch reference of the client model: its layout (`core.params.init_params` draws its
initialisation without torch).

Only the tests and benchmarks (as the autograd reference) import torch; the ServerApp and the
ClientApp never do.
"""

from __future__ import annotations

import numpy as np
import torch

from core.params import PARAM_KEYS, Params


class TorchMLP(torch.nn.Module):
    """Linear(d, h) -> ReLU -> Linear(h, 1), returning one logit per row."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(width, hidden)
        self.relu = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x))).squeeze(-1)


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

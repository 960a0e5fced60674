"""The early stop's tracker: has the pooled validation loss stopped improving?

Plain Python so the stop rule is tested on its own and a checkpoint can carry its state:
a resumed replicate restores it and stops at exactly the round the uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Any


class Plateau:
    """Best loss so far and its round; `reached` once `patience` rounds have passed without a
    loss more than `min_delta` below that best. Patience 0 never stops."""

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best_loss = math.inf
        self.best_round = 0

    def observe(self, server_round: int, loss: float) -> None:
        """A round's loss: a new best only if it beats the best by more than `min_delta` (NaN never does)."""
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_round = loss, server_round

    def reached(self, server_round: int) -> bool:
        return self.patience > 0 and server_round - self.best_round >= self.patience

    def state(self) -> dict[str, Any]:
        """JSON-able: an infinite best (no finite loss seen yet) is stored as None."""
        return {"best_round": self.best_round, "best_loss": None if math.isinf(self.best_loss) else self.best_loss}

    def restore(self, state: dict[str, Any]) -> None:
        self.best_round = int(state["best_round"])
        self.best_loss = math.inf if state["best_loss"] is None else float(state["best_loss"])

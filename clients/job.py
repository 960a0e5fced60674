"""One message's work on a client, as the strategy modules' client handlers receive it.

The ClientApp (fl_app/client_app.py) builds a `ClientJob` from the message and the node,
calls the handler the message type names, and turns its `ClientReply` into Flower's reply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients.data import Split, StateData
from clients.local import InjectedFault, local_rng
from core.params import Params
from core.wire import VAL_PREFIX


@dataclass(frozen=True)
class ClientJob:
    """The run config, this client's data and index, the round, and any fault to inject."""

    config: Any  # fl_app.config.RunConfig: common keys plus `params`, the strategy's own
    data: StateData
    index: int
    server_round: int
    fault: str | None

    def rng(self, purpose: int) -> np.random.Generator:
        return local_rng(self.config.seed, self.data.client, self.server_round, purpose)

    def evaluation_splits(self) -> list[tuple[str, Split]]:
        """(metric prefix, split) to evaluate on: the test split, and validation when it has records."""
        splits = [("", self.data.test)]
        if self.data.sizes()["val"]:
            splits.append((VAL_PREFIX, self.data.val))
        return splits

    def hang_if_asked(self) -> None:
        """Fault injection `hang`: stall for twice `round-timeout`, so the server gives up on this
        client first (what `round-timeout` is for); the reply that follows comes too late."""
        if self.fault == "hang":
            time.sleep(2 * self.config.round_timeout)

    def raise_if(self, mode: str) -> None:
        if self.fault == mode:
            raise InjectedFault(f"injected {mode} in {self.data.client.label}, round {self.server_round}")


@dataclass(frozen=True)
class ClientReply:
    """What a handler returns: an update (training) or none (evaluation), and its metrics."""

    metrics: dict[str, Any] = field(default_factory=dict)
    params: Params | None = None

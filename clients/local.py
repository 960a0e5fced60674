"""What a client does each round with its own data: seeded local training, the fairness hook,
and the faults it injects when the run config asks for them (to test the server's tolerance)."""

from __future__ import annotations

import numpy as np

from clients.data import Split
from clients.shards import ClientId
from clients.training import mean_loss, predict_proba, train_sgd
from core.counts import confusion_counts, population_metrics
from core.params import Params
from core.wire import Evaluation

TRAIN, ADAPT, FAULT = 0, 1, 2  # purposes of a client's per-round random streams
UPDATE_FAULTS = ("nan-update", "shape-update", "keys-update")


class InjectedFault(RuntimeError):
    """A failure the run config asked this client to raise."""


def local_rng(seed: int, client: ClientId, server_round: int, purpose: int = 0) -> np.random.Generator:
    """Randomness for one client in one round: from (seed, state, shard, round), so independent
    of which worker runs it; a whole-state client draws exactly what it drew before shards."""
    return np.random.default_rng([seed, *client.entropy, server_round, purpose])


def train_local(
    params: Params, split: Split, *, lr: float, epochs: int, batch_size: int, rng: np.random.Generator,
    prox_mu: float = 0.0, anchor: Params | None = None,
) -> tuple[Params, float]:
    """Local SGD on the client's training split (with a proximal term towards `anchor` if prox_mu > 0)."""
    return train_sgd(params, split.x, split.y, lr=lr, epochs=epochs, batch_size=batch_size, rng=rng,
                     prox_mu=prox_mu, anchor=anchor)


def evaluate_local(params: Params, split: Split, client_index: int) -> Evaluation:
    """Loss and per-group confusion counts of `params` on a split (predictions at p >= 0.5)."""
    y_pred = predict_proba(params, split.x) >= 0.5
    y_true = split.y >= 0.5
    return Evaluation(
        client_index=client_index,
        n=len(split),
        loss=mean_loss(params, split.x, split.y) if len(split) else float("nan"),
        counts={a: confusion_counts(y_true, y_pred, g) for a, g in split.groups.items()},
    )


def score_models(
    models: list[Params], split: Split, attribute: str, fair_metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate model's mean loss and fairness gap on a split (IFCA's cluster scores)."""
    y_true = split.y >= 0.5
    losses, gaps = [], []
    for params in models:
        losses.append(mean_loss(params, split.x, split.y))
        counts = confusion_counts(y_true, predict_proba(params, split.x) >= 0.5, split.groups[attribute])
        gaps.append(population_metrics(counts)[f"{fair_metric}_gap"])
    return np.asarray(losses), np.asarray(gaps)


def fault_strikes(
    seed: int, client: ClientId, server_round: int, fail_states: tuple[str, ...], fail_prob: float
) -> bool:
    """Whether `client` injects its fault in this round: its state is listed (so all its shards
    fail), or drawn from (seed, state, shard, round)."""
    return client.state in fail_states or (
        fail_prob > 0 and local_rng(seed, client, server_round, FAULT).random() < fail_prob
    )


def corrupt_update(params: Params, mode: str) -> Params:
    """An update the server must reject: a NaN, a wrong shape, or a wrong key (`mode` in UPDATE_FAULTS)."""
    first = next(iter(params))
    bad = dict(params)
    if mode == "nan-update":
        bad[first] = params[first].copy()
        bad[first].flat[0] = np.nan
    elif mode == "shape-update":
        bad[first] = params[first][:-1]
    elif mode == "keys-update":
        bad[f"{first}.renamed"] = bad.pop(first)
    else:
        raise ValueError(f"unknown update fault '{mode}'; valid: {', '.join(UPDATE_FAULTS)}")
    return bad

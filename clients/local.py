"""What a client does each round with its own data: seeded local training, the fairness hook,
and the faults it injects when the run config asks for them (to test the server's tolerance)."""

from __future__ import annotations

import numpy as np

from clients import kernels
from clients.data import ClientSplit
from clients.shards import ClientId
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
    params: Params, split: ClientSplit, *, lr: float, epochs: int, batch_size: int, rng: np.random.Generator,
    prox_mu: float = 0.0, anchor: Params | None = None,
) -> tuple[Params, float]:
    """Local SGD on a client split; with prox_mu > 0 a proximal term towards `anchor`
    (default: the starting params, as FedProx)."""
    return kernels.train_sgd(params, split.sparse, lr=lr, epochs=epochs, batch_size=batch_size, rng=rng,
                             prox_mu=prox_mu, anchor=params if anchor is None else anchor)


def ditto_personal_step(
    personal: Params, anchor: Params, split: ClientSplit, *, mu: float, lr: float, epochs: int, batch_size: int,
    rng: np.random.Generator,
) -> tuple[Params, float]:
    """Ditto's personal update (Li et al. 2021): SGD on the client's own loss plus
    mu/2 * ||v - anchor||^2, the anchor being the global model received this round; returns
    the new personal model and its last epoch's mean loss (without the proximal term)."""
    return train_local(personal, split, lr=lr, epochs=epochs, batch_size=batch_size, rng=rng, prox_mu=mu,
                       anchor=anchor)


def meta_train_local(
    params: Params, split: ClientSplit, *, alpha: float, beta: float, epochs: int, batch_size: int,
    rng: np.random.Generator, variant: str,
) -> tuple[Params, float]:
    """Per-FedAvg meta-training on a client split (tests/dense_perfedavg.py is its dense reference)."""
    return kernels.meta_train(params, split.sparse, alpha=alpha, beta=beta, epochs=epochs, batch_size=batch_size,
                              rng=rng, variant=variant)


def adapt_local(
    params: Params, split: ClientSplit, *, steps: int, lr: float, batch_size: int, rng: np.random.Generator
) -> Params:
    """Personalize a received model: `steps` SGD steps on the client's training split only."""
    return kernels.adapt(params, split.sparse, steps=steps, lr=lr, batch_size=batch_size, rng=rng)


def evaluate_local(params: Params, split: ClientSplit, client_index: int) -> Evaluation:
    """Loss and per-group confusion counts of `params` on a split (predictions at p >= 0.5)."""
    loss, counts = kernels.evaluate(params, split.sparse, split.groups)
    return Evaluation(client_index=client_index, n=len(split), loss=loss, counts=counts)


def score_models(
    models: list[Params], split: ClientSplit, attribute: str, fair_metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate model's mean loss and fairness gap on a split (IFCA's cluster scores)."""
    return kernels.score_models(models, split.sparse, split.groups[attribute], fair_metric)


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

"""What a client does each round with its own data: seeded local training and the fairness hook."""

from __future__ import annotations

import numpy as np

from analysis.fairness import confusion_counts, population_metrics
from clients.data import Split
from clients.sources import fips
from clients.training import mean_loss, predict_proba, train_sgd
from strategies.messages import Evaluation

Params = dict[str, np.ndarray]


def local_rng(seed: int, state: str, server_round: int, purpose: int = 0) -> np.random.Generator:
    """Randomness for one client in one round: independent of which worker runs it."""
    return np.random.default_rng([seed, fips(state), server_round, purpose])


def train_local(
    params: Params, split: Split, *, lr: float, epochs: int, batch_size: int, rng: np.random.Generator
) -> tuple[Params, float]:
    """Local SGD on the client's training split."""
    return train_sgd(params, split.x, split.y, lr=lr, epochs=epochs, batch_size=batch_size, rng=rng)


def evaluate_local(params: Params, split: Split, state_index: int) -> Evaluation:
    """Loss and per-group confusion counts of `params` on a split (predictions at p >= 0.5)."""
    y_pred = predict_proba(params, split.x) >= 0.5
    y_true = split.y >= 0.5
    return Evaluation(
        state_index=state_index,
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

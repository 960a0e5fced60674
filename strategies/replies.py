"""Which client replies a round can use: failures and unusable updates are counted, never averaged.

A training reply is unusable when its update has other keys, shapes or dtypes than the
model, holds a non-finite value, or its metrics lack what aggregation needs; an evaluation
reply when its counts cannot be read. Usable replies come back sorted by client index, so
aggregation does not depend on the order in which replies arrive. `clients` are the run's
client labels (clients/shards.py), indexed by the client each reply names (`CLIENT_KEY`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from logging import WARNING

import numpy as np
from flwr.app import Message, MetricRecord
from flwr.common.logger import log

from core.params import Params, from_record
from core.rounds import RoundHealth
from core.wire import CLIENT_KEY, EXAMPLES_KEY, Evaluation

REASON_CHARS = 300  # console excerpt of a client's error


@dataclass(frozen=True)
class Update:
    """One client's usable training result."""

    client_index: int
    params: Params
    weight: float
    metrics: MetricRecord


def update_problem(update: Params, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """Why `update` cannot be averaged into a model with these parameter shapes; None if it can."""
    if set(update) != set(shapes):
        missing, unexpected = sorted(set(shapes) - set(update)), sorted(set(update) - set(shapes))
        return f"parameter keys differ from the model's (missing {missing}, unexpected {unexpected})"
    for key, shape in shapes.items():
        value = update[key]
        if value.shape != tuple(shape):
            return f"'{key}' has shape {value.shape}, expected {tuple(shape)}"
        if not np.issubdtype(value.dtype, np.floating):
            return f"'{key}' has dtype {value.dtype}, expected a float type"
        if not np.isfinite(value).all():
            return f"'{key}' holds non-finite values"
    return None


def reply_failure(message: Message) -> str:
    """A failed reply's reason, shortened for the console."""
    return f"node {message.metadata.src_node_id}: {message.error.reason[:REASON_CHARS]}"


class UnusableUpdate(ValueError):
    """A training reply that must not be averaged: who sent it and why."""

    def __init__(self, sender: str, reason: str) -> None:
        super().__init__(f"rejected update from {sender}: {reason}")


def usable_updates(
    replies: Iterable[Message],
    shapes: Mapping[str, tuple[int, ...]],
    clients: tuple[str, ...],
    health: RoundHealth,
    check: Callable[[MetricRecord], str | None] | None = None,
) -> list[Update]:
    """The usable training updates sorted by client; failures and rejections counted in `health`.

    `check` adds a strategy's own condition on a reply's metrics (e.g. a valid cluster id).
    """
    return [update for update, _ in usable_replies(replies, shapes, clients, health, check)]


def usable_replies(
    replies: Iterable[Message],
    shapes: Mapping[str, tuple[int, ...]],
    clients: tuple[str, ...],
    health: RoundHealth,
    check: Callable[[MetricRecord], str | None] | None = None,
) -> list[tuple[Update, Message]]:
    """`usable_updates` with each update's reply message (for strategies that aggregate messages).

    Fewer usable updates than `health.quorum` (min-clients) count as none: the round keeps the
    previous model (`health.model_kept`), whatever the strategy, so no aggregate is applied.
    """
    replies = list(replies)
    usable = []
    for message in replies:
        if message.has_error():
            log(WARNING, "client failed in training: %s", reply_failure(message))
            continue
        try:
            usable.append((read_update(message, shapes, clients, check), message))
        except UnusableUpdate as err:
            health.rejected_updates += 1
            log(WARNING, "%s", err)
    health.failed_clients += len(clients) - sum(not m.has_error() for m in replies)
    usable.sort(key=lambda pair: pair[0].client_index)
    health.trained = tuple(update.client_index for update, _ in usable)
    health.model_kept = len(usable) < health.quorum
    if usable and health.model_kept:
        log(WARNING, "%d usable update(s), fewer than min-clients %d: none is aggregated", len(usable), health.quorum)
        return []
    return usable


def read_update(
    message: Message,
    shapes: Mapping[str, tuple[int, ...]],
    clients: tuple[str, ...],
    check: Callable[[MetricRecord], str | None] | None = None,
) -> Update:
    """One training reply as an Update, or UnusableUpdate naming the sender and the reason."""
    try:
        metrics = message.content["metrics"]
        index = int(metrics[CLIENT_KEY])
        weight = float(metrics[EXAMPLES_KEY])
        params = from_record(message.content["arrays"])
    except (KeyError, TypeError, ValueError) as err:
        raise UnusableUpdate(f"node {message.metadata.src_node_id}", f"malformed reply ({err!r})") from err
    if not 0 <= index < len(clients):
        raise UnusableUpdate(f"node {message.metadata.src_node_id}", f"{CLIENT_KEY} {index} outside 0..{len(clients) - 1}")
    if not (math.isfinite(weight) and weight > 0):
        raise UnusableUpdate(clients[index], f"num-examples must be a positive number, got {weight}")
    problem = update_problem(params, shapes) or (check(metrics) if check else None)
    if problem:
        raise UnusableUpdate(clients[index], problem)
    return Update(index, params, weight, metrics)


def usable_evaluations(
    replies: Iterable[Message],
    read: Callable[[MetricRecord], dict[str, Evaluation]],
    clients: tuple[str, ...],
    health: RoundHealth,
) -> list[dict[str, Evaluation]]:
    """Each usable evaluation reply read by `read` (model tag -> Evaluation), sorted by client."""
    usable = []
    for message in replies:
        if message.has_error():
            log(WARNING, "client failed in evaluation: %s", reply_failure(message))
            continue
        try:
            evaluations = read(message.content["metrics"])
        except (KeyError, TypeError, ValueError) as err:
            log(WARNING, "unreadable evaluation from node %s: %s", message.metadata.src_node_id, err)
            continue
        if all(_plausible(e, len(clients)) for e in evaluations.values()):
            usable.append(evaluations)
        else:
            log(WARNING, "implausible evaluation from node %s", message.metadata.src_node_id)
    health.failed_evaluations += len(clients) - len(usable)
    return sorted(usable, key=lambda tags: next(iter(tags.values())).client_index)


def _plausible(evaluation: Evaluation, num_clients: int) -> bool:
    """A client index in range and non-negative counts."""
    return 0 <= evaluation.client_index < num_clients and all(
        (c >= 0).all() for c in evaluation.counts.values()
    )

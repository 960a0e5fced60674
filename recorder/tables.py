"""Client evaluations as the tidy tables of the results contract (counts.csv and per-client rows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from core.tasks import ATTRIBUTES
from core.wire import Evaluation
from recorder.files import COUNTS_COLUMNS, METRICS_COLUMNS

COUNT_FIELDS = ("tp", "fp", "tn", "fn")


def evaluation_tables(
    server_round: int,
    evaluations: Sequence[Evaluation],
    clients: Sequence[str],
    clusters: Mapping[int, int] | None = None,
    model: str = "deployed",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(counts rows, per-client rows) for one round; `clients` are the client labels (the `state`
    column) and `clusters` maps client index to cluster id."""
    clusters = clusters or {}
    count_rows, client_rows = [], []
    for ev in sorted(evaluations, key=lambda e: e.client_index):
        state = clients[ev.client_index]
        cluster = clusters.get(ev.client_index, pd.NA)
        client_rows.append(
            {"round": server_round, "state": state, "cluster": cluster, "n": ev.n, "loss": ev.loss, "model": model}
        )
        for attribute, names in ATTRIBUTES.items():
            for g, name in enumerate(names):
                cells = dict(zip(COUNT_FIELDS, (int(c) for c in ev.counts[attribute][g])))
                count_rows.append(
                    {"round": server_round, "state": state, "cluster": cluster, "attribute": attribute,
                     "group": name, "n": sum(cells.values()), **cells, "model": model}
                )
    counts = pd.DataFrame(count_rows, columns=[*COUNTS_COLUMNS, "model"])
    counts["cluster"] = counts["cluster"].astype("Int64")
    clients = pd.DataFrame(client_rows, columns=["round", "state", "cluster", "n", "loss", "model"])
    clients["cluster"] = clients["cluster"].astype("Int64")
    return counts, clients


def health_rows(server_round: int, counts: Mapping[str, int]) -> pd.DataFrame:
    """metrics.csv rows (state ALL) counting a round's failed clients, rejected updates and the like."""
    rows = [
        {"round": server_round, "state": "ALL", "cluster": pd.NA, "attribute": "", "metric": name, "value": float(n)}
        for name, n in counts.items()
    ]
    frame = pd.DataFrame(rows, columns=METRICS_COLUMNS)
    frame["cluster"] = frame["cluster"].astype("Int64")
    return frame


def pooled_loss(metrics: pd.DataFrame) -> tuple[list[int], list[float]]:
    """(rounds, pooled loss) from a metrics table's state-ALL loss rows, by round: the quantity the
    analysis chooses a round on (validation) and the early stop watches (recorder.py)."""
    rows = metrics[(metrics["state"] == "ALL") & (metrics["attribute"] == "") & (metrics["metric"] == "loss")]
    rows = rows.sort_values("round")
    return rows["round"].tolist(), rows["value"].tolist()

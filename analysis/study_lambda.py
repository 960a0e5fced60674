"""What the fairness weight `lambda` of Fair-FCA and Fair-FL+HC does in a study.

Per strategy and weight: the share of client-rounds whose cluster differs from the same seed's
lambda = 0 run (the weight's only lever is the cluster choice), and the accuracy and gaps it
buys, with intervals over seeds. Where a weight changes no choice, the report must say why:
`flip_table` puts each Fair-FCA client-round's loss differences between cluster models beside
its gap differences, as the smallest weight that would have flipped the choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.report import bootstrap_ci
from analysis.study_plan import FAIR_BASES
from analysis.study_tables import Arm, assignments, lambda_points

LAMBDA_METRICS = (("accuracy", ""), ("sp_gap", "sex"), ("eo_gap", "sex"), ("sp_gap", "race"), ("eo_gap", "race"))
LAMBDA_COLUMNS = ["strategy", "lambda", "n_seeds", "client_rounds", "changed_share", "metric", "attribute", "mean",
                  "ci_low", "ci_high"]
FLIP_COLUMNS = ["client_rounds", "loss_margin_median", "gap_margin_median", "flippable_share", "flip_lambda_p10",
                "flip_lambda_median"]


def changed_choices(arm: Arm, zero: Arm) -> tuple[float, int]:
    """(share of client-rounds whose cluster differs from `zero`'s, client-rounds compared), over
    the seeds, rounds and clients both have."""
    changed = total = 0
    for seed in sorted(set(arm.runs) & set(zero.runs)):
        ours, theirs = assignments(arm.runs[seed]), assignments(zero.runs[seed])
        for round_ in set(ours) & set(theirs):
            shared = set(ours[round_]) & set(theirs[round_])
            total += len(shared)
            changed += sum(ours[round_][c] != theirs[round_][c] for c in shared)
    return (changed / total if total else math.nan), total


def lambda_table(arms: Sequence[Arm], which: str) -> pd.DataFrame:
    """lambda.csv: per Fair-* strategy and weight, the changed share and, per metric, the mean over
    clients (MEAN rows) at each run's `which` round, averaged over seeds with its interval."""
    rows = []
    for strategy in FAIR_BASES:
        points = lambda_points(arms, strategy)
        zero = points[0][1] if points and points[0][0] == 0 else None
        for w, arm in points:
            share, compared = changed_choices(arm, zero) if zero is not None else (math.nan, 0)
            for metric, attribute in LAMBDA_METRICS:
                values = [arm.value(s, r, "MEAN", attribute, metric) for s in arm.seeds
                          if (r := arm.round_of(s, which)) is not None]
                finite = [v for v in values if np.isfinite(v)]
                mean, low, high = bootstrap_ci(finite)
                rows.append([strategy, w, len(finite), compared, share, metric, attribute, mean, low, high])
    return pd.DataFrame(rows, columns=LAMBDA_COLUMNS)


def flip_lambdas(clusters: pd.DataFrame) -> np.ndarray:
    """Per client-round of a Fair-FCA run: the smallest lambda at which loss_j + lambda * gap_j
    picks another cluster than the loss alone does (inf where no weight would: the loss-best model
    also has the smallest gap)."""
    losses = clusters.filter(regex=r"^loss_\d+$").to_numpy(np.float64)
    gaps = np.nan_to_num(clusters.filter(regex=r"^gap_\d+$").to_numpy(np.float64), nan=0.0)
    best = np.argmin(losses, axis=1)
    rows = np.arange(len(losses))
    loss_margin = losses - losses[rows, best][:, None]
    gap_margin = gaps[rows, best][:, None] - gaps
    with np.errstate(divide="ignore", invalid="ignore"):
        needed = np.where(gap_margin > 0, loss_margin / gap_margin, np.inf)
    needed[rows, best] = np.inf
    return needed.min(axis=1)


def flip_table(zero: Arm | None) -> pd.DataFrame:
    """Why a weight changes few choices, from the lambda = 0 Fair-FCA arm's clusters.csv (the scores
    of every cluster model): the median loss margin to the runner-up model, the median gap margin,
    the share of client-rounds any weight could flip, and the weights that would flip 10% and 50%
    of the flippable ones. No rows without such an arm."""
    frames = [run.clusters for run in (zero.runs.values() if zero is not None else ())
              if run.clusters is not None and run.clusters.filter(regex=r"^gap_\d+$").shape[1]]
    if not frames:
        return pd.DataFrame(columns=FLIP_COLUMNS)
    clusters = pd.concat(frames, ignore_index=True)
    losses = np.sort(clusters.filter(regex=r"^loss_\d+$").to_numpy(np.float64), axis=1)
    gaps = clusters.filter(regex=r"^gap_\d+$").to_numpy(np.float64)
    needed = flip_lambdas(clusters)
    finite = needed[np.isfinite(needed)]
    return pd.DataFrame([[
        len(clusters),
        float(np.median(losses[:, 1] - losses[:, 0])) if losses.shape[1] > 1 else math.nan,
        float(np.nanmedian(np.nanmax(gaps, axis=1) - np.nanmin(gaps, axis=1))),
        len(finite) / len(needed),
        float(np.quantile(finite, 0.1)) if len(finite) else math.nan,
        float(np.median(finite)) if len(finite) else math.nan,
    ]], columns=FLIP_COLUMNS)

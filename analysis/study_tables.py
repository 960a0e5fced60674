"""The study's numbers as tidy tables, from its completed runs: summary over seeds, paired per-state
deltas, tests across states, the accuracy-fairness frontier, cluster diagnostics, convergence, claims.

A configuration ("arm": a strategy with one setting such as lambda=1) is measured over seeds; its
intervals are percentile-bootstrap intervals over seeds (`analysis.report.bootstrap_ci`, seeded), and
one seed gives the mean itself. Comparisons pair runs of the same seed, which share data splits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from analysis.compare import BASELINES, GAPS, QUANTITIES, RunResults, data_differences
from analysis.gaussian import ThresholdModel, evaluate
from analysis.gaussian_tables import GROUP_RATES, PS, SCENARIOS, SIGMA, THETA_SQUARE
from analysis.regions import DIVISION, REGION, client_state
from analysis.report import bootstrap_ci
from analysis.stats import (
    adjusted_rand_index,
    chosen_round,
    churn,
    holm,
    pareto_front,
    plateau_round,
    signed_rank_test,
)
from analysis.study_plan import FAIR_BASES, PAPER, TUNED, PlannedRun, is_personalized
from core.tasks import ATTRIBUTES
from recorder.files import METRICS_COLUMNS, ResultsError
from recorder.tables import pooled_loss

ROUNDS = ("final", "val-chosen")
LEVELS = {"mean": "MEAN", "pooled": "ALL"}  # summary level -> metrics.csv state row
SUMMARY_METRICS: tuple[tuple[str, str], ...] = (
    ("accuracy", ""), ("loss", ""), *((gap, a) for gap in GAPS for a in ATTRIBUTES),
)
SUMMARY_COLUMNS = ["strategy", "config", "round", "level", "metric", "attribute", "mean", "ci_low", "ci_high",
                   "n_seeds", "converged"]
ALPHA = 0.05  # family-wise error rate of the Holm-corrected tests
VAL_FILE = "val_metrics.csv"
# The paper's published Gaussian table (equal label rates): group rates -> ASPD(theta*), ASPD(theta_FA)
# at p = 2/3 and p = 1/2 (analysis.gaussian reproduces it to 4 decimals with theta on a 0.01 grid).
PUBLISHED_GAUSSIAN = {
    (0.5, 0.5): (0.1359, 0.1814, 0.1945),
    (0.7, 0.3): (0.1388, 0.1881, 0.1927),
    (0.9, 0.1): (0.1465, 0.1925, 0.1895),
    (0.2, 0.8): (0.1421, 0.1691, 0.1939),
    (0.4, 0.6): (0.1367, 0.1773, 0.1947),
}


def load_val_metrics(run_dir: Path) -> pd.DataFrame | None:
    """val_metrics.csv (metrics.csv's columns, validation split) or None if the run has none."""
    path = run_dir / VAL_FILE
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in METRICS_COLUMNS if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path} lacks column(s): {', '.join(missing)}")
    try:
        frame["round"] = pd.to_numeric(frame["round"]).astype(np.int64)
        frame["value"] = pd.to_numeric(frame["value"].replace("", None)).astype(np.float64)
    except (TypeError, ValueError):
        raise ResultsError(f"{path}: round or value holds something that is not a number") from None
    return frame


@dataclass
class Arm:
    """One configuration of the study: a strategy with one setting, and its completed runs by seed."""

    strategy: str
    config: str
    runs: dict[int, RunResults]
    val: dict[int, pd.DataFrame] = field(default_factory=dict)
    _values: dict[int, dict[tuple[int, str, str, str], float]] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return self.strategy if self.config == "-" else f"{self.strategy} ({self.config})"

    @property
    def seeds(self) -> list[int]:
        return sorted(self.runs)

    @property
    def has_val(self) -> bool:
        """Every completed run has a validation split."""
        return bool(self.runs) and set(self.val) == set(self.runs)

    def round_of(self, seed: int, which: str) -> int | None:
        """The round a run is compared at: its final one, or the one its pooled val loss chose."""
        run = self.runs[seed]
        if which == "final":
            return run.final_round
        if seed not in self.val:
            return None
        chosen = chosen_round(*pooled_loss(self.val[seed]))
        return chosen if chosen in run.rounds else None

    def value(self, seed: int, round_: int, state: str, attribute: str, metric: str) -> float:
        if seed not in self._values:
            m = self.runs[seed].metrics
            self._values[seed] = dict(zip(zip(m["round"], m["state"], m["attribute"], m["metric"]), m["value"]))
        return self._values[seed].get((round_, state, attribute, metric), math.nan)


def load_arms(out: Path, planned: Sequence[PlannedRun], rows: Sequence[dict[str, Any]]) -> list[Arm]:
    """The study's arms in plan order with their completed runs (failed and pending runs left out)."""
    status = {r["run_dir"]: r["status"] for r in rows}
    arms: dict[tuple[str, str], Arm] = {}
    for run in planned:
        arm = arms.setdefault((run.strategy, run.config), Arm(run.strategy, run.config, {}))
        if status.get(run.run_dir) != "completed":
            continue
        arm.runs[run.seed] = RunResults.load(out / run.run_dir)
        val = load_val_metrics(out / run.run_dir)
        if val is not None:
            arm.val[run.seed] = val
    return list(arms.values())


def primary_round(arms: Sequence[Arm]) -> str:
    """val-chosen when every completed run has a validation split, else final."""
    populated = [a for a in arms if a.runs]
    return "val-chosen" if populated and all(a.has_val for a in populated) else "final"


def _ci_row(values: Sequence[float]) -> tuple[float, float, float, int]:
    finite = [v for v in values if np.isfinite(v)]
    mean, low, high = bootstrap_ci(finite)
    return mean, low, high, len(finite)


def summary_table(arms: Sequence[Arm], convergence: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: per arm, round, level, metric and attribute the mean over seeds and its interval,
    and `converged`, the fraction of the arm's seeds whose loss plateaued before the ceiling.

    level `mean` is the unweighted mean over clients (MEAN rows), `pooled` pools every client's test
    records (ALL rows); round `final` is each run's last round, `val-chosen` the round its pooled
    validation loss chose (only runs with a validation split).
    """
    converged = convergence.groupby(["strategy", "config"], sort=False)["converged"].mean().to_dict()
    rows = []
    for arm in arms:
        for which in ROUNDS:
            rounds = {s: arm.round_of(s, which) for s in arm.seeds}
            rounds = {s: r for s, r in rounds.items() if r is not None}
            if which == "val-chosen" and not rounds:
                continue
            for level, state in LEVELS.items():
                for metric, attribute in SUMMARY_METRICS:
                    values = [arm.value(s, r, state, attribute, metric) for s, r in rounds.items()]
                    rows.append([arm.strategy, arm.config, which, level, metric, attribute, *_ci_row(values),
                                 converged.get((arm.strategy, arm.config), math.nan)])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


# --- paired comparisons -----------------------------------------------------------------------------

def is_tuned(arm: Arm) -> bool:
    """An arm at its strategy's setting chosen on validation ("tuned", "tuned lambda=1")."""
    return arm.config.split(" ")[0] == TUNED


def tuned_arm(arms: Sequence[Arm], strategy: str) -> Arm | None:
    """The strategy's tuned arm (not a Fair-* one), if it has completed runs."""
    return next((a for a in arms if a.strategy == strategy and a.config == TUNED and a.runs), None)


def baseline_arm(arms: Sequence[Arm], strategy: str) -> Arm | None:
    """The strategy's paper-settings arm (not an extra or tuned one), if it has completed runs."""
    return next((a for a in arms if a.strategy == strategy and a.config == PAPER and a.runs), None)


def paired_deltas(base: Arm, other: Arm, which: str) -> pd.DataFrame:
    """Per shared seed and client: other - base of accuracy and each gap, each run at its `which` round."""
    frames = []
    for seed in sorted(set(base.runs) & set(other.runs)):
        rb, ro = base.round_of(seed, which), other.round_of(seed, which)
        if rb is None or ro is None:
            continue
        b = base.runs[seed].state_values(rb).rename(columns={"value": "base"})
        o = other.runs[seed].state_values(ro).rename(columns={"value": "other"})
        merged = b.merge(o, on=["state", "attribute", "metric"])
        frames.append(merged.assign(seed=seed, delta=merged["other"] - merged["base"]))
    columns = ["seed", "state", "attribute", "metric", "base", "other", "delta"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def better_sign(metric: str) -> int:
    """+1 where a higher value is better (accuracy), -1 where lower is (the gaps)."""
    return 1 if metric == "accuracy" else -1


def verdict(metric: str, mean: float, low: float, high: float, p_holm: float, n_seeds: int) -> str:
    """better / worse / no clear change: the mean delta's direction, Holm-significant across states
    (p_holm < ALPHA) and, with several seeds, its interval over seeds excluding 0 on the same side."""
    if not (np.isfinite(mean) and np.isfinite(p_holm)) or p_holm >= ALPHA or mean == 0:
        return "no clear change"
    if n_seeds >= 2 and not (low > 0 or high < 0):
        return "no clear change"
    return "better" if mean * better_sign(metric) > 0 else "worse"


@dataclass(frozen=True)
class Comparisons:
    """Per-state deltas with intervals, the tests across states, and pairs left out (with why)."""

    states: pd.DataFrame
    tests: pd.DataFrame
    skipped: list[str]


STATE_COLUMNS = ["baseline", "strategy", "config", "round", "state", "attribute", "metric", "delta", "ci_low",
                 "ci_high", "n_seeds"]
TEST_COLUMNS = ["baseline", "strategy", "config", "round", "attribute", "metric", "n_seeds", "n_states",
                "mean_delta", "ci_low", "ci_high", "median_delta", "W", "p", "p_holm", "states_ci_above_0",
                "states_ci_below_0", "verdict"]


def compare_arms(arms: Sequence[Arm], which: str) -> Comparisons:
    """Every arm against each baseline present (fedavg, local) at round `which`, and every tuned arm
    against the baseline's tuned arm (baseline "fedavg-tuned", "local-tuned"): each at its own best.

    Per client: mean delta over shared seeds with its interval. Across clients, per quantity: the
    Wilcoxon signed-rank test on the per-client mean deltas, Holm-corrected over the family of every
    test against the same baseline at this round; the mean over clients per seed, with its interval
    over seeds; the clients whose interval lies above or below 0 (NaN with one seed: no interval).
    """
    state_rows, test_rows, skipped = [], [], []
    pairs = [(name, baseline_arm(arms, name), arms) for name in BASELINES]
    pairs += [(f"{name}-{TUNED}", tuned_arm(arms, name), [a for a in arms if is_tuned(a)]) for name in BASELINES]
    for name, base, others in pairs:
        if base is None:
            continue
        family = []
        for other in (a for a in others if a is not base and a.runs):
            problems = data_differences(base.runs[base.seeds[0]], other.runs[other.seeds[0]], seed=False)
            if problems:
                skipped.append(f"{other.label} vs {name}: " + "; ".join(problems))
                continue
            deltas = paired_deltas(base, other, which)
            if deltas.empty:
                skipped.append(f"{other.label} vs {name}: no shared seed with a {which} round")
                continue
            key = [name, other.strategy, other.config, which]
            per_state = {}
            for (state, attribute, metric), part in deltas.groupby(["state", "attribute", "metric"], sort=False):
                per_state[state, attribute, metric] = _ci_row(part["delta"])
                state_rows.append([*key, state, attribute, metric, *per_state[state, attribute, metric]])
            for attribute, metric in QUANTITIES:
                part = deltas[(deltas["attribute"] == attribute) & (deltas["metric"] == metric)]
                rows = [v for (s, a, m), v in per_state.items() if (a, m) == (attribute, metric)]
                means = np.array([r[0] for r in rows])
                w, p, n = signed_rank_test(means)
                mean, low, high, n_seeds = _ci_row(part.groupby("seed")["delta"].mean().tolist())
                several = n_seeds >= 2
                above = sum(r[1] > 0 for r in rows) if several else math.nan
                below = sum(r[2] < 0 for r in rows) if several else math.nan
                family.append([*key, attribute, metric, n_seeds, n, mean, low, high,
                               float(np.nanmedian(means)) if np.isfinite(means).any() else math.nan,
                               w, p, math.nan, above, below, ""])
        for row, adjusted in zip(family, holm([r[13] for r in family]), strict=True):
            row[14] = adjusted
            row[17] = verdict(row[5], row[8], row[9], row[10], adjusted, row[6])
        test_rows += family
    return Comparisons(pd.DataFrame(state_rows, columns=STATE_COLUMNS), pd.DataFrame(test_rows, columns=TEST_COLUMNS),
                       skipped)


# --- the accuracy-fairness frontier -----------------------------------------------------------------

PARETO_COLUMNS = ["strategy", "config", "attribute", "metric", "accuracy", "accuracy_low", "accuracy_high", "gap",
                  "gap_low", "gap_high", "n_seeds", "on_front"]


def pareto_table(summary: pd.DataFrame, which: str) -> pd.DataFrame:
    """Per gap: each arm's mean-over-clients accuracy and gap with intervals, and whether it is on the
    frontier (no arm has higher accuracy and a smaller gap, judged on the means)."""
    level = summary[(summary["level"] == "mean") & (summary["round"] == which)]
    index = level.set_index(["strategy", "config", "metric", "attribute"])
    arms = level[["strategy", "config"]].drop_duplicates().itertuples(index=False)
    arms = list(arms)
    rows = []
    for gap in GAPS:
        for attribute in ATTRIBUTES:
            block = []
            for strategy, config in arms:
                acc = index.loc[(strategy, config, "accuracy", "")]
                g = index.loc[(strategy, config, gap, attribute)]
                block.append([strategy, config, attribute, gap, acc["mean"], acc["ci_low"], acc["ci_high"],
                              g["mean"], g["ci_low"], g["ci_high"], int(acc["n_seeds"]), False])
            front = pareto_front([b[4] for b in block], [b[7] for b in block])
            for row, on in zip(block, front, strict=True):
                row[-1] = bool(on)
            rows += block
    return pd.DataFrame(rows, columns=PARETO_COLUMNS)


# --- clusters ---------------------------------------------------------------------------------------

def assignments(run: RunResults) -> dict[int, dict[str, int]]:
    """round -> client -> cluster, from clusters.csv (empty without clustering)."""
    if run.clusters is None:
        return {}
    frame = run.clusters.dropna(subset=["cluster"])
    return {int(r): dict(zip(p["state"], p["cluster"].astype(int), strict=True))
            for r, p in frame.groupby("round", sort=True)}


def clustered(arm: Arm) -> bool:
    return any(assignments(run) for run in arm.runs.values())


def final_assignment(run: RunResults) -> dict[str, int]:
    rounds = assignments(run)
    return rounds[max(rounds)] if rounds else {}


def _ari_over(a: dict[str, int], b: dict[str, str | int]) -> float:
    shared = [c for c in a if c in b]
    return adjusted_rand_index([a[c] for c in shared], [b[c] for c in shared]) if len(shared) >= 2 else math.nan


CLUSTER_COLUMNS = ["strategy", "config", "n_seeds", "clusters_used", "seed_pairs", "seed_ari_mean", "seed_ari_min",
                   "seed_ari_max", "region_ari", "region_ari_low", "region_ari_high", "division_ari",
                   "division_ari_low", "division_ari_high", "final_churn"]


def cluster_tables(arms: Sequence[Arm]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(diagnostics per clustered arm, churn per arm, seed and round).

    Stability: ARI of the final memberships of every pair of seeds. Geography: ARI of a seed's final
    membership with the Census region and division of each client's state (clients without one, PR,
    left out), mean over seeds with its interval. Churn: the fraction of clients whose cluster changed
    since the previous round.
    """
    rows, churn_rows = [], []
    for arm in (a for a in arms if a.runs and clustered(a)):
        finals = {s: final_assignment(arm.runs[s]) for s in arm.seeds}
        pairs = [_ari_over(finals[s], finals[t]) for s, t in combinations(arm.seeds, 2)]
        pairs = [p for p in pairs if np.isfinite(p)]
        regions, divisions = [], []
        for final in finals.values():
            regions.append(_ari_over(final, {c: REGION[client_state(c)] for c in final if client_state(c) in REGION}))
            divisions.append(_ari_over(final, {c: DIVISION[client_state(c)] for c in final
                                               if client_state(c) in DIVISION}))
        last_churn = []
        for seed in arm.seeds:
            rounds = assignments(arm.runs[seed])
            ordered = sorted(rounds)
            for previous, current in zip(ordered, ordered[1:]):
                churn_rows.append([arm.strategy, arm.config, seed, current, churn(rounds[previous], rounds[current])])
            if len(ordered) > 1:
                last_churn.append(churn_rows[-1][-1])
        used = np.mean([len(set(f.values())) for f in finals.values()])
        rows.append([arm.strategy, arm.config, len(arm.seeds), used, len(pairs),
                     np.mean(pairs) if pairs else math.nan, min(pairs, default=math.nan),
                     max(pairs, default=math.nan), *bootstrap_ci(regions), *bootstrap_ci(divisions),
                     np.mean(last_churn) if last_churn else math.nan])
    return (pd.DataFrame(rows, columns=CLUSTER_COLUMNS),
            pd.DataFrame(churn_rows, columns=["strategy", "config", "seed", "round", "churn"]))


# --- convergence ------------------------------------------------------------------------------------

CONVERGENCE_COLUMNS = ["strategy", "config", "seed", "loss_source", "plateau_round", "final_round", "converged",
                       "val_round", "flag_final", "flag_val_chosen"]


def convergence_table(arms: Sequence[Arm]) -> pd.DataFrame:
    """Per run: the plateau round of its pooled validation loss (test loss without a validation split),
    whether the run converged (it stopped early on a plateau, `stop-patience`; without early stop, its
    loss had stopped improving by the final round), and which comparison rounds come too early.

    Plateau: the first round after which the loss never falls more than PLATEAU_TOL (relative) below the
    best loss reached so far. A comparison at round c is flagged if c is before the plateau, or if the
    plateau is the final round (the loss was still improving when training stopped).
    """
    rows = []
    for arm in arms:
        for seed in arm.seeds:
            run = arm.runs[seed]
            source = "validation" if seed in arm.val else "test"
            rounds, losses = pooled_loss(arm.val[seed] if seed in arm.val else run.metrics)
            plateau = plateau_round(rounds, losses) if rounds else run.final_round
            stopped = run.summary.get("stopped")
            converged = bool(stopped["plateaued"]) if stopped else plateau < run.final_round
            val_round = arm.round_of(seed, "val-chosen")
            rows.append([arm.strategy, arm.config, seed, source, plateau, run.final_round, converged,
                         val_round if val_round is not None else pd.NA, not converged,
                         (val_round < plateau or not converged) if val_round is not None else pd.NA])
    frame = pd.DataFrame(rows, columns=CONVERGENCE_COLUMNS)
    frame["val_round"] = frame["val_round"].astype("Int64")
    return frame


def unconverged(convergence: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Arms (strategy, config) with a run that did not converge, and why, in numbers."""
    out = {}
    for (strategy, config), part in convergence.groupby(["strategy", "config"], sort=False):
        still = part[~part["converged"].astype(bool)]
        if len(still):
            label = strategy if config == "-" else f"{strategy} ({config})"
            out[(strategy, config)] = (f"{label}: {len(still)} of {len(part)} seed(s) still improving at the "
                                       f"ceiling (round {int(still['final_round'].max())})")
    return out


def flagged(convergence: pd.DataFrame, which: str) -> set[tuple[str, str]]:
    """Arms (strategy, config) with a run compared at `which` before its loss stopped improving."""
    column = "flag_final" if which == "final" else "flag_val_chosen"
    hit = convergence[convergence[column].fillna(False).astype(bool)]
    return set(zip(hit["strategy"], hit["config"], strict=True))


# --- the Gaussian model -----------------------------------------------------------------------------

GAUSSIAN_COLUMNS = ["gr_a", "gr_b", "theta_star", "aspd_star", "aspd_p2_3", "aspd_p1_2", "published_star",
                    "published_p2_3", "published_p1_2", "less_fair_p", "p2_3_less_fair", "p1_2_less_fair",
                    "prop1_holds"]


def gaussian_table() -> pd.DataFrame:
    """The paper's published setting (equal label rates, theta*_square 8, sigma 1, means (7, 4, 6, 3),
    theta on a 0.01 grid): ASPD of the cluster's own threshold and of FedAvg's at p = 2/3 and 1/2,
    against the published numbers, and the interval of p where FedAvg is less fair."""
    scenario = SCENARIOS[0]
    rows = []
    for group_rates in GROUP_RATES:
        model = ThresholdModel(scenario.means, SIGMA, scenario.label_rates, group_rates)
        result = evaluate(model, THETA_SQUARE, PS, theta_step=0.01)
        intervals = result["less_fair_p_intervals"]
        inside = [any(lo < float(p) < hi for lo, hi in intervals) for p in PS]
        rows.append([*group_rates, result["theta_star"], result["aspd_star"], *(r["aspd"] for r in result["fedavg"]),
                     *PUBLISHED_GAUSSIAN[tuple(group_rates)],
                     ", ".join(f"({lo:.4f}, {hi:.4f})" for lo, hi in intervals) or "none", *inside,
                     result["prop1"]["holds"]])
    return pd.DataFrame(rows, columns=GAUSSIAN_COLUMNS)


# --- claims -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    claim: str
    rule: str
    verdict: str  # supported | not supported | mixed | not assessable
    numbers: str


def _fmt(value: float, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _interval(mean: float, low: float, high: float, n: int) -> str:
    text = _fmt(mean, signed=True)
    return f"{text} [{_fmt(low, True)}, {_fmt(high, True)}]" if n >= 2 else text


def _quantity(attribute: str, metric: str) -> str:
    short = {"sp_gap": "SP", "eo_gap": "EO", "eodds_gap": "EOdds"}
    return "accuracy" if metric == "accuracy" else f"{short[metric]} gap ({attribute})"


NOT_CONVERGED_RULE = (" Only converged configurations are judged: an arm with a seed still improving at the "
                      "ceiling gives no verdict, and is named with why.")


def _not_judged(skipped: Sequence[str]) -> str:
    return f" Not judged (not converged): {'; '.join(skipped)}." if skipped else ""


def _cells_claim(claim: str, tests: pd.DataFrame, quantities: Sequence[tuple[str, str]],
                 stalled: dict[tuple[str, str], str], tuned: bool = False) -> Claim:
    """Paper arms against fedavg's paper arm, or (`tuned`) tuned arms against fedavg's tuned arm."""
    baseline, base = ("fedavg-tuned", ("fedavg", TUNED)) if tuned else ("fedavg", ("fedavg", PAPER))
    which = "tuned configuration vs tuned fedavg (each at its setting chosen on validation)" if tuned else \
        "personalized configuration at the paper's settings vs fedavg"
    rule = (f"each {which}, per quantity ({', '.join(_quantity(*q) for q in quantities)}): "
            f"'better' if the mean Δ over clients has the better sign, its Wilcoxon test across clients is "
            f"significant after Holm (p < {ALPHA}; needs at least 6 clients with a non-zero Δ) and, with 2+ "
            "seeds, its interval over seeds excludes 0. Supported: every cell better; not supported: none "
            "better; mixed: otherwise." + NOT_CONVERGED_RULE)
    rows = tests[(tests["baseline"] == baseline) & tests["strategy"].map(is_personalized)]
    rows = rows[[(c.split(" ")[0] == TUNED) == tuned for c in rows["config"]]]
    rows = rows[[(a, m) in quantities for a, m in zip(rows["attribute"], rows["metric"], strict=True)]]
    arms = list(dict.fromkeys(zip(rows["strategy"], rows["config"])))
    skipped = [stalled[a] for a in [base, *arms] if a in stalled]
    if base in stalled:
        rows = rows.iloc[0:0]
    rows = rows[[a not in stalled for a in zip(rows["strategy"], rows["config"])]]
    if rows.empty:
        return Claim(claim, rule, "not assessable",
                     (f"no converged personalized configuration compared with a converged {baseline}" if skipped
                      else f"no personalized configuration compared with {baseline}") + _not_judged(skipped))
    tally = rows["verdict"].value_counts()
    better, worse = int(tally.get("better", 0)), int(tally.get("worse", 0))
    outcome = "supported" if better == len(rows) else "not supported" if better == 0 else "mixed"
    clear = rows[rows["verdict"] != "no clear change"] if len(rows) > 6 else rows  # long lists: the decided cells
    cells = "; ".join(
        f"{_label(r)} {_quantity(r.attribute, r.metric)} Δ {_interval(r.mean_delta, r.ci_low, r.ci_high, r.n_seeds)}, "
        f"p_holm {_fmt(r.p_holm)}: {r.verdict}" for r in clear.itertuples(index=False))
    if len(clear) < len(rows):
        cells += (f"{'; ' if cells else ''}the other {len(rows) - len(clear)} cells: no clear change "
                  "(see Across states)")
    return Claim(claim, rule, outcome, f"{better} of {len(rows)} cells better, {worse} worse. {cells}"
                 + _not_judged(skipped))


def _label(row: Any) -> str:
    return row.strategy if row.config == "-" else f"{row.strategy} ({row.config})"


GAP_QUANTITIES = tuple(q for q in QUANTITIES if q[1] != "accuracy")


def _uniformity_claim(tests: pd.DataFrame, stalled: dict[tuple[str, str], str]) -> Claim:
    claim = "Personalization does not change fairness uniformly: some clients gain and others lose"
    rule = ("per personalized configuration vs fedavg and gap: count the clients whose interval over seeds of Δ "
            "lies entirely below 0 (fairer) and entirely above 0 (less fair). A configuration is non-uniform if "
            "some gap has clients on both sides. Supported: every configuration non-uniform; not supported: "
            "none; mixed: otherwise. Needs 2+ seeds." + NOT_CONVERGED_RULE)
    rows = tests[(tests["baseline"] == "fedavg") & tests["strategy"].map(is_personalized)
                 & (tests["metric"] != "accuracy") & (tests["config"].str.split(" ").str[0] != TUNED)]
    arms = list(dict.fromkeys(zip(rows["strategy"], rows["config"])))
    skipped = [stalled[a] for a in [("fedavg", "-"), *arms] if a in stalled]
    rows = rows.iloc[0:0] if ("fedavg", "-") in stalled else rows
    rows = rows[[a not in stalled for a in zip(rows["strategy"], rows["config"])]]
    if rows.empty or rows["n_seeds"].max() < 2:
        return Claim(claim, rule, "not assessable",
                     ("no converged personalized configuration compared with a converged fedavg" if skipped else
                      "no personalized configuration compared with fedavg" if rows.empty else
                      "one seed: no per-client intervals") + _not_judged(skipped))
    verdicts, parts = [], []
    for (strategy, config), part in rows.groupby(["strategy", "config"], sort=False):
        both = part[(part["states_ci_below_0"] > 0) & (part["states_ci_above_0"] > 0)]
        verdicts.append(not both.empty)
        counts = ", ".join(f"{_quantity(r.attribute, r.metric)} {int(r.states_ci_below_0)} fairer/"
                           f"{int(r.states_ci_above_0)} less fair" for r in part.itertuples(index=False))
        label = strategy if config == "-" else f"{strategy} ({config})"
        parts.append(f"{label}: {'non-uniform' if verdicts[-1] else 'uniform'} ({counts})")
    outcome = "supported" if all(verdicts) else "not supported" if not any(verdicts) else "mixed"
    return Claim(claim, rule, outcome, "; ".join(parts) + _not_judged(skipped))


def weight(arm: Arm) -> float | None:
    """The arm's lambda ("lambda=0.5" -> 0.5); None for an arm without one."""
    return float(arm.config.split("=", 1)[1]) if arm.config.startswith("lambda=") else None


def lambda_points(arms: Sequence[Arm], strategy: str) -> list[tuple[float, Arm]]:
    """(lambda, arm) of a Fair-* strategy by weight; without a lambda = 0 arm its base strategy
    stands in, if its settings match (the same keys but strategy and lambda)."""
    points = sorted(((w, a) for a in arms if a.strategy == strategy and a.runs and (w := weight(a)) is not None),
                    key=lambda p: p[0])
    base = baseline_arm(arms, FAIR_BASES[strategy])
    if points and points[0][0] != 0 and base is not None:
        def plain(arm: Arm) -> dict[str, Any]:
            settings = arm.runs[arm.seeds[0]].settings()
            return {k: v for k, v in settings.items() if k not in ("strategy", "lambda")}
        if plain(base) == plain(points[0][1]):
            points.insert(0, (0.0, base))
    return points


LAMBDA_CLAIMS = {"fair-ifca": "Fair-FCA", "fair-flhc": "Fair-FL+HC"}  # strategy -> the paper's name


def _lambda_arms(arms: Sequence[Arm], strategy: str) -> tuple[list[tuple[float, Arm]], str]:
    """(lambda, arm) of a Fair-* strategy by weight, and a note when its base stands in as lambda = 0."""
    points = lambda_points(arms, strategy)
    base = FAIR_BASES[strategy]
    return points, (f"{base} counted as lambda = 0. " if points and points[0][1].strategy == base else "")


def _lambda_claim(arms: Sequence[Arm], which: str, stalled: dict[tuple[str, str], str], strategy: str) -> Claim:
    name, base = LAMBDA_CLAIMS[strategy], FAIR_BASES[strategy]
    claim = f"{name}'s lambda trades accuracy for fairness"
    rule = (f"{strategy} at the largest against the smallest lambda ({base} as lambda = 0 if its settings match), "
            f"paired by seed, mean over clients of accuracy and of the gap {name} weighs (its fair-metric for "
            "its fair-attribute): 'lower' if the mean Δ is below 0 and, with 2+ seeds, its interval too. "
            "Supported: accuracy lower and gap lower; mixed: one of them; not supported: neither. Spearman's "
            "rho over all lambdas shows whether the trade is monotone." + NOT_CONVERGED_RULE)
    points, note = _lambda_arms(arms, strategy)
    skipped = [stalled[(a.strategy, a.config)] for _, a in points if (a.strategy, a.config) in stalled]
    points = [(w, a) for w, a in points if (a.strategy, a.config) not in stalled]
    if len(points) < 2:
        return Claim(claim, rule, "not assessable",
                     f"needs converged {strategy} at 2+ lambdas (or 1 plus {base})" + _not_judged(skipped))
    (low_w, low), (high_w, high) = points[0], points[-1]
    fair = next(a for _, a in points if a.strategy == strategy)
    settings = fair.runs[fair.seeds[0]].config["config"]
    gap = f"{settings.get('fair-metric', 'sp')}_gap"
    attribute = settings.get("fair-attribute", "sex")
    parts, lower = [], []
    for metric, attr in (("accuracy", ""), (gap, attribute)):
        deltas = []
        for seed in sorted(set(low.runs) & set(high.runs)):
            rl, rh = low.round_of(seed, which), high.round_of(seed, which)
            if rl is not None and rh is not None:
                deltas.append(high.value(seed, rh, "MEAN", attr, metric) - low.value(seed, rl, "MEAN", attr, metric))
        mean, lo, hi, n = _ci_row(deltas)
        lower.append(np.isfinite(mean) and mean < 0 and (n < 2 or hi < 0))
        series = [(w, np.nanmean([a.value(s, a.round_of(s, which), "MEAN", attr, metric) for s in a.seeds
                                  if a.round_of(s, which) is not None])) for w, a in points]
        rho = spearmanr([w for w, _ in series], [v for _, v in series]).statistic if len(series) >= 3 else math.nan
        parts.append(f"Δ {_quantity(attr, metric)} "
                     f"{_interval(mean, lo, hi, n)} over {n} seed(s), Spearman rho {_fmt(rho, True)}")
    outcome = "supported" if all(lower) else "mixed" if any(lower) else "not supported"
    return Claim(claim, rule, outcome, f"{note}lambda {low_w:g} -> {high_w:g}: " + "; ".join(parts)
                 + _not_judged(skipped))


OPTIMIZER_KEYS = ("lr", "local-epochs", "batch-size")
CONTROL_QUANTITIES = (("accuracy", ""), ("sp_gap", "sex"), ("eo_gap", "sex"), ("sp_gap", "race"), ("eo_gap", "race"))


def optimizer(arm: Arm) -> dict[str, Any]:
    return {k: arm.runs[arm.seeds[0]].config["config"].get(k) for k in OPTIMIZER_KEYS}


def control_arm(arms: Sequence[Arm], strategy: str = "ifca") -> Arm | None:
    """The budget-matched control: an extra fedavg arm (neither paper nor tuned) with the same lr, local
    epochs and batch size as `strategy`'s paper arm."""
    target = baseline_arm(arms, strategy)
    if target is None:
        return None
    return next((a for a in arms if a.strategy == "fedavg" and a.config not in (PAPER, TUNED) and a.runs
                 and optimizer(a) == optimizer(target)), None)


def _paired_mean_deltas(other: Arm, base: Arm, which: str, metric: str, attribute: str) -> list[float]:
    """Per shared seed: other - base of the mean over clients, each run at its `which` round."""
    deltas = []
    for seed in sorted(set(other.runs) & set(base.runs)):
        ro, rb = other.round_of(seed, which), base.round_of(seed, which)
        if ro is not None and rb is not None:
            deltas.append(other.value(seed, ro, "MEAN", attribute, metric) - base.value(seed, rb, "MEAN", attribute, metric))
    return deltas


def _clear(mean: float, low: float, high: float, n: int) -> bool:
    """A change: non-zero and, with 2+ seeds, its interval over seeds excludes 0."""
    return bool(np.isfinite(mean) and mean != 0 and (n < 2 or low > 0 or high < 0))


def _control_claim(arms: Sequence[Arm], which: str, stalled: dict[tuple[str, str], str]) -> Claim:
    claim = ("IFCA's difference from FedAvg comes from clustering, not from its optimizer setting (budget-matched "
             "control: FedAvg at IFCA's lr, local epochs and batch size)")
    rule = ("paired by seed, mean over clients, per quantity (accuracy; SP and EO gaps for sex and race): the "
            "clustering effect is ifca − control (same optimizer setting, clustering on or off), the setting effect "
            "control − fedavg (same algorithm, the two settings); together they are ifca − fedavg. A quantity is "
            "'clustering' if the clustering effect is a change (non-zero; with 2+ seeds its interval over seeds "
            "excludes 0) larger in size than the setting effect, 'setting' if the setting effect is a change at "
            "least as large, else 'neither'. Supported: every quantity clustering; not supported: none; mixed: "
            "otherwise." + NOT_CONVERGED_RULE)
    ifca, fedavg, control = baseline_arm(arms, "ifca"), baseline_arm(arms, "fedavg"), control_arm(arms)
    if ifca is None or fedavg is None or control is None:
        missing = [name for name, arm in (("ifca", ifca), ("fedavg", fedavg), ("the control", control)) if arm is None]
        return Claim(claim, rule, "not assessable", f"needs completed runs of {', '.join(missing)} (the control: an "
                                                    "[arms] fedavg arm at ifca's lr, local-epochs and batch-size)")
    skipped = [stalled[(a.strategy, a.config)] for a in (ifca, control, fedavg) if (a.strategy, a.config) in stalled]
    if skipped:
        return Claim(claim, rule, "not assessable", f"needs converged ifca, control and fedavg.{_not_judged(skipped)}")
    parts, labels = [], []
    for metric, attribute in CONTROL_QUANTITIES:
        clustering = _ci_row(_paired_mean_deltas(ifca, control, which, metric, attribute))
        setting = _ci_row(_paired_mean_deltas(control, fedavg, which, metric, attribute))
        if _clear(*clustering) and abs(clustering[0]) > abs(setting[0]):
            labels.append("clustering")
        elif _clear(*setting) and abs(setting[0]) >= abs(clustering[0]):
            labels.append("setting")
        else:
            labels.append("neither")
        parts.append(f"{_quantity(attribute, metric)}: clustering Δ {_interval(*clustering)}, setting Δ "
                     f"{_interval(*setting)} over {clustering[3]} seed(s): {labels[-1]}")
    hits = labels.count("clustering")
    outcome = "supported" if hits == len(labels) else "not supported" if hits == 0 else "mixed"
    return Claim(claim, rule, outcome, f"control {control.label}; {hits} of {len(labels)} quantities clustering. "
                 + "; ".join(parts))


def _gaussian_claim(gaussian: pd.DataFrame) -> Claim:
    claim = ("In the Gaussian model FedAvg is less fair than the cluster's own threshold for the paper's p "
             "(1/2 and 2/3)")
    rule = ("analysis.gaussian on the published setting (means (7, 4, 6, 3), sigma 1, label rates 0.5, "
            "theta*_square 8, theta on a 0.01 grid), each published group-rate pair: is p in the interval where "
            "ASPD(theta_FA(p)) > ASPD(theta*)? Supported: every (group rates, p) cell; not supported: none; "
            "mixed: otherwise.")
    cells = [v for column in ("p2_3_less_fair", "p1_2_less_fair") for v in gaussian[column]]
    outcome = "supported" if all(cells) else "not supported" if not any(cells) else "mixed"
    worst = float(np.max(np.abs(gaussian[["aspd_star", "aspd_p2_3", "aspd_p1_2"]].to_numpy()
                                - gaussian[["published_star", "published_p2_3", "published_p1_2"]].to_numpy())))
    numbers = "; ".join(f"({r.gr_a:g}, {r.gr_b:g}): less fair for p in {r.less_fair_p}"
                        for r in gaussian.itertuples(index=False))
    return Claim(claim, rule, outcome, f"{sum(cells)} of {len(cells)} cells. {numbers}. Largest difference from "
                                       f"the published ASPDs: {worst:.4f}.")


def claims(arms: Sequence[Arm], tests: pd.DataFrame, gaussian: pd.DataFrame, which: str,
           stalled: dict[tuple[str, str], str]) -> list[Claim]:
    """One row per qualitative claim of the paper, each with its decision rule and the numbers; arms in
    `stalled` (not converged: `unconverged`) give no verdict and are named."""
    return [
        _cells_claim("Personalization improves local accuracy", tests, [("", "accuracy")], stalled),
        _cells_claim("Personalization improves local fairness", tests, GAP_QUANTITIES, stalled),
        _uniformity_claim(tests, stalled),
        *(_lambda_claim(arms, which, stalled, strategy) for strategy in LAMBDA_CLAIMS),
        _gaussian_claim(gaussian),
        _control_claim(arms, which, stalled),
        *([_cells_claim("Personalization improves local accuracy (tuned arms)", tests, [("", "accuracy")], stalled,
                        tuned=True),
           _cells_claim("Personalization improves local fairness (tuned arms)", tests, GAP_QUANTITIES, stalled,
                        tuned=True)] if any(is_tuned(a) for a in arms) else []),
    ]

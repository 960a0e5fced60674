"""Run and study report: learning curves, per-state accuracy and fairness, tile maps, comparison with FedAvg
(and with local training when it is among the runs).

Runs that differ only in their seed are one configuration; its numbers are means over seeds with
percentile-bootstrap 95% intervals, so a single lucky seed cannot pass for an effect. One run gets
a run report, worded for one seed. Every sentence in the report is computed from the numbers it sits
next to, and a run whose every client predicts a single class is called degenerate, not ranked.
`python -m analysis.report RESULTS_DIR [RESULTS_DIR ...] --out DIR`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.cli import OneLineErrorParser
from analysis.compare import (
    BASELINES,
    RunResults,
    baseline_path,
    compare_runs,
    data_differences,
    fmt,
    gain_loss_summary,
    markdown_table,
    outcomes,
    quantity_name,
    run_labels,
    summary_markdown,
    title_suffix,
)
from analysis.panels import panel_grid, tile_maps
from analysis.tilemap import category_map
from core.states import FOLKTABLES_STATES
from core.tasks import ATTRIBUTES
from recorder.files import ResultsError

RESAMPLES = 2000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
DPI = 120
COLORS = colormaps["tab10"].colors
STATE_GAPS = ("sp_gap", "eo_gap")  # per-state tables show these two; comparison.csv has all
BASELINE_TITLES = {"fedavg": "FedAvg", "local": "local training"}
CURVES = (  # (state row, attribute, metric, title)
    ("ALL", "", "accuracy", "pooled accuracy"),
    *(("MEAN", a, "sp_gap", f"mean SP gap ({a})") for a in ATTRIBUTES),
)
OVERALL = (
    ("ALL", "", "accuracy", "pooled accuracy"),
    ("MEAN", "", "accuracy", "mean accuracy"),
    *(("MEAN", a, m, f"mean {quantity_name(a, m)}") for a in ATTRIBUTES for m in STATE_GAPS),
)


def bootstrap_ci(values: Sequence[float], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): mean over seeds and its percentile-bootstrap interval; NaNs are dropped.

    Seeded, so the same runs always give the same report; one value gives a zero-width interval.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    mean = float(x.mean())
    # Equal values can resample to a mean one rounding step off; the interval must still hold the mean.
    return mean, min(float(low), mean), max(float(high), mean)


def ci_table(values: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per key, mean, low, high and the number of seeds with a value, from rows (keys..., value)."""
    rows = []
    for key, part in values.groupby(keys, sort=False):
        mean, low, high = bootstrap_ci(part["value"])
        rows.append([*key, mean, low, high, int(part["value"].notna().sum())])
    return pd.DataFrame(rows, columns=[*keys, "mean", "low", "high", "seeds"])


@dataclass(frozen=True)
class Configuration:
    """Runs identical but for their seed, sorted by seed, under one label."""

    label: str
    runs: tuple[RunResults, ...]

    @property
    def strategy(self) -> str:
        return self.runs[0].strategy

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    @property
    def states(self) -> tuple[str, ...]:
        return self.runs[0].states

    @property
    def clustered(self) -> bool:
        return any(run.deployed_counts()["cluster"].notna().any() for run in self.runs)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.label.lower()).strip("_")

    def rows(self, state: str, attribute: str, metric: str, final: bool = False) -> pd.DataFrame:
        """(round, value, seed) of one metrics.csv quantity across seeds, optionally final round only."""
        parts = []
        for run in self.runs:
            m = run.metrics
            part = m[(m["state"] == state) & (m["attribute"] == attribute) & (m["metric"] == metric)]
            if final:
                part = part[part["round"] == run.final_round]
            parts.append(part[["round", "value"]].assign(seed=run.seed))
        return pd.concat(parts, ignore_index=True)

    def final_states(self) -> pd.DataFrame:
        """Per state and quantity at each run's final round: mean over seeds with its interval."""
        values = pd.concat([r.state_values(r.final_round).assign(seed=r.seed) for r in self.runs])
        return ci_table(values, ["state", "attribute", "metric"])


def group_runs(runs: Sequence[RunResults]) -> list[Configuration]:
    """Configurations of runs equal in everything but the seed; FedAvg first, else input order."""
    groups: dict[str, list[RunResults]] = {}
    for run in runs:
        groups.setdefault(json.dumps(run.settings(), sort_keys=True, default=str), []).append(run)
    for members in groups.values():
        seen: dict[int, RunResults] = {}
        for run in members:
            if run.seed in seen:
                raise ValueError(f"{seen[run.seed].path} and {run.path} are the same configuration and seed")
            seen[run.seed] = run
    ordered = sorted(groups.values(), key=lambda g: g[0].strategy != "fedavg")
    labels = run_labels([g[0] for g in ordered])
    return [
        Configuration(label, tuple(sorted(g, key=lambda r: r.seed)))
        for label, g in zip(labels, ordered, strict=True)
    ]


def cell(mean: float, low: float, high: float, seeds: int, signed: bool = False) -> str:
    """The mean, with its interval when several seeds give one."""
    if seeds > 1 and np.isfinite(low):
        return f"{fmt(mean, signed)} [{fmt(low, signed)}, {fmt(high, signed)}]"
    return fmt(mean, signed)


def several_seeds(configs: Sequence[Configuration]) -> bool:
    return any(len(config.runs) > 1 for config in configs)


def over_seeds(configs: Sequence[Configuration]) -> str:
    """How the numbers were made: ', mean over seeds' for a study, nothing for single runs."""
    return ", mean over seeds" if several_seeds(configs) else ""


def single_class_states(run: RunResults) -> list[str]:
    """States whose deployed model predicts one class for every test record at the final round."""
    counts = run.deployed_counts()
    final = counts[(counts["round"] == run.final_round) & (counts["attribute"] == counts["attribute"].iloc[0])]
    per_state = final.groupby("state")[["tp", "fp", "tn", "fn"]].sum()
    one_class = (per_state["tp"] + per_state["fp"] == 0) | (per_state["tn"] + per_state["fn"] == 0)
    return sorted(per_state.index[one_class])


def degenerate(config: Configuration) -> bool:
    """Every client of every run predicts a single class: every gap is 0 by construction."""
    return all(set(single_class_states(run)) >= set(run.states) for run in config.runs)


def interval_note(configs: Sequence[Configuration]) -> str:
    return f" [{LEVEL:.0%} interval when several seeds]" if several_seeds(configs) else ""


def _seeds_text(config: Configuration) -> str:
    n = len(config.runs)
    return f"{n} seeds ({', '.join(map(str, config.seeds))})" if n > 1 else f"seed {config.seeds[0]}"


def _save(fig: Figure, out: Path, name: str) -> str:
    fig.savefig(out / name, dpi=DPI)
    return name


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if np.isfinite(v)]


# Sections: each returns Markdown and writes its figures into `out`.


def header_section(configs: list[Configuration]) -> str:
    runs = [run for c in configs for run in c.runs]
    rows = []
    for config in configs:
        for run in config.runs:
            data = run.config["data"]
            source = str(data.get("source", "?")) + (f" `{data['path']}`" if data.get("path") else "")
            source += f" ({data['label']})" if data.get("label") else ""
            commit = str(run.config.get("git_commit", "?"))[:12]
            rows.append([f"`{run.path}`", config.label, run.task, source, len(run.states), run.final_round,
                         run.seed, commit])
    header = ["run", "strategy", "task", "data source", "states", "rounds", "seed", "git commit"]
    if len(runs) == 1:
        title, intro = "run report", (f"One run, seed {runs[0].seed}: no intervals (`./run.sh study` repeats "
                                      "runs over seeds and gives them).")
    else:
        title = "study report" if several_seeds(configs) else f"{len(runs)} runs compared"
        intro = (f"{len(runs)} runs in {len(configs)} configuration(s); a configuration's runs differ only in "
                 f"their seed. Intervals are {LEVEL:.0%} percentile-bootstrap intervals over seeds "
                 f"({RESAMPLES} resamples, seed {BOOTSTRAP_SEED}).")
    lines = [f"# Personalization and group fairness: {title}", intro, markdown_table(header, rows)]
    for config in configs:
        if degenerate(config):
            lines.append(f"**{config.label} is degenerate**: at the final round every client predicts a single "
                         "class, so accuracy is the base rate and every gap is 0 by construction; nothing below "
                         "is ranked for it. Train longer (more rounds or local epochs, or a larger lr).")
    for states in dict.fromkeys(run.states for run in runs):
        lines.append(f"States ({len(states)}): {', '.join(states)}.")
        missing = [s for s in FOLKTABLES_STATES if s not in {c.split("-")[0] for c in states}]
        selected = any(str(run.config["config"].get("states", "")) for run in runs if run.states == states)
        if missing and selected:
            lines.append(f"Not selected (the `states` key): {', '.join(missing)}.")
        elif missing and any(run.config["data"].get("source") != "synthetic" for run in runs):
            lines.append(f"Absent from the data: {', '.join(missing)}, so {len(states)} clients where the paper "
                         f"had {len(FOLKTABLES_STATES)} (50 states and PR).")
    for versions in dict.fromkeys(json.dumps(run.config.get("versions", {})) for run in runs):
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in json.loads(versions).items()) + ".")
    return "\n\n".join(lines)


def _overall(config: Configuration, state: str, attribute: str, metric: str) -> pd.Series:
    """mean, low, high, seeds of one pooled or mean-over-states metric at each run's final round."""
    table = ci_table(config.rows(state, attribute, metric, final=True).assign(key=0), ["key"])
    if table.empty:  # a run that never logged this metric
        return pd.Series({"mean": math.nan, "low": math.nan, "high": math.nan, "seeds": 0})
    return table.iloc[0]


def curves_section(configs: list[Configuration], out: Path) -> str:
    fig = Figure(figsize=(5.2 * len(CURVES), 4.2), layout="constrained")
    axes = fig.subplots(1, len(CURVES))
    for i, config in enumerate(configs):
        color = COLORS[i % len(COLORS)]
        for ax, (state, attribute, metric, title) in zip(axes, CURVES, strict=True):
            curve = ci_table(config.rows(state, attribute, metric), ["round"]).sort_values("round")
            ax.plot(curve["round"], curve["mean"], marker="o", markersize=3, color=color,
                    label=f"{config.label}, {_seeds_text(config)}")
            if len(config.runs) > 1:
                ax.fill_between(curve["round"], curve["low"], curve["high"], color=color, alpha=0.2, lw=0)
            ax.set_title(title)
            ax.set_xlabel("round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=8)
    name = _save(fig, out, "learning_curves.png")
    rows = []
    for config in configs:
        row = [config.label, ", ".join(map(str, config.seeds))]
        for key in OVERALL:
            summary = _overall(config, *key[:3])
            row.append(cell(summary["mean"], summary["low"], summary["high"], summary["seeds"]))
        rows.append(row)
    finals = {title: [(c.label, _overall(c, *key)["mean"]) for c in configs] for *key, title in CURVES}
    clauses = []
    for title, pairs in finals.items():
        defined = [p for p in pairs if np.isfinite(p[1])]
        if not defined:
            clauses.append(f"the {title} is undefined")
        elif len(configs) == 1:
            clauses.append(f"the {title} is {fmt(defined[0][1])}")
        else:
            pick = max if title == "pooled accuracy" else min
            label, value = pick(defined, key=lambda p: p[1])
            extreme = "highest" if pick is max else "lowest"
            clauses.append(f"the {extreme} {title} is {label}'s ({fmt(value)})")
    return "\n\n".join([
        "## Learning curves and final-round means",
        f"![Pooled accuracy and mean SP gap by round]({name})",
        f"Final round{over_seeds(configs)}{interval_note(configs)}; 'mean' is the unweighted "
        "mean over states, 'pooled' pools every state's test records.",
        markdown_table(["configuration", "seeds" if several_seeds(configs) else "seed", *(key[3] for key in OVERALL)],
                       rows),
        "At the final round " + "; ".join(clauses) + ".",
    ])


def scatter_section(configs: list[Configuration], out: Path) -> str:
    attributes = list(ATTRIBUTES)
    fig = Figure(figsize=(6.0 * len(attributes), 4.6 * len(configs)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(configs), len(attributes), sharex="col", sharey=True))
    clauses = []
    for i, config in enumerate(configs):
        table = config.final_states().set_index(["state", "attribute", "metric"])["mean"]
        accuracy = table.xs(("", "accuracy"), level=("attribute", "metric"))
        parts = []
        for ax, attribute in zip(axes[i], attributes, strict=True):
            gap = table.xs((attribute, "sp_gap"), level=("attribute", "metric")).reindex(accuracy.index)
            ax.scatter(gap, accuracy, s=14, color=COLORS[i % len(COLORS)])
            for state in accuracy.index:
                ax.annotate(state, (gap[state], accuracy[state]), fontsize=6.5, xytext=(2, 2),
                            textcoords="offset points")
            ax.set_title(f"{config.label}: SP gap ({attribute})", fontsize=10)
            ax.set_xlabel(f"SP gap ({attribute})")
            ax.set_ylabel("accuracy")
            ok = gap.notna() & accuracy.notna()
            with np.errstate(invalid="ignore", divide="ignore"):  # a constant column gives NaN: n/a
                r = np.corrcoef(gap[ok], accuracy[ok])[0, 1] if ok.sum() > 2 else math.nan
            parts.append(f"r = {fmt(r)} ({attribute})")
        clauses.append(f"{config.label} {', '.join(parts)}")
    name = _save(fig, out, "accuracy_vs_sp_gap.png")
    return "\n\n".join([
        "## Accuracy against SP gap, one point per state (final round)",
        f"![Accuracy against SP gap per state]({name})",
        "Pearson correlation across states of accuracy with the SP gap: " + "; ".join(clauses) + ".",
    ])


def _cluster_panel(ax: Axes, config: Configuration, run: RunResults) -> str:
    """One run's final cluster map; returns its clause for the section's sentence."""
    counts = run.deployed_counts()
    final = counts[(counts["round"] == run.final_round) & counts["cluster"].notna()].drop_duplicates("state")
    members = dict(zip(final["state"], final["cluster"].astype(int), strict=True))
    sizes = pd.Series(members).value_counts().sort_index()
    colors = {j: COLORS[j % len(COLORS)] for j in sizes.index}
    category_map(ax, members, colors, f"{config.label}, seed {run.seed}, round {run.final_round}")
    handles = [ax.scatter([], [], marker="s", s=80, color=colors[j], label=f"cluster {j} ({n} states)")
               for j, n in sizes.items()]
    ax.legend(handles=handles, loc="upper left", fontsize=8, frameon=False)  # the grid's empty corner
    return f"seed {run.seed}: " + ", ".join(f"{n} states in cluster {j}" for j, n in sizes.items())


def cluster_section(configs: list[Configuration], out: Path) -> str:
    parts = ["## Cluster membership (final round)"]
    for config in (c for c in configs if c.clustered):
        fig, axes = panel_grid(len(config.runs), 6.4, 4.6)
        clauses = [_cluster_panel(ax, config, run) for ax, run in zip(axes, config.runs, strict=True)]
        name = _save(fig, out, f"clusters_{config.slug}.png")
        parts += [f"![Clusters of {config.label}]({name})", f"{config.label}, {'; '.join(clauses)}."]
    return "\n\n".join(parts) if len(parts) > 1 else ""


def _map_figure(panels: list[tuple[str, dict[str, float]]], out: Path, name: str, cmap: str,
                norm: Normalize, label: str, note: Callable[[float], str]) -> str:
    """Tile maps of per-state values, one panel each, sharing one colour scale."""
    return _save(tile_maps(panels, cmap, norm, label, note, 6.4, 4.4), out, name)


def _extremes(values: dict[str, float]) -> str:
    finite = {s: v for s, v in values.items() if np.isfinite(v)}
    if not finite:
        return "undefined in every state"
    high, low = max(finite, key=finite.get), min(finite, key=finite.get)
    return f"largest in {high} ({fmt(finite[high])}), smallest in {low} ({fmt(finite[low])})"


def gap_map_section(configs: list[Configuration], out: Path) -> str:
    parts = [f"## SP gap by state (final round{over_seeds(configs)})"]
    for attribute in ATTRIBUTES:
        values = []
        for config in configs:
            table = config.final_states()
            rows = table[(table["attribute"] == attribute) & (table["metric"] == "sp_gap")]
            values.append(dict(zip(rows["state"], rows["mean"], strict=True)))
        finite = _finite([v for per_state in values for v in per_state.values()])
        # The shared colour scale spans the states' range, so differences between states show.
        low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
        norm = Normalize(low, high) if high - low > 1e-6 else Normalize(0.0, max(1.0, high))
        panels = [(f"{c.label}: SP gap ({attribute})", v) for c, v in zip(configs, values, strict=True)]
        name = _map_figure(panels, out, f"sp_gap_map_{attribute}.png", "viridis", norm,
                           f"SP gap ({attribute})", lambda v: f"{v:.2f}")
        where = "; ".join(f"under {c.label} " + ("0 in every state (degenerate: one class predicted)"
                                                 if degenerate(c) else _extremes(v))
                          for c, v in zip(configs, values, strict=True))
        parts += [f"![SP gap ({attribute}) by state]({name})",
                  f"The SP gap ({attribute}) is {where} (grey: state not in the run or gap undefined)."]
    return "\n\n".join(parts)


def compare_configurations(base: Configuration, other: Configuration) -> pd.DataFrame | None:
    """Per-state deltas other - base averaged over the seeds both have (None if none is shared).

    The baseline (fedavg or local) names its column, as in compare_runs; adds delta_low, delta_high
    and seeds; the outcome is that of the mean delta.
    """
    pairs = [(b, o) for b in base.runs for o in other.runs if b.seed == o.seed]
    if not pairs:
        return None
    deltas = pd.concat([compare_runs(b, o, label=other.label) for b, o in pairs], ignore_index=True)
    keys = ["strategy", "state", "attribute", "metric"]
    means = deltas.groupby(keys, sort=False)[[base.strategy, "other"]].mean().reset_index()
    ci = ci_table(deltas.rename(columns={"delta": "value"}), keys)
    frame = means.merge(ci, on=keys)
    frame = frame.rename(columns={"mean": "delta", "low": "delta_low", "high": "delta_high"})
    frame["outcome"] = outcomes(frame["metric"], frame["delta"])
    return frame


def _baseline_for(configs: list[Configuration], other: Configuration, baseline: str) -> Configuration | None:
    """The first `baseline` configuration on the same task, data and states as `other`."""
    for config in configs:
        if config.strategy == baseline and not data_differences(config.runs[0], other.runs[0], seed=False):
            return config
    return None


def _gain_sentence(strategy: str, summary: pd.DataFrame) -> str:
    """e.g. 'ifca lowers the SP gap (sex) in 31 of 46 states and raises it in 15, ...'."""
    by = {(r.attribute, r.metric): r for r in summary.itertuples(index=False)}
    clauses = [f"lowers the SP gap ({a}) in {by[(a, 'sp_gap')].gain} of {by[(a, 'sp_gap')].states} states "
               f"and raises it in {by[(a, 'sp_gap')].loss}" for a in ATTRIBUTES]
    accuracy = by[("", "accuracy")]
    undefined = sum(by[(a, "sp_gap")].undefined for a in ATTRIBUTES)
    return (f"{strategy} {', '.join(clauses)}, and raises accuracy in {accuracy.gain} of {accuracy.states} "
            f"(lowers it in {accuracy.loss})"
            + (f"; {undefined} SP gaps are undefined." if undefined else "."))


def _delta_table(part: pd.DataFrame) -> str:
    quantities = [("", "accuracy"), *((a, m) for m in STATE_GAPS for a in ATTRIBUTES)]
    index = part.set_index(["state", "attribute", "metric"])
    columns = ["delta", "delta_low", "delta_high", "seeds"]
    rows = [[state, *(cell(*index.loc[(state, a, m), columns], signed=True) for a, m in quantities)]
            for state in pd.unique(part["state"])]
    return markdown_table(["state", *(f"Δ {quantity_name(a, m)}" for a, m in quantities)], rows)


def _baseline_section(configs: list[Configuration], out: Path, baseline: str) -> str:
    """Every other configuration against `baseline` ('' when none has a `baseline` configuration)."""
    frames, skipped = [], []
    for other in (c for c in configs if c.strategy != baseline):
        base = _baseline_for(configs, other, baseline)
        frame = None if base is None else compare_configurations(base, other)
        if frame is not None:
            frames.append(frame)
        elif base is not None:
            skipped.append(other.label)
    if not frames and not skipped:
        return ""
    title, against = BASELINE_TITLES[baseline], title_suffix(baseline)
    parts = [f"## Per-state change relative to {title} (other - {baseline}, final round)"]
    if skipped:
        parts.append(f"No {title} run shares a seed with {', '.join(skipped)}; not compared.")
    if not frames:
        return "\n\n".join(parts)
    table = pd.concat(frames, ignore_index=True)
    csv = baseline_path(out / "comparison.csv", baseline)
    table.to_csv(csv, index=False, lineterminator="\n")
    summary = gain_loss_summary(table)
    parts += ["Gain = higher accuracy or smaller gap; with several seeds, by the mean Δ over paired seeds. "
              f"All rows: `{csv.name}`.", summary_markdown(summary)]
    parts += [_gain_sentence(s, part) for s, part in summary.groupby("strategy", sort=False)]
    for attribute in ATTRIBUTES:
        rows = table[(table["attribute"] == attribute) & (table["metric"] == "sp_gap")]
        top = max(_finite(rows["delta"].abs().tolist()), default=0.0) or 1.0
        panels = [(f"{s}: Δ SP gap ({attribute})", dict(zip(p["state"], p["delta"], strict=True)))
                  for s, p in rows.groupby("strategy", sort=False)]
        name = _map_figure(panels, out, baseline_path(out / f"delta_sp_gap_map_{attribute}.png", baseline).name,
                           "RdBu_r", Normalize(-top, top), f"Δ SP gap ({attribute}); red: larger than {baseline}",
                           lambda v: f"{v:+.3f}")
        parts.append(f"![Change of the SP gap ({attribute}) relative to {baseline}]({name})")
    for strategy, part in table.groupby("strategy", sort=False):
        parts += [f"### {strategy}: Δ per state{against}", _delta_table(part)]
    return "\n\n".join(parts)


def comparison_section(configs: list[Configuration], out: Path) -> str:
    """The comparison against FedAvg, then, when local training was run, against it."""
    sections = (_baseline_section(configs, out, baseline) for baseline in BASELINES)
    return "\n\n".join(section for section in sections if section)


def group_sizes(config: Configuration) -> pd.DataFrame:
    """Test records per state and group at the final round: min, max over seeds and as text."""
    frames = []
    for run in config.runs:
        counts = run.deployed_counts()
        frames.append(counts[counts["round"] == run.final_round])
    counts = pd.concat(frames, ignore_index=True)
    sizes = counts.groupby(["state", "attribute", "group"], sort=False)["n"].agg(["min", "max"]).reset_index()
    sizes["text"] = [str(lo) if lo == hi else f"{lo}–{hi}"
                     for lo, hi in zip(sizes["min"], sizes["max"], strict=True)]
    return sizes


def _state_table(config: Configuration, sizes: pd.DataFrame) -> str:
    table = config.final_states().set_index(["state", "attribute", "metric"])
    n = sizes.set_index(["state", "attribute", "group"])["text"]
    columns = ["mean", "low", "high", "seeds"]
    header = ["state", "accuracy"]
    for attribute, groups in ATTRIBUTES.items():
        header += [f"n ({'/'.join(groups)})", *(quantity_name(attribute, m) for m in STATE_GAPS)]
    rows = []
    for state in config.states:
        row = [state, cell(*table.loc[(state, "", "accuracy"), columns])]
        for attribute, groups in ATTRIBUTES.items():
            row.append("/".join(n.get((state, attribute, g), "0") for g in groups))
            row += [cell(*table.loc[(state, attribute, m), columns]) for m in STATE_GAPS]
        rows.append(row)
    return markdown_table(header, rows)


def per_state_section(configs: list[Configuration]) -> str:
    sizes = {config.label: group_sizes(config) for config in configs}
    every = pd.concat(sizes.values(), ignore_index=True)
    smallest = every.loc[every["min"].idxmin()] if not every.empty else None
    if smallest is None:
        sentence = "counts.csv has no rows for the final round, so group sizes are unknown."
    elif smallest["min"] > 0:
        sentence = (f"The smallest group is {smallest['group']} in {smallest['state']} "
                    f"(n = {smallest['min']}), where one changed prediction moves its selection rate "
                    f"by {fmt(1 / smallest['min'])}.")
    else:
        sentence = f"{smallest['group']} in {smallest['state']} has no test records, so its gaps are n/a."
    parts = ["## Per-state results (final round) with group sizes",
             f"n: test records per group (counts.csv, final round){over_seeds(configs)}{interval_note(configs)}.",
             sentence]
    for config in configs:
        parts += [f"### {config.label} ({_seeds_text(config)})", _state_table(config, sizes[config.label])]
    return "\n\n".join(parts)


def build_report(runs: Sequence[RunResults], out: Path) -> Path:
    """Write report.md and its PNGs into the existing directory `out`; returns report.md's path."""
    configs = group_runs(runs)
    sections = [
        header_section(configs),
        curves_section(configs, out),
        scatter_section(configs, out),
        cluster_section(configs, out),
        gap_map_section(configs, out),
        comparison_section(configs, out),
        per_state_section(configs),
    ]
    path = out / "report.md"
    path.write_text("\n\n".join(s for s in sections if s) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineErrorParser(prog="python -m analysis.report", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RESULTS_DIR", help="results directories")
    parser.add_argument("--out", type=Path, required=True, help="report directory (new or empty)")
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        parser.error(f"argument --out: {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        parser.error(f"argument --out: {str(out)!r} exists and is not empty; choose a new directory")
    try:
        runs = [RunResults.load(path) for path in args.runs]
        group_runs(runs)
    except (ResultsError, ValueError) as error:
        parser.error(str(error))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as error:
        parser.error(f"argument --out: cannot create a directory next to {str(out)!r}: {error}")
    try:
        work.chmod(0o755)  # mkdtemp makes it private; the report is meant to be read
        build_report(runs, work)
        os.replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out / 'report.md'} and {len(list(out.glob('*.png')))} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())

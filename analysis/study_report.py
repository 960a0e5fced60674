"""The study's outputs: summary.csv and the other tables, figures, and one report (report.md and a
self-contained report.html) that answers "does personalization change group fairness?".

Every sentence and verdict is computed from the numbers next to it; each claim states its decision
rule. Written by `python -m analysis.study` after its runs, and again whenever it is re-run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from analysis.compare import GAPS, fmt, quantity_name
from analysis.document import Block, Bullets, Figure, Heading, Paragraph, table, to_html, to_markdown
from analysis.gaussian import ThresholdModel, optimal_threshold, plot_sweep, snap_threshold
from analysis.gaussian_tables import SCENARIOS, SIGMA, THETA_SQUARE
from analysis.panels import panel_grid as _panels
from analysis.panels import tile_maps
from analysis.regions import DIVISIONS, client_state
from analysis.report import BOOTSTRAP_SEED, LEVEL, RESAMPLES, cell
from analysis.stats import PLATEAU_TOL
from analysis.study_lambda import flip_table, lambda_table
from analysis.study_plan import PlannedRun
from analysis.study_tables import (
    ALPHA,
    Arm,
    Claim,
    Comparisons,
    claims,
    cluster_tables,
    clustered,
    compare_arms,
    convergence_table,
    final_assignment,
    flagged,
    gaussian_table,
    lambda_points,
    load_arms,
    pareto_table,
    pooled_loss,
    primary_round,
    summary_table,
    unconverged,
)
from analysis.study_tune import TUNING_FILE
from analysis.tilemap import TILES, category_map
from core.states import FOLKTABLES_STATES
from recorder.files import write_atomic

DPI = 110
COLORS = colormaps["tab10"].colors
FIGURES = "figures"
TITLE = "Does personalization change group fairness? Study report"
ABSENT_46 = {"CA", "FL", "NY", "TX", "PR"}  # the shared prepared file lacks these
FLAG = "†"


def _save(fig: MplFigure, out: Path, name: str) -> str:
    path = f"{FIGURES}/{name}"
    fig.savefig(out / path, dpi=DPI)
    return path


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_atomic(path, frame.to_csv(index=False, lineterminator="\n").encode())


def _label(arm: Arm, flags: set[tuple[str, str]]) -> str:
    return arm.label + (f" {FLAG}" if (arm.strategy, arm.config) in flags else "")


def _count(v: float) -> str:
    return "n/a" if not np.isfinite(v) else str(int(v))


def _row_label(strategy: str, config: str) -> str:
    return strategy if config == "-" else f"{strategy} ({config})"


# --- data ---------------------------------------------------------------------------------------------

def data_description(arm: Arm) -> str:
    run = arm.runs[arm.seeds[0]]
    data = run.config["data"]
    source = str(data.get("source", "?")) + (f" `{data['path']}`" if data.get("path") else "")
    source += f" ({data['label']})" if data.get("label") else ""
    rows = run.config["config"].get("synthetic-rows")
    extra = f", {rows} rows per state" if data.get("source") == "synthetic" and rows else ""
    return f"{run.task} task, {source}{extra}, {len(run.states)} clients"


def data_section(arms: Sequence[Arm]) -> tuple[list[Block], bool]:
    """The data each arm ran on; True if arms used different data (tables then say which)."""
    populated = [a for a in arms if a.runs]
    if not populated:
        return [Heading(2, "Data"), Paragraph("No run has completed, so there is no data to describe.")], False
    kinds: dict[str, list[str]] = {}
    for arm in populated:
        kinds.setdefault(data_description(arm), []).append(arm.label)
    blocks: list[Block] = [Heading(2, "Data")]
    mixed = len(kinds) > 1
    if mixed:
        blocks.append(Paragraph("**Mixed data sources**: the configurations did not all run on the same data, so "
                                "tables carry a `data` column and only configurations on the same data are "
                                "compared with each other."))
        blocks.append(Bullets(tuple(f"{kind}: {', '.join(labels)}" for kind, labels in kinds.items())))
    else:
        blocks.append(Paragraph(f"Every run used the same data: {next(iter(kinds))} (config.json `data`)."))
    seen = set()
    for arm in populated:
        states = tuple(sorted({client_state(c) for c in arm.runs[arm.seeds[0]].states}))
        if states in seen:
            continue
        seen.add(states)
        absent = sorted(set(FOLKTABLES_STATES) - set(states))
        text = f"{len(states)} states: {', '.join(states)}."
        if set(absent) == ABSENT_46:
            text += (" The data has **46 states**: CA, FL, NY, TX and PR are absent (the shared prepared file), "
                     "so results do not speak for the four largest states.")
        elif absent:
            text += f" Absent from folktables' 51 (50 states and PR): {', '.join(absent)}."
        blocks.append(Paragraph(text))
    return blocks, mixed


# --- per strategy -------------------------------------------------------------------------------------

MEANS_QUANTITIES = [("accuracy", ""), *((m, a) for m in GAPS for a in ("sex", "race"))]


def strategy_tables(summary: pd.DataFrame, arms: Sequence[Arm], which: str, flags: set[tuple[str, str]],
                    mixed: bool) -> list[Block]:
    index = summary[summary["round"] == which].set_index(["strategy", "config", "level", "metric", "attribute"])
    blocks: list[Block] = []
    for level, title in (("mean", "mean over clients (local)"), ("pooled", "pooled over all test records")):
        header = ["configuration", "seeds", *(quantity_name(a, m) for m, a in MEANS_QUANTITIES)]
        if mixed:
            header.insert(1, "data")
        rows = []
        for arm in arms:
            row = [_label(arm, flags)]
            if mixed:
                row.append(data_description(arm) if arm.runs else "-")
            key = (arm.strategy, arm.config, level)
            n = int(index.loc[(*key, "accuracy", "")]["n_seeds"]) if (*key, "accuracy", "") in index.index else 0
            row.append(str(n))
            for metric, attribute in MEANS_QUANTITIES:
                if (*key, metric, attribute) in index.index:
                    r = index.loc[(*key, metric, attribute)]
                    row.append(cell(r["mean"], r["ci_low"], r["ci_high"], int(r["n_seeds"])))
                else:
                    row.append("n/a")
            rows.append(row)
        blocks += [Paragraph(f"**{title}**, round {which}:"), table(header, rows)]
    return blocks


def strategy_figure(summary: pd.DataFrame, arms: Sequence[Arm], which: str, out: Path) -> str:
    level = summary[(summary["round"] == which) & (summary["level"] == "mean")]
    index = level.set_index(["strategy", "config", "metric", "attribute"])
    fig, axes = _panels(len(MEANS_QUANTITIES), 3.6, 0.5 + 0.35 * max(1, len(arms)), 4)
    for ax, (metric, attribute) in zip(axes, MEANS_QUANTITIES, strict=True):
        for i, arm in enumerate(arms):
            key = (arm.strategy, arm.config, metric, attribute)
            if key not in index.index or not np.isfinite(index.loc[key]["mean"]):
                continue
            r = index.loc[key]
            ax.errorbar([r["mean"]], [i], xerr=[[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]], fmt="o",
                        color=COLORS[i % len(COLORS)], capsize=3)
        ax.set_yticks(range(len(arms)), [a.label for a in arms], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(quantity_name(attribute, metric), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    return _save(fig, out, "strategy_means.png")


def strategy_section(summary: pd.DataFrame, arms: Sequence[Arm], which: str, flags: set[tuple[str, str]],
                     mixed: bool, out: Path) -> list[Block]:
    blocks: list[Block] = [
        Heading(2, "Per strategy: local accuracy and fairness"),
        Paragraph(f"Mean over seeds [{LEVEL:.0%} percentile-bootstrap interval over seeds, {RESAMPLES} resamples, "
                  f"seed {BOOTSTRAP_SEED}; one seed: the value itself]. 'Mean over clients' averages each client's "
                  "own (local) accuracy and gaps, unweighted (metrics.csv `MEAN`); 'pooled' pools every client's "
                  f"test records (`ALL`). {FLAG}: compared before its loss stopped improving (see Convergence). "
                  "All rows: `summary.csv`."),
    ]
    if any(a.runs for a in arms):
        blocks.append(Figure(strategy_figure(summary, arms, which, out),
                             f"Mean over clients of accuracy and gaps per configuration, round {which}"))
    blocks += strategy_tables(summary, arms, which, flags, mixed)
    if which != "final":
        blocks += [Paragraph("The same at each run's final round:"), *strategy_tables(summary, arms, "final", flags,
                                                                                      mixed)]
    return blocks


# --- tuning -------------------------------------------------------------------------------------------

def tuning_section(out: Path) -> list[Block]:
    """The tuning phase's candidates, scores and choices (tuning.csv), if the study tuned."""
    path = out / TUNING_FILE
    if not path.is_file():
        return []
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    blocks: list[Block] = [
        Heading(2, "Tuning"),
        Paragraph("Arm 'tuned' runs each strategy at the candidate of the grid's [tune] table chosen on validation: "
                  "each tuning run (`runs/tune-*`, tuning seeds only) is scored by its pooled validation loss at the "
                  "round chosen on validation (its lowest), averaged over the tuning seeds; the lowest wins, the "
                  "earlier candidate on ties. Fair-* strategies take their base strategy's choice (at lambda = 0 "
                  "they are that strategy). A tuned arm whose keys equal another arm's (the paper settings, the "
                  f"control) shares that arm's runs. All rows: `{TUNING_FILE}`."),
    ]
    if frame.empty:
        return [*blocks, Paragraph("No strategy has a choice yet: a tuning run did not complete.")]
    rows = [[r.strategy, r.candidate, r.seeds, fmt(r.val_loss), fmt(r.val_accuracy), r.val_rounds, r.stopped,
             "**chosen**" if r.chosen else ""] for r in frame.itertuples(index=False)]
    return [*blocks, table(["strategy", "candidate", "tuning seeds", "validation loss", "validation accuracy",
                            "round chosen per seed", "stopped per seed", "chosen"], rows)]


# --- per state ----------------------------------------------------------------------------------------

def _map_figure(panels: list[tuple[str, dict[str, float]]], out: Path, name: str, norm: Normalize,
                label: str, note: Callable[[float], str]) -> str | None:
    """Tile maps of per-client values, one panel each, one colour scale; None if no client has a tile."""
    panels = [(t, {c: v for c, v in values.items() if c in TILES}) for t, values in panels]
    if not any(values for _, values in panels):
        return None
    return _save(tile_maps(panels, "RdBu_r", norm, label, note, 6.0, 4.2), out, name)


STATE_QUANTITIES = [("", "accuracy"), *((a, m) for m in GAPS for a in ("sex", "race"))]


def state_section(comparisons: Comparisons, arms: Sequence[Arm], which: str, flags: set[tuple[str, str]],
                  out: Path) -> list[Block]:
    frame = comparisons.states
    blocks: list[Block] = [
        Heading(2, "Per state: change relative to FedAvg and to local training"),
        Paragraph(f"Δ = configuration − baseline per client, each run at its {which} round, paired by seed; mean "
                  f"over the shared seeds [{LEVEL:.0%} interval over seeds]. Higher accuracy and smaller gaps are "
                  "better. All rows: `state_deltas.csv`."),
    ]
    if comparisons.skipped:
        blocks.append(Bullets(tuple(f"not compared: {s}" for s in comparisons.skipped)))
    if frame.empty:
        blocks.append(Paragraph("No baseline (fedavg or local) with completed runs: nothing to compare."))
        return blocks
    for baseline, part in frame.groupby("baseline", sort=False):
        for attribute in ("sex", "race"):
            rows = part[(part["attribute"] == attribute) & (part["metric"] == "sp_gap")]
            top = max([abs(v) for v in rows["delta"] if np.isfinite(v)], default=0.0) or 1.0
            panels = [(f"{_row_label(s, c)}: Δ SP gap ({attribute})", dict(zip(p["state"], p["delta"], strict=True)))
                      for (s, c), p in rows.groupby(["strategy", "config"], sort=False)]
            name = _map_figure(panels, out, f"delta_{baseline}_sp_gap_{attribute}.png", Normalize(-top, top),
                               f"Δ SP gap ({attribute}) vs {baseline}; red: larger gap", lambda v: f"{v:+.3f}")
            if name:
                blocks.append(Figure(name, f"Change of the SP gap ({attribute}) relative to {baseline} by state"))
        for (strategy, config), rows in part.groupby(["strategy", "config"], sort=False):
            arm = next(a for a in arms if (a.strategy, a.config) == (strategy, config))
            index = rows.set_index(["state", "attribute", "metric"])
            table_rows = []
            for state in pd.unique(rows["state"]):
                table_rows.append([state, *(cell(*index.loc[(state, a, m), ["delta", "ci_low", "ci_high"]],
                                                 int(index.loc[(state, a, m), "n_seeds"]), signed=True)
                                            if (state, a, m) in index.index else "n/a"
                                            for a, m in STATE_QUANTITIES)])
            blocks += [Heading(3, f"{_label(arm, flags)} − {baseline}"),
                       table(["client", *(f"Δ {quantity_name(a, m)}" for a, m in STATE_QUANTITIES)], table_rows)]
    return blocks


# --- across states ------------------------------------------------------------------------------------

def tests_section(comparisons: Comparisons, which: str, flags: set[tuple[str, str]]) -> list[Block]:
    tests = comparisons.tests
    blocks: list[Block] = [
        Heading(2, "Across states: Wilcoxon signed-rank tests, Holm-corrected"),
        Paragraph("Per configuration and quantity: the two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon) "
                  "of the per-client mean Δ (over seeds) against 0; clients with Δ = 0 are dropped. p_holm: "
                  f"Holm-Bonferroni over every test against the same baseline at round {which}. Mean Δ: the mean "
                  f"over clients, averaged over seeds [{LEVEL:.0%} interval over seeds]. 'CI > 0' / 'CI < 0': "
                  "clients whose interval over seeds lies above / below 0 (n/a with one seed). Verdict: 'better' "
                  f"or 'worse' if p_holm < {ALPHA}, the mean Δ points that way and, with 2+ seeds, its interval "
                  "excludes 0; else 'no clear change'. With few clients the test cannot reach significance (6 "
                  "non-zero Δ are needed for p < 0.05). All rows: `tests.csv`."),
    ]
    if tests.empty:
        return [*blocks, Paragraph("Nothing was compared.")]
    for baseline, part in tests.groupby("baseline", sort=False):
        rows = []
        for r in part.itertuples(index=False):
            label = _row_label(r.strategy, r.config) + (f" {FLAG}" if (r.strategy, r.config) in flags else "")
            rows.append([label, quantity_name(r.attribute, r.metric), r.n_states,
                         cell(r.mean_delta, r.ci_low, r.ci_high, r.n_seeds, signed=True), fmt(r.median_delta, True),
                         fmt(r.W), fmt(r.p), fmt(r.p_holm), _count(r.states_ci_above_0), _count(r.states_ci_below_0),
                         r.verdict])
        blocks += [Heading(3, f"against {baseline}"),
                   table(["configuration", "quantity", "clients tested", "mean Δ", "median Δ", "W", "p", "p_holm",
                          "CI > 0", "CI < 0", "verdict"], rows)]
    return blocks


# --- frontier -----------------------------------------------------------------------------------------

def pareto_figure(pareto: pd.DataFrame, arms: Sequence[Arm], out: Path) -> str:
    fig, axes = _panels(len(GAPS) * 2, 4.4, 3.6, 2)
    colors = {(a.strategy, a.config): COLORS[i % len(COLORS)] for i, a in enumerate(arms)}
    panels = [(m, a) for m in GAPS for a in ("sex", "race")]
    for ax, (metric, attribute) in zip(axes, panels, strict=True):
        part = pareto[(pareto["metric"] == metric) & (pareto["attribute"] == attribute)]
        for r in part.itertuples(index=False):
            if not (np.isfinite(r.accuracy) and np.isfinite(r.gap)):
                continue
            ax.errorbar([r.gap], [r.accuracy], xerr=[[r.gap - r.gap_low], [r.gap_high - r.gap]],
                        yerr=[[r.accuracy - r.accuracy_low], [r.accuracy_high - r.accuracy]], fmt="o" if r.on_front
                        else "s", mfc="none" if not r.on_front else None, color=colors[(r.strategy, r.config)],
                        capsize=2, label=_row_label(r.strategy, r.config))
        front = part[part["on_front"]].sort_values("gap")
        ax.plot(front["gap"], front["accuracy"], color="black", lw=1, ls="--")
        ax.set_xlabel(quantity_name(attribute, metric) + " (mean over clients)", fontsize=8)
        ax.set_ylabel("accuracy (mean over clients)", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8)
    return _save(fig, out, "pareto.png")


def pareto_section(pareto: pd.DataFrame, arms: Sequence[Arm], which: str, out: Path) -> list[Block]:
    blocks: list[Block] = [
        Heading(2, "Accuracy-fairness frontier"),
        Paragraph(f"Each configuration's mean over clients of accuracy against each gap (round {which}), with "
                  f"{LEVEL:.0%} intervals over seeds on both axes. On the frontier (filled circles, dashed line; "
                  "★ in the table): no other configuration has higher accuracy and a smaller gap, judged on the "
                  "means; overlapping intervals mean the ordering is uncertain. All rows: `pareto.csv`."),
    ]
    if pareto.empty or not pareto["accuracy"].notna().any():
        return [*blocks, Paragraph("No completed runs.")]
    blocks.append(Figure(pareto_figure(pareto, arms, out), "Accuracy against each gap per configuration"))
    index = pareto.set_index(["strategy", "config", "metric", "attribute"])
    panels = [(m, a) for m in GAPS for a in ("sex", "race")]
    rows = []
    for arm in (a for a in arms if a.runs):
        first = index.loc[(arm.strategy, arm.config, panels[0][0], panels[0][1])]
        row = [arm.label, cell(first["accuracy"], first["accuracy_low"], first["accuracy_high"], int(first["n_seeds"]))]
        for metric, attribute in panels:
            r = index.loc[(arm.strategy, arm.config, metric, attribute)]
            row.append(cell(r["gap"], r["gap_low"], r["gap_high"], int(r["n_seeds"])) + (" ★" if r["on_front"] else ""))
        rows.append(row)
    blocks.append(table(["configuration", "accuracy", *(quantity_name(a, m) for m, a in panels)], rows))
    return blocks


# --- fairness weight -----------------------------------------------------------------------------------

def lambda_figure(frame: pd.DataFrame, out: Path) -> str:
    """Per Fair-* strategy: accuracy against its SP gap (sex) as lambda grows, intervals on both axes."""
    strategies = list(dict.fromkeys(frame["strategy"]))
    fig, axes = _panels(len(strategies), 4.6, 3.8, 2)
    for ax, strategy in zip(axes, strategies, strict=True):
        part = frame[frame["strategy"] == strategy]
        acc = part[part["metric"] == "accuracy"].set_index("lambda")
        gap = part[(part["metric"] == "sp_gap") & (part["attribute"] == "sex")].set_index("lambda")
        ax.errorbar(gap["mean"], acc["mean"], xerr=[gap["mean"] - gap["ci_low"], gap["ci_high"] - gap["mean"]],
                    yerr=[acc["mean"] - acc["ci_low"], acc["ci_high"] - acc["mean"]], fmt="o-", capsize=2)
        for w in acc.index:
            ax.annotate(f"λ={w:g}", (gap.loc[w, "mean"], acc.loc[w, "mean"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_title(strategy, fontsize=9)
        ax.set_xlabel("SP gap, sex (mean over clients)", fontsize=8)
        ax.set_ylabel("accuracy (mean over clients)", fontsize=8)
        ax.tick_params(labelsize=7)
    return _save(fig, out, "lambda.png")


def lambda_section(frame: pd.DataFrame, flips: pd.DataFrame, which: str, out: Path) -> list[Block]:
    blocks: list[Block] = [
        Heading(2, "Fairness weight (lambda)"),
        Paragraph(f"Per Fair-* strategy and lambda (round {which}): the share of client-rounds whose cluster "
                  "differs from the same seed's lambda = 0 run (the base strategy stands in when its settings "
                  f"match), and the mean over clients of accuracy and gaps with {LEVEL:.0%} intervals over seeds. "
                  "All rows: `lambda.csv`."),
    ]
    if frame.empty:
        return [*blocks, Paragraph("No Fair-* configuration in this study.")]
    blocks.append(Figure(lambda_figure(frame, out), "Accuracy against the SP gap (sex) as lambda grows"))
    rows = []
    for (strategy, w), part in frame.groupby(["strategy", "lambda"], sort=False):
        first = part.iloc[0]
        share = "n/a (no lambda = 0 run)" if not np.isfinite(first["changed_share"]) else \
            f"{first['changed_share']:.3f} of {int(first['client_rounds'])}"
        rows.append([strategy, f"{w:g}", share, *(cell(r.mean, r.ci_low, r.ci_high, int(r.n_seeds))
                                                  for r in part.itertuples(index=False))])
    metrics = frame.drop_duplicates(["metric", "attribute"])
    blocks.append(table(["strategy", "lambda", "choices changed", *(quantity_name(a, m) if a else m for m, a in
                                                                    zip(metrics["metric"], metrics["attribute"]))],
                        rows))
    unchanged = [s for s, part in frame.groupby("strategy") if (part["lambda"] > 0).any()
                 and (part.loc[part["lambda"] > 0, "changed_share"] == 0).all()]
    for strategy in unchanged:
        blocks.append(Paragraph(f"**No lambda changed a single choice of {strategy}.**"))
    if not flips.empty:
        r = flips.iloc[0]
        blocks.append(Paragraph(
            f"Why (fair-ifca at lambda = 0, {int(r['client_rounds'])} client-rounds of `clusters.csv`): the "
            f"loss-best cluster model beats the runner-up by a median {r['loss_margin_median']:.4f} in training "
            f"loss, while the models' gaps differ by a median {r['gap_margin_median']:.4f}. A weight flips a "
            f"choice only where the loss-best model has the larger gap ({r['flippable_share']:.1%} of client-rounds), "
            f"and there it must exceed the loss margin over the gap margin: {r['flip_lambda_p10']:.3g} flips a "
            f"tenth of those, {r['flip_lambda_median']:.3g} half. All rows: `lambda_flips.csv`."))
    return blocks


# --- clusters -----------------------------------------------------------------------------------------

def cluster_map(arm: Arm, out: Path) -> str | None:
    runs = [arm.runs[s] for s in arm.seeds]
    finals = [{c: j for c, j in final_assignment(run).items() if c in TILES} for run in runs]
    if not any(finals):
        return None
    fig, axes = _panels(len(runs), 6.0, 4.2, 2)
    for ax, run, final in zip(axes, runs, finals, strict=True):
        sizes = pd.Series(final, dtype="int64").value_counts().sort_index()
        colors = {j: COLORS[j % len(COLORS)] for j in sizes.index}
        category_map(ax, final, colors, f"{arm.label}, seed {run.seed}, round {run.final_round}")
        handles = [ax.scatter([], [], marker="s", s=80, color=colors[j], label=f"cluster {j} ({n})")
                   for j, n in sizes.items()]
        ax.legend(handles=handles, loc="upper left", fontsize=7, frameon=False)
    slug = "".join(ch if ch.isalnum() else "_" for ch in arm.label).strip("_")
    return _save(fig, out, f"clusters_{slug}.png")


def divisions_map(out: Path) -> str:
    fig, axes = _panels(1, 6.4, 4.4, 1)
    palette = [c for i, c in enumerate(COLORS) if i != 7]  # tab10 without its grey, which reads as "no data"
    colors = {d: palette[i % len(palette)] for i, d in enumerate(DIVISIONS)}
    category_map(axes[0], {s: d for d, (_, states) in DIVISIONS.items() for s in states}, colors,
                 "Census divisions (reference)")
    handles = [axes[0].scatter([], [], marker="s", s=60, color=colors[d], label=d) for d in DIVISIONS]
    axes[0].legend(handles=handles, loc="upper left", fontsize=6, frameon=False, ncols=2)
    return _save(fig, out, "census_divisions.png")


def cluster_section(arms: Sequence[Arm], diagnostics: pd.DataFrame, churn: pd.DataFrame, out: Path) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Cluster diagnostics")]
    if diagnostics.empty:
        return [*blocks, Paragraph("No configuration clustered its clients (no clusters.csv with memberships).")]
    blocks.append(Paragraph(
        "From clusters.csv. Stability: adjusted Rand index (ARI) of the final memberships of every pair of seeds "
        "(1: same partition up to cluster names, about 0: unrelated). Geography: ARI of each seed's final "
        "membership with the Census region (4) and division (9) of each client's state, PR left out, mean over "
        f"seeds [{LEVEL:.0%} interval]; with k clusters far fewer than regions the ARI stays low even for "
        "geographic clusters. Churn: fraction of clients whose cluster changed since the previous round. All "
        "rows: `cluster_diagnostics.csv`, `churn.csv`."))
    rows = [[_row_label(r.strategy, r.config), r.n_seeds, fmt(r.clusters_used), r.seed_pairs,
             f"{fmt(r.seed_ari_mean)} ({fmt(r.seed_ari_min)}–{fmt(r.seed_ari_max)})" if r.seed_pairs else "n/a",
             cell(r.region_ari, r.region_ari_low, r.region_ari_high, r.n_seeds),
             cell(r.division_ari, r.division_ari_low, r.division_ari_high, r.n_seeds), fmt(r.final_churn)]
            for r in diagnostics.itertuples(index=False)]
    blocks.append(table(["configuration", "seeds", "clusters used (final)", "seed pairs",
                         "ARI between seeds: mean (min–max)", "ARI with regions", "ARI with divisions",
                         "churn in the last round"], rows))
    if not churn.empty:
        mean = churn.groupby(["strategy", "config", "round"], sort=False)["churn"].mean().reset_index()
        fig, axes = _panels(1, 7.0, 3.6, 1)
        for i, ((strategy, config), part) in enumerate(mean.groupby(["strategy", "config"], sort=False)):
            axes[0].plot(part["round"], part["churn"], marker="o", ms=3, color=COLORS[i % len(COLORS)],
                         label=_row_label(strategy, config))
        axes[0].set_xlabel("round")
        axes[0].set_ylabel("fraction of clients that changed cluster")
        axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].legend(fontsize=8)
        blocks.append(Figure(_save(fig, out, "churn.png"), "Cluster churn per round, mean over seeds"))
        labels = [_row_label(s, c) for s, c in zip(mean["strategy"], mean["config"], strict=True)]
        wide = mean.assign(label=labels).pivot(index="round", columns="label", values="churn")
        wide = wide[list(dict.fromkeys(labels))]  # the study's order, not the alphabet
        blocks.append(table(["round", *wide.columns], [[r, *(fmt(v) for v in wide.loc[r])] for r in wide.index]))
    for arm in (a for a in arms if a.runs and clustered(a)):
        name = cluster_map(arm, out)
        if name:
            blocks.append(Figure(name, f"Final clusters of {arm.label} per seed"))
    blocks += [Figure(divisions_map(out), "Census divisions"),
               Paragraph("State → Census region and division:"),
               table(["region", "division", "states"],
                     [[region, division, ", ".join(states)] for division, (region, states) in DIVISIONS.items()])]
    return blocks


# --- convergence --------------------------------------------------------------------------------------

def convergence_section(arms: Sequence[Arm], convergence: pd.DataFrame, which: str, out: Path) -> list[Block]:
    blocks: list[Block] = [
        Heading(2, "Convergence"),
        Paragraph(f"Loss: pooled (`ALL`) validation loss when a run has a validation split, else pooled test "
                  f"loss. Plateau round: the first round after which the loss never falls more than "
                  f"{PLATEAU_TOL:g} (relative) below the best loss reached by then. A run whose plateau is its "
                  f"final round was still improving when it stopped. {FLAG} marks a configuration with a run "
                  f"compared (round {which}) before its plateau or while still improving. All rows: "
                  "`convergence.csv`."),
    ]
    if convergence.empty:
        return [*blocks, Paragraph("No completed runs.")]
    fig, axes = _panels(1, 7.5, 4.0, 1)
    for i, arm in enumerate(a for a in arms if a.runs):
        color = COLORS[i % len(COLORS)]
        curves = []
        for seed in arm.seeds:
            rounds, losses = pooled_loss(arm.val[seed] if seed in arm.val else arm.runs[seed].metrics)
            curves.append(pd.Series(losses, index=rounds))
        mean = pd.concat(curves, axis=1).mean(axis=1)
        axes[0].plot(mean.index, mean.to_numpy(), marker="o", ms=3, color=color, label=arm.label)
        part = convergence[(convergence["strategy"] == arm.strategy) & (convergence["config"] == arm.config)]
        axes[0].axvline(int(part["plateau_round"].max()), color=color, ls=":", lw=1)
    axes[0].set_xlabel("round")
    axes[0].set_ylabel("pooled loss (mean over seeds)")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=8)
    blocks.append(Figure(_save(fig, out, "convergence.png"),
                         "Pooled loss per round, mean over seeds; dotted: latest plateau round over seeds"))
    rows = []
    for (strategy, config), part in convergence.groupby(["strategy", "config"], sort=False):
        val = part["val_round"].dropna()
        rows.append([_row_label(strategy, config), ", ".join(sorted(set(part["loss_source"]))),
                     ", ".join(str(int(v)) for v in part["plateau_round"]),
                     ", ".join(str(int(v)) for v in part["final_round"]),
                     f"{int((~part['converged']).sum())} of {len(part)}",
                     ", ".join(str(int(v)) for v in val) if len(val) else "n/a (no validation split)",
                     "yes" if part["flag_final" if which == "final" else "flag_val_chosen"].fillna(False).any()
                     else "no"])
    blocks.append(table(["configuration", "loss", "plateau round per seed", "final round", "still improving",
                         "val-chosen round per seed", f"flagged ({which})"], rows))
    return blocks


# --- claims, Gaussian, runs ---------------------------------------------------------------------------

def claims_section(found: Sequence[Claim], which: str) -> list[Block]:
    return [
        Heading(2, "Claims"),
        Paragraph(f"One row per qualitative claim of the paper, judged by the rule in its row on this study's runs "
                  f"(round {which}). 'Not assessable': the study lacks what the rule needs. All rows: `claims.csv`."),
        table(["claim", "verdict", "numbers", "decision rule"], [[c.claim, f"**{c.verdict}**", c.numbers, c.rule]
                                                                 for c in found]),
    ]


def gaussian_section(gaussian: pd.DataFrame, out: Path) -> list[Block]:
    scenario = SCENARIOS[0]
    model = ThresholdModel(scenario.means, SIGMA, scenario.label_rates, (0.5, 0.5))
    path = out / FIGURES / "gaussian_sweep.png"
    plot_sweep(model, snap_threshold(optimal_threshold(model), 0.01), THETA_SQUARE, path)
    rows = [[f"({r.gr_a:g}, {r.gr_b:g})", f"{r.theta_star:.2f}", f"{r.aspd_star:.4f} ({r.published_star:.4f})",
             f"{r.aspd_p2_3:.4f} ({r.published_p2_3:.4f})", f"{r.aspd_p1_2:.4f} ({r.published_p1_2:.4f})",
             r.less_fair_p, "holds" if r.prop1_holds else "fails"] for r in gaussian.itertuples(index=False)]
    return [
        Heading(2, "Gaussian threshold model (the paper's published setting)"),
        Paragraph(f"analysis.gaussian with means (μa1, μa0, μb1, μb0) = {scenario.means}, σ = {SIGMA:g}, label "
                  f"rates 0.5, θ*□ = {THETA_SQUARE:g}, θ* on a 0.01 grid as the paper's table; published values in "
                  "parentheses. All rows: `gaussian.csv`."),
        table(["group rates", "θ*◇", "ASPD(θ*◇)", "ASPD(θ_FA), p = 2/3", "ASPD(θ_FA), p = 1/2",
               "FedAvg less fair for p in", "Prop. 1 condition"], rows),
        Figure(f"{FIGURES}/gaussian_sweep.png", "ASPD of FedAvg's threshold over p, group rates (0.5, 0.5)"),
    ]


def runs_section(rows: Sequence[dict[str, Any]], out: Path) -> list[Block]:
    study = json.loads((out / "study.json").read_text())["grid"]
    tally = pd.Series([r["status"] for r in rows]).value_counts().to_dict() if rows else {}
    blocks: list[Block] = [
        Heading(2, "Runs"),
        Paragraph(f"Strategies {', '.join(study['strategies'])}; seeds {', '.join(map(str, study['seeds']))}"
                  + (f"; Fair-* lambdas {', '.join(f'{w:g}' for w in study['lambdas'])}" if study["lambdas"] else "")
                  + ". Common keys: " + (" ".join(f"`{k}={v}`" for k, v in study["run-config"].items()) or "none")
                  + "." + "".join(f" {s}: " + " ".join(f"`{k}={v}`" for k, v in keys.items()) + "."
                                 for s, keys in study["strategy-config"].items())
                  + "".join(f" Arm {name}: " + " ".join(f"`{k}={v}`" for k, v in keys.items()) + "."
                            for name, keys in study.get("arms", {}).items())
                  + (" Tuning: " + "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in study["tune"].items()) + "."
                     if "tune" in study else "")
                  + " Status: " + ", ".join(f"{n} {s}" for s, n in tally.items()) + " (`runs.csv`; logs in `logs/`)."),
    ]
    failed = [r for r in rows if r["status"] != "completed"]
    if failed:
        blocks.append(Paragraph("**Not in the results** (failed or not run): "
                                + ", ".join(f"`{r['run_dir']}` ({r['status']})" for r in failed) + "."))
    blocks.append(table(["strategy", "config", "seed", "run_dir", "status", "wall_s"],
                        [[r["strategy"], r["config"], r["seed"], f"`{r['run_dir']}`", r["status"], r["wall_s"]]
                         for r in rows]))
    return blocks


def rounds_section(arms: Sequence[Arm], which: str) -> list[Block]:
    with_val = [a.label for a in arms if a.has_val]
    if which == "val-chosen":
        text = ("Every run has a validation split (val_metrics.csv): comparisons, tests, frontier and claims use "
                "the round chosen on validation (each run's argmin of pooled validation loss, earliest on ties); "
                "final-round numbers are in the per-strategy section and `summary.csv` (round `final`).")
    elif with_val:
        text = (f"Only some configurations have a validation split ({', '.join(with_val)}), so everything is "
                "compared at each run's final round; `summary.csv` also has round `val-chosen` rows for runs with "
                "one.")
    else:
        text = ("No run has a validation split (val_metrics.csv), so only final-round results are reported; no "
                "round was chosen on validation.")
    return [Heading(2, "Rounds compared"), Paragraph(text)]


def write_outputs(out: Path, planned: Sequence[PlannedRun], rows: Sequence[dict[str, Any]]) -> list[Path]:
    """Tables, figures and report of the study in `out` from its completed runs; returns the main files."""
    arms = load_arms(out, planned, rows)
    figures = out / FIGURES
    figures.mkdir(exist_ok=True)
    for stale in figures.glob("*.png"):
        stale.unlink()
    which = primary_round(arms)
    convergence = convergence_table(arms)
    summary = summary_table(arms, convergence)
    comparisons = compare_arms(arms, which)
    pareto = pareto_table(summary, which)
    diagnostics, churn = cluster_tables(arms)
    gaussian = gaussian_table()
    found = claims(arms, comparisons.tests, gaussian, which, unconverged(convergence))
    weights = lambda_table(arms, which)
    zero = next((a for w, a in lambda_points(arms, "fair-ifca") if w == 0 and a.strategy == "fair-ifca"), None)
    flips = flip_table(zero)
    flags = flagged(convergence, which)
    for name, frame in (("summary.csv", summary), ("state_deltas.csv", comparisons.states),
                        ("tests.csv", comparisons.tests), ("pareto.csv", pareto),
                        ("cluster_diagnostics.csv", diagnostics), ("churn.csv", churn),
                        ("convergence.csv", convergence), ("gaussian.csv", gaussian),
                        ("lambda.csv", weights), ("lambda_flips.csv", flips),
                        ("claims.csv", pd.DataFrame([c.__dict__ for c in found]))):
        _write_csv(frame, out / name)
    data_blocks, mixed = data_section(arms)
    completed = sum(r["status"] == "completed" for r in rows)
    blocks: list[Block] = [
        Heading(1, TITLE),
        Paragraph(f"Study `{out}`: {len(arms)} configuration(s), {completed} of {len(rows)} runs completed. "
                  "Personalized strategies are compared with FedAvg (one global model) and, when present, with "
                  "local training, on each client's own accuracy and group-fairness gaps (SP: statistical "
                  "parity, EO: equal opportunity, EOdds: equalized odds; for sex and race)."),
        *data_blocks,
        *rounds_section(arms, which),
        *claims_section(found, which),
        *strategy_section(summary, arms, which, flags, mixed, out),
        *tuning_section(out),
        *state_section(comparisons, arms, which, flags, out),
        *tests_section(comparisons, which, flags),
        *pareto_section(pareto, arms, which, out),
        *lambda_section(weights, flips, which, out),
        *cluster_section(arms, diagnostics, churn, out),
        *convergence_section(arms, convergence, which, out),
        *gaussian_section(gaussian, out),
        *runs_section(rows, out),
    ]
    write_atomic(out / "report.md", to_markdown(blocks).encode())
    write_atomic(out / "report.html", to_html(blocks, out, TITLE).encode())
    return [out / "summary.csv", out / "report.md", out / "report.html"]

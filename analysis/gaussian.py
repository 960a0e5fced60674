"""The paper's analytic Gaussian threshold model: when is FedAvg less fair than a cluster's model?

Cluster diamond holds groups a and b; a sample of group g with label y has x ~ N(mu_g^y, sigma^2)
and is predicted positive when x >= theta. Everything here is closed form except the optimal
threshold, which is found precisely (every stationary point of the error, not a grid), so the
fairness numbers are exact up to floating point.

CLI: `python -m analysis.gaussian --means 7 4 6 3 --sigma 1 --label-rates .5 .5 .5 .5
--group-rates .5 .5 --theta-square 8 --p 2/3 1/2 [--json] [--sweep-plot FILE.png]`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy.optimize import brentq
from scipy.stats import norm

from analysis.cli import OneLineErrorParser

BRACKET_SIGMAS = 8.0  # beyond this many sigma from every mean the error is flat to ~1e-15
STATIONARY_SCAN = 4001  # grid used only to bracket sign changes of the error's derivative
SWEEP_SCAN = 2001  # grid used only to bracket crossings of the fairness gap over p
GAP_TOL = 1e-12  # a fairness-gap difference this small counts as equal
RATE_TOL = 1e-9  # rates typed as decimals may miss summing to 1 by rounding only


@dataclass(frozen=True)
class ThresholdModel:
    """Cluster diamond: means and label rates ordered (a1, a0, b1, b0), group rates (a, b)."""

    means: tuple[float, float, float, float]
    sigma: float
    label_rates: tuple[float, float, float, float]
    group_rates: tuple[float, float]


def _positive_rate(theta: Any, mean: float, sigma: float) -> Any:
    return norm.sf((np.asarray(theta, dtype=float) - mean) / sigma)


def _density(theta: Any, mean: float, sigma: float) -> Any:
    return norm.pdf((np.asarray(theta, dtype=float) - mean) / sigma) / sigma


def misclassification_rate(theta: Any, model: ThresholdModel) -> Any:
    """Cluster error: positives below theta plus negatives at or above it, weighted by rates."""
    mu_a1, mu_a0, mu_b1, mu_b0 = model.means
    al_a1, al_a0, al_b1, al_b0 = model.label_rates
    gr_a, gr_b = model.group_rates
    s = model.sigma
    err_a = al_a1 * (1 - _positive_rate(theta, mu_a1, s)) + al_a0 * _positive_rate(theta, mu_a0, s)
    err_b = al_b1 * (1 - _positive_rate(theta, mu_b1, s)) + al_b0 * _positive_rate(theta, mu_b0, s)
    return gr_a * err_a + gr_b * err_b


def misclassification_slope(theta: Any, model: ThresholdModel) -> Any:
    """d error / d theta; its zeros are the candidate optimal thresholds."""
    mu_a1, mu_a0, mu_b1, mu_b0 = model.means
    al_a1, al_a0, al_b1, al_b0 = model.label_rates
    gr_a, gr_b = model.group_rates
    s = model.sigma
    slope_a = al_a1 * _density(theta, mu_a1, s) - al_a0 * _density(theta, mu_a0, s)
    slope_b = al_b1 * _density(theta, mu_b1, s) - al_b0 * _density(theta, mu_b0, s)
    return gr_a * slope_a + gr_b * slope_b


def threshold_bracket(model: ThresholdModel) -> tuple[float, float]:
    """Where the optimum can usefully lie: the means widened by BRACKET_SIGMAS sigma."""
    spread = BRACKET_SIGMAS * model.sigma
    return min(model.means) - spread, max(model.means) + spread


def optimal_threshold(model: ThresholdModel) -> float:
    """theta*: the global minimiser of the cluster error.

    The error can be multimodal (two groups, two label rates), so every sign change of its
    derivative in the bracket is refined with brentq and the lowest candidate wins; the bracket
    ends compete too, which is where degenerate label rates (all one label) push the optimum.
    """
    lo, hi = threshold_bracket(model)
    grid = np.linspace(lo, hi, STATIONARY_SCAN)
    slope = misclassification_slope(grid, model)
    candidates = [lo, hi]
    for i in np.flatnonzero(np.sign(slope[:-1]) * np.sign(slope[1:]) < 0):
        candidates.append(
            brentq(
                lambda t: float(misclassification_slope(t, model)), grid[i], grid[i + 1], xtol=1e-13
            )
        )
    candidates.extend(grid[slope == 0])
    errors = [float(misclassification_rate(t, model)) for t in candidates]
    return float(candidates[int(np.argmin(errors))])


def snap_threshold(theta: float, step: float) -> float:
    """theta on a grid of `step`, as a grid search of that resolution would report it.

    The published table was computed with thresholds at 0.01 resolution; snapping reproduces it.
    """
    return round(theta / step) * step


def aspd(theta: Any, model: ThresholdModel) -> Any:
    """Statistical parity gap |P(yhat=1 | a) - P(yhat=1 | b)| at threshold theta."""
    mu_a1, mu_a0, mu_b1, mu_b0 = model.means
    al_a1, al_a0, al_b1, al_b0 = model.label_rates
    s = model.sigma
    rate_a = al_a1 * _positive_rate(theta, mu_a1, s) + al_a0 * _positive_rate(theta, mu_a0, s)
    rate_b = al_b1 * _positive_rate(theta, mu_b1, s) + al_b0 * _positive_rate(theta, mu_b0, s)
    return np.abs(rate_a - rate_b)


def fedavg_threshold(theta_diamond: Any, theta_square: float, p: Any) -> Any:
    """FedAvg's joint threshold: the cluster optima averaged with diamond's size weight p."""
    return p * theta_diamond + (1 - p) * theta_square


def _bump(theta: float, mean: float, sigma: float) -> tuple[float, float]:
    """exp(-(t - m)^2 / 2 sigma^2) at theta and its analytic derivative."""
    value = math.exp(-((theta - mean) ** 2) / (2 * sigma**2))
    return value, -(theta - mean) / sigma**2 * value


def psi_values(theta: float, model: ThresholdModel) -> tuple[float, float]:
    """(psi_1, psi_2) at theta; with equal label rates d(rate_a - rate_b)/dtheta ~ psi_1 - psi_2."""
    e_a1, e_a0, e_b1, e_b0 = (_bump(theta, m, model.sigma)[0] for m in model.means)
    return e_b1 - e_a0, e_a1 - e_b0


def psi_slopes(theta: float, model: ThresholdModel) -> tuple[float, float]:
    """(psi_1'(theta), psi_2'(theta)), analytically, for Proposition 1's condition.

    psi_1 = e_b1 - e_a0 and psi_2 = e_a1 - e_b0, with e_m(t) = exp(-(t - m)^2 / 2 sigma^2).
    """
    d_a1, d_a0, d_b1, d_b0 = (_bump(theta, m, model.sigma)[1] for m in model.means)
    return d_b1 - d_a0, d_a1 - d_b0


def prop1_holds(theta: float, model: ThresholdModel) -> bool:
    """Proposition 1's condition psi_1'(theta*) >= psi_2'(theta*)."""
    psi1, psi2 = psi_slopes(theta, model)
    return psi1 >= psi2


def less_fair_intervals(
    model: ThresholdModel, theta_star: float, theta_square: float
) -> list[tuple[float, float]]:
    """Open intervals of p in [0, 1] where ASPD(theta_FA(p)) > ASPD(theta*).

    Endpoints are roots of the gap difference found with brentq (a grid only brackets them);
    p = 1 is always a root, since there theta_FA = theta*.
    """

    def excess(p: Any) -> Any:
        theta = fedavg_threshold(theta_star, theta_square, p)
        return aspd(theta, model) - aspd(theta_star, model)

    grid = np.linspace(0.0, 1.0, SWEEP_SCAN)
    values = excess(grid)
    sign = np.where(values > GAP_TOL, 1, np.where(values < -GAP_TOL, -1, 0))
    breaks = {0.0, 1.0, *grid[sign == 0].tolist()}
    for i in np.flatnonzero(sign[:-1] * sign[1:] < 0):
        breaks.add(brentq(lambda q: float(excess(q)), grid[i], grid[i + 1], xtol=1e-14))
    points = sorted(breaks)
    intervals: list[tuple[float, float]] = []
    for lo, hi in zip(points[:-1], points[1:], strict=True):
        if excess((lo + hi) / 2) <= GAP_TOL:
            continue
        if intervals and intervals[-1][1] == lo:
            lo = intervals.pop()[0]
        intervals.append((float(lo), float(hi)))
    return intervals


def evaluate(
    model: ThresholdModel,
    theta_square: float,
    ps: Sequence[float],
    theta_step: float | None = None,
) -> dict[str, Any]:
    """Every number the CLI and the tables report, as one JSON-ready dict."""
    theta_star = optimal_threshold(model)
    if theta_step is not None:
        theta_star = snap_threshold(theta_star, theta_step)
    psi1, psi2 = psi_values(theta_star, model)
    slope1, slope2 = psi_slopes(theta_star, model)
    fedavg = []
    for p in ps:
        theta = float(fedavg_threshold(theta_star, theta_square, p))
        fedavg.append({"p": float(p), "theta": theta, "aspd": float(aspd(theta, model))})
    return {
        "theta_star": theta_star,
        "theta_step": theta_step,
        "aspd_star": float(aspd(theta_star, model)),
        "theta_square": theta_square,
        "fedavg": fedavg,
        "prop1": {
            "psi1_slope": slope1,
            "psi2_slope": slope2,
            "holds": slope1 >= slope2,
            "psi1": psi1,
            "psi2": psi2,
        },
        "less_fair_p_intervals": [
            list(iv) for iv in less_fair_intervals(model, theta_star, theta_square)
        ],
    }


def plot_sweep(model: ThresholdModel, theta_star: float, theta_square: float, path: Path) -> None:
    """ASPD(theta_FA) over p against the cluster's own ASPD, less-fair p shaded."""
    ps = np.linspace(0.0, 1.0, 501)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(
        ps,
        aspd(fedavg_threshold(theta_star, theta_square, ps), model),
        label="ASPD(θ_FA(p)), FedAvg",
    )
    ax.axhline(
        float(aspd(theta_star, model)), color="black", linestyle="--", label="ASPD(θ*◇), own model"
    )
    for k, (lo, hi) in enumerate(less_fair_intervals(model, theta_star, theta_square)):
        ax.axvspan(
            lo, hi, color="tab:red", alpha=0.15, label="FedAvg less fair" if k == 0 else None
        )
    ax.set_xlim(0, 1)
    ax.set_xlabel("p (weight of cluster ◇ in FedAvg)")
    ax.set_ylabel("ASPD in cluster ◇")
    ax.set_title(
        f"means {_fmt_list(model.means)}, σ={model.sigma:g}, "
        f"labels {_fmt_list(model.label_rates)},\n"
        f"groups {_fmt_list(model.group_rates)}, θ*◇={theta_star:.4f}, θ*□={theta_square:g}",
        fontsize=10,
    )
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)


def _fmt_list(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def format_report(result: dict[str, Any]) -> str:
    """The human-readable form of `evaluate`'s result, numbers to 4 decimals."""
    snapped = f" (snapped to a {result['theta_step']:g} grid)" if result["theta_step"] else ""
    lines = [
        f"theta*_diamond = {result['theta_star']:.4f}{snapped}",
        f"ASPD(theta*_diamond) = {result['aspd_star']:.4f}",
        f"theta*_square = {result['theta_square']:.4f}",
        "",
        "| p | theta_FA | ASPD(theta_FA) |",
        "|---|---|---|",
    ]
    lines += [f"| {r['p']:.4f} | {r['theta']:.4f} | {r['aspd']:.4f} |" for r in result["fedavg"]]
    prop = result["prop1"]
    verdict = "holds" if prop["holds"] else "does not hold"
    intervals = result["less_fair_p_intervals"]
    where = ", ".join(f"({lo:.4f}, {hi:.4f})" for lo, hi in intervals) if intervals else "none"
    lines += [
        "",
        f"Prop. 1 condition psi_1'(theta*) >= psi_2'(theta*): {verdict} "
        f"(psi_1' = {prop['psi1_slope']:.4f}, psi_2' = {prop['psi2_slope']:.4f}; "
        f"psi_1 = {prop['psi1']:.4f}, psi_2 = {prop['psi2']:.4f})",
        f"p where FedAvg is less fair than theta*_diamond: {where}",
    ]
    return "\n".join(lines)


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _unit_fraction(text: str) -> float:
    """A number or fraction such as 2/3, required to lie in [0, 1]."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number or fraction such as 2/3 (valid range [0, 1])"
        ) from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is outside the valid range [0, 1]")
    return float(value)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="python -m analysis.gaussian", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--means",
        nargs=4,
        type=_finite,
        required=True,
        metavar=("MU_A1", "MU_A0", "MU_B1", "MU_B0"),
    )
    parser.add_argument("--sigma", type=_finite, required=True, metavar="S")
    parser.add_argument(
        "--label-rates",
        nargs=4,
        type=_unit_fraction,
        required=True,
        metavar=("A1", "A0", "B1", "B0"),
    )
    parser.add_argument(
        "--group-rates", nargs=2, type=_unit_fraction, required=True, metavar=("GA", "GB")
    )
    parser.add_argument("--theta-square", type=_finite, required=True, metavar="T")
    parser.add_argument(
        "--p", nargs="+", type=_unit_fraction, required=True, metavar="P", help="e.g. 2/3 1/2"
    )
    parser.add_argument(
        "--theta-step", type=_finite, metavar="STEP", help="snap theta* to this grid (paper: 0.01)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--sweep-plot", type=Path, metavar="FILE.png", help="plot ASPD(theta_FA) over p in [0, 1]"
    )
    return parser


def parse_model(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, ThresholdModel]:
    """Parse and cross-check the arguments; any impossible input exits 2 with one message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    a1, a0, b1, b0 = args.label_rates
    if abs(a1 + a0 - 1) > RATE_TOL or abs(b1 + b0 - 1) > RATE_TOL:
        parser.error(
            "argument --label-rates: A1 + A0 and B1 + B0 must each equal 1, "
            f"got {a1 + a0:g} and {b1 + b0:g}"
        )
    if abs(sum(args.group_rates) - 1) > RATE_TOL:
        parser.error(f"argument --group-rates: GA + GB must equal 1, got {sum(args.group_rates):g}")
    if args.sigma <= 0:
        parser.error(f"argument --sigma: must be > 0, got {args.sigma:g}")
    if args.theta_step is not None and args.theta_step <= 0:
        parser.error(f"argument --theta-step: must be > 0, got {args.theta_step:g}")
    if args.sweep_plot is not None and not args.sweep_plot.parent.is_dir():
        parser.error(
            f"argument --sweep-plot: directory {str(args.sweep_plot.parent)!r} does not exist"
        )
    model = ThresholdModel(
        tuple(args.means), args.sigma, tuple(args.label_rates), tuple(args.group_rates)
    )
    return args, model


def main(argv: Sequence[str] | None = None) -> int:
    args, model = parse_model(argv)
    result = evaluate(model, args.theta_square, args.p, args.theta_step)
    if args.sweep_plot is not None:
        plot_sweep(model, result["theta_star"], args.theta_square, args.sweep_plot)
        result["sweep_plot"] = str(args.sweep_plot)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_report(result))
        if args.sweep_plot is not None:
            print(f"wrote {args.sweep_plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

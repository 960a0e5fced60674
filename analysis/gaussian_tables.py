"""The paper's family of Gaussian-model tables, generated from a declarative list of scenarios.

Each scenario fixes the means and label rates of cluster diamond; every table shares sigma,
theta*_square, the group rates and the FedAvg weights p, so a new table is one more data row.
`python -m analysis.gaussian_tables [--theta-step 0.01] [--json]`; the paper's numbers used
thresholds at 0.01 resolution, which `--theta-step 0.01` reproduces.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from analysis.cli import OneLineErrorParser
from analysis.gaussian import ThresholdModel, evaluate


@dataclass(frozen=True)
class Scenario:
    """One table: cluster diamond's means and label rates, both ordered (a1, a0, b1, b0)."""

    title: str
    means: tuple[float, float, float, float]
    label_rates: tuple[float, float, float, float]


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "Equal label rates, equal gaps (the published table)", (7, 4, 6, 3), (0.5, 0.5, 0.5, 0.5)
    ),
    Scenario("Unequal label rates, equal gaps", (7, 4, 6, 3), (0.7, 0.3, 0.6, 0.4)),
    Scenario("Equal label rates, group a's gap narrower", (7, 4.5, 6, 3), (0.5, 0.5, 0.5, 0.5)),
    Scenario("Equal label rates, group b's gap narrower", (7, 4, 6, 3.5), (0.5, 0.5, 0.5, 0.5)),
)
SIGMA = 1.0
THETA_SQUARE = 8.0
GROUP_RATES: tuple[tuple[float, float], ...] = (
    (0.5, 0.5),
    (0.7, 0.3),
    (0.9, 0.1),
    (0.2, 0.8),
    (0.4, 0.6),
)
PS: tuple[Fraction, ...] = (Fraction(2, 3), Fraction(1, 2))


def scenario_rows(scenario: Scenario, theta_step: float | None = None) -> list[dict[str, Any]]:
    """One `evaluate` result per group-rate setting, tagged with its group rates."""
    rows = []
    for group_rates in GROUP_RATES:
        model = ThresholdModel(scenario.means, SIGMA, scenario.label_rates, group_rates)
        rows.append(
            {"group_rates": list(group_rates), **evaluate(model, THETA_SQUARE, PS, theta_step)}
        )
    return rows


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown_table(scenario: Scenario, rows: Sequence[dict[str, Any]]) -> str:
    """A scenario as a Markdown section: heading, settings line and one row per group rates."""
    header = [
        "group rates (gr_a, gr_b)",
        "theta*_diamond",
        "ASPD(theta*_diamond)",
        *(f"ASPD(theta_FA), p = {p}" for p in PS),
        "FedAvg less fair for p in",
        "Prop. 1 condition",
    ]
    lines = [
        f"### {scenario.title}",
        "",
        f"means (mu_a1, mu_a0, mu_b1, mu_b0) = {scenario.means}, "
        f"label rates = {scenario.label_rates}, "
        f"sigma = {SIGMA:g}, theta*_square = {THETA_SQUARE:g}",
        "",
        _row(header),
        _row(["---"] * len(header)),
    ]
    for row in rows:
        gr_a, gr_b = row["group_rates"]
        intervals = row["less_fair_p_intervals"]
        lines.append(
            _row(
                [
                    f"({gr_a:g}, {gr_b:g})",
                    f"{row['theta_star']:.4f}",
                    f"{row['aspd_star']:.4f}",
                    *(f"{r['aspd']:.4f}" for r in row["fedavg"]),
                    ", ".join(f"({lo:.4f}, {hi:.4f})" for lo, hi in intervals) or "none",
                    "holds" if row["prop1"]["holds"] else "fails",
                ]
            )
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineErrorParser(
        prog="python -m analysis.gaussian_tables", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--theta-step", type=float, metavar="STEP", help="snap theta* to this grid (paper: 0.01)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of Markdown"
    )
    args = parser.parse_args(argv)
    if args.theta_step is not None and not args.theta_step > 0:
        parser.error(f"argument --theta-step: must be > 0, got {args.theta_step:g}")
    tables = [(s, scenario_rows(s, args.theta_step)) for s in SCENARIOS]
    if args.json:
        print(
            json.dumps(
                {
                    "sigma": SIGMA,
                    "theta_square": THETA_SQUARE,
                    "theta_step": args.theta_step,
                    "scenarios": [
                        {
                            "title": s.title,
                            "means": list(s.means),
                            "label_rates": list(s.label_rates),
                            "rows": rows,
                        }
                        for s, rows in tables
                    ],
                }
            )
        )
    else:
        print("\n\n".join(markdown_table(s, rows) for s, rows in tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Specification of the analytic Gaussian threshold model, its CLI and the tables command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from analysis import gaussian_tables
from analysis.gaussian import (
    ThresholdModel,
    aspd,
    evaluate,
    fedavg_threshold,
    less_fair_intervals,
    main,
    misclassification_rate,
    misclassification_slope,
    optimal_threshold,
    prop1_holds,
    psi_slopes,
)

PUBLISHED = {  # group rates -> ASPD(theta*), ASPD(theta_FA) at p = 2/3, at p = 1/2
    (0.5, 0.5): (0.1359, 0.1814, 0.1945),
    (0.7, 0.3): (0.1388, 0.1881, 0.1927),
    (0.9, 0.1): (0.1465, 0.1925, 0.1895),
    (0.2, 0.8): (0.1421, 0.1691, 0.1939),
    (0.4, 0.6): (0.1367, 0.1773, 0.1947),
}
EQUAL_RATES = (0.5, 0.5, 0.5, 0.5)
PUBLISHED_ARGS = [
    "--means",
    "7",
    "4",
    "6",
    "3",
    "--sigma",
    "1",
    "--label-rates",
    ".5",
    ".5",
    ".5",
    ".5",
    "--group-rates",
    ".5",
    ".5",
    "--theta-square",
    "8",
    "--p",
    "2/3",
    "1/2",
]


def published_model(group_rates: tuple[float, float]) -> ThresholdModel:
    return ThresholdModel((7, 4, 6, 3), 1.0, EQUAL_RATES, group_rates)


def phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


@pytest.mark.parametrize("group_rates", PUBLISHED)
def test_published_table_is_reproduced_at_the_papers_threshold_resolution(group_rates):
    result = evaluate(published_model(group_rates), 8.0, [2 / 3, 1 / 2], theta_step=0.01)
    got = (result["aspd_star"], *(r["aspd"] for r in result["fedavg"]))
    assert tuple(round(v, 4) for v in got) == PUBLISHED[group_rates]


@pytest.mark.parametrize("group_rates", PUBLISHED)
def test_exact_optimum_differs_from_published_table_by_at_most_two_in_the_fourth_decimal(
    group_rates,
):
    result = evaluate(published_model(group_rates), 8.0, [2 / 3, 1 / 2])
    got = (result["aspd_star"], *(r["aspd"] for r in result["fedavg"]))
    assert np.max(np.abs(np.array(got) - PUBLISHED[group_rates])) <= 2.5e-4


def test_equal_groups_put_the_optimum_midway_between_the_four_means():
    assert optimal_threshold(published_model((0.5, 0.5))) == pytest.approx(5.0, abs=1e-10)


@pytest.mark.parametrize("group_rates", PUBLISHED)
def test_error_slope_vanishes_at_the_optimum(group_rates):
    model = published_model(group_rates)
    assert abs(misclassification_slope(optimal_threshold(model), model)) < 1e-12


@pytest.mark.parametrize("group_rates", PUBLISHED)
def test_optimum_beats_every_point_of_a_fine_grid(group_rates):
    model = published_model(group_rates)
    grid = np.linspace(0, 10, 100_001)
    assert (
        misclassification_rate(optimal_threshold(model), model)
        <= misclassification_rate(grid, model).min()
    )


def test_optimum_is_the_global_one_when_the_error_has_two_local_minima():
    model = ThresholdModel((2, 0, 12, 10), 1.0, EQUAL_RATES, (0.4, 0.6))
    theta = optimal_threshold(model)
    grid = np.linspace(-5, 17, 220_001)
    assert theta == pytest.approx(11.0, abs=0.1)
    assert misclassification_rate(theta, model) <= misclassification_rate(grid, model).min()


def test_aspd_matches_a_hand_computed_case():
    model = ThresholdModel((1, -1, 0, 0), 1.0, (0.7, 0.3, 0.5, 0.5), (0.5, 0.5))
    expected = 0.7 * phi(1) + 0.3 * phi(-1) - 0.5
    assert aspd(0.0, model) == pytest.approx(expected, abs=1e-15)


def test_aspd_does_not_depend_on_group_rates():
    theta = 5.3
    assert aspd(theta, published_model((0.9, 0.1))) == aspd(theta, published_model((0.2, 0.8)))


def test_fedavg_threshold_is_the_p_weighted_average():
    assert fedavg_threshold(5.0, 8.0, 2 / 3) == pytest.approx(6.0)


def test_prop1_slopes_are_the_analytic_derivatives_in_the_published_case():
    psi1, psi2 = psi_slopes(5.0, published_model((0.5, 0.5)))
    assert psi1 == pytest.approx(2 * math.exp(-0.5), abs=1e-15)
    assert psi2 == pytest.approx(4 * math.exp(-2), abs=1e-15)
    assert prop1_holds(5.0, published_model((0.5, 0.5)))


def test_prop1_slopes_match_finite_differences():
    model = ThresholdModel((7, 4.5, 6, 3), 1.3, EQUAL_RATES, (0.3, 0.7))

    def psi(t):
        e = [math.exp(-((t - m) ** 2) / (2 * 1.3**2)) for m in model.means]
        return np.array([e[2] - e[1], e[0] - e[3]])

    h = 1e-6
    assert psi_slopes(5.2, model) == pytest.approx(
        (psi(5.2 + h) - psi(5.2 - h)) / (2 * h), abs=1e-8
    )


def test_less_fair_interval_in_the_published_case_runs_from_a_crossing_to_p_one():
    model = published_model((0.5, 0.5))
    [(lo, hi)] = less_fair_intervals(model, 5.0, 8.0)
    assert lo == pytest.approx(0.2117, abs=5e-5)
    assert hi == 1.0
    assert aspd(fedavg_threshold(5.0, 8.0, lo), model) == pytest.approx(aspd(5.0, model), abs=1e-12)


def test_less_fair_interval_endpoints_are_both_crossings_when_fedavg_is_fairer_near_p_one():
    model = published_model((0.2, 0.8))
    theta_star = optimal_threshold(model)
    [(lo, hi)] = less_fair_intervals(model, theta_star, 8.0)
    assert 0 < lo < hi < 1
    for p in (lo, hi):
        assert aspd(fedavg_threshold(theta_star, 8.0, p), model) == pytest.approx(
            aspd(theta_star, model), abs=1e-12
        )
    assert aspd(fedavg_threshold(theta_star, 8.0, hi + 0.01), model) < aspd(theta_star, model)


def test_no_less_fair_interval_when_the_other_cluster_agrees():
    assert less_fair_intervals(published_model((0.5, 0.5)), 5.0, 5.0) == []


def test_cli_prints_the_readable_report(capsys):
    assert main(PUBLISHED_ARGS) == 0
    out = capsys.readouterr().out
    assert "theta*_diamond = 5.0000" in out
    assert "ASPD(theta*_diamond) = 0.1359" in out
    assert "| 0.6667 | 6.0000 | 0.1814 |" in out
    assert "| 0.5000 | 6.5000 | 0.1945 |" in out
    assert "psi_2'(theta*): holds" in out
    assert "less fair than theta*_diamond: (0.2117, 1.0000)" in out


def test_cli_json_is_one_object_with_the_same_numbers(capsys):
    assert main([*PUBLISHED_ARGS, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["theta_star"] == pytest.approx(5.0)
    assert result["aspd_star"] == pytest.approx(0.1359, abs=5e-5)
    assert [r["p"] for r in result["fedavg"]] == pytest.approx([2 / 3, 0.5])
    assert [r["theta"] for r in result["fedavg"]] == pytest.approx([6.0, 6.5])
    assert [r["aspd"] for r in result["fedavg"]] == pytest.approx([0.1814, 0.1945], abs=5e-5)


def test_cli_writes_the_sweep_plot(tmp_path, capsys):
    path = tmp_path / "sweep.png"
    assert main([*PUBLISHED_ARGS, "--sweep-plot", str(path)]) == 0
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {path}" in capsys.readouterr().out


def replace(args: list[str], flag: str, *values: str) -> list[str]:
    """PUBLISHED_ARGS with one flag's values swapped."""
    i = args.index(flag)
    n = 1
    while i + n < len(args) and not args[i + n].startswith("--"):
        n += 1
    return [*args[:i], flag, *values, *args[i + n :]]


@pytest.mark.parametrize(
    ("flag", "values", "expected"),
    [
        ("--label-rates", ("1.2", "-0.2", ".5", ".5"), "[0, 1]"),
        ("--label-rates", (".7", ".4", ".5", ".5"), "must each equal 1"),
        ("--group-rates", (".6", ".6"), "GA + GB must equal 1"),
        ("--group-rates", ("-0.5", "1.5"), "[0, 1]"),
        ("--sigma", ("0",), "must be > 0"),
        ("--sigma", ("-1",), "must be > 0"),
        ("--p", ("3/2",), "[0, 1]"),
        ("--p", ("2//3",), "fraction such as 2/3"),
        ("--p", ("1/0",), "fraction such as 2/3"),
        ("--means", ("7", "4", "six", "3"), "'six' is not a number"),
        ("--means", ("7", "4", "6"), "expected 4 arguments"),
        ("--sweep-plot", ("/no/such/dir/sweep.png",), "does not exist"),
    ],
)
def test_cli_rejects_impossible_input_with_one_message_naming_the_argument(
    capsys, flag, values, expected
):
    args = (
        replace(PUBLISHED_ARGS, flag, *values)
        if flag in PUBLISHED_ARGS
        else [*PUBLISHED_ARGS, flag, *values]
    )
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert f"argument {flag}" in captured.err
    assert expected in captured.err


def test_tables_command_prints_every_scenario_and_the_published_rows(capsys):
    assert gaussian_tables.main(["--theta-step", "0.01"]) == 0
    out = capsys.readouterr().out
    assert out.count("### ") == len(gaussian_tables.SCENARIOS)
    for (gr_a, gr_b), numbers in PUBLISHED.items():
        assert f"| ({gr_a:g}, {gr_b:g}) | " in out
        assert " | ".join(f"{v:.4f}" for v in numbers) in out


def test_tables_command_json_has_a_row_per_scenario_and_group_rates(capsys):
    assert gaussian_tables.main(["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [s["title"] for s in result["scenarios"]] == [s.title for s in gaussian_tables.SCENARIOS]
    for scenario in result["scenarios"]:
        assert [tuple(r["group_rates"]) for r in scenario["rows"]] == list(
            gaussian_tables.GROUP_RATES
        )

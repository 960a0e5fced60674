"""Bad input, systematically: every invalid run config or data table fails before training with a
message naming the key or column at fault, and leaves no results directory behind."""

import math
import string
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.states import FOLKTABLES_STATES
from core.tasks import ATTRIBUTES, INCOME, TASKS
from fl_app.config import DATA_SOURCES, FAIL_MODES
from strategies.fairness import FAIR_METRICS
from strategies.flhc import LINKAGES
from strategies.flower import NAMES as FLOWER_NAMES
from strategies.perfedavg import MAML_VARIANTS
from strategies.registry import STRATEGIES
from tests.conftest import REPO, income_frame, run_in_process

EXAMPLES = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BASE = {"states": "AL,CA", "data-source": "synthetic", "synthetic-rows": 200, "num-server-rounds": 1, "local-epochs": 1}

CHOICES = {"task": list(TASKS), "strategy": [*STRATEGIES, *FLOWER_NAMES], "data-source": DATA_SOURCES,
           "fair-attribute": list(ATTRIBUTES), "fair-metric": FAIR_METRICS, "maml-variant": MAML_VARIANTS,
           "fail-mode": FAIL_MODES, "linkage": LINKAGES}
INT_MINIMUM = {"num-server-rounds": 1, "local-epochs": 1, "batch-size": 1, "seed": 0, "synthetic-rows": 0, "k": 1,
               "warmup-rounds": 0, "adapt-steps": 0, "max-failed-rounds": 1}
NEGATIVE = st.floats(max_value=-math.ulp(0.0), allow_nan=False)
FLOAT_OUT_OF_RANGE = {
    "lr": st.floats(max_value=0.0, allow_nan=False),
    "meta-lr": st.floats(max_value=0.0, allow_nan=False),
    "adapt-lr": st.floats(max_value=0.0, allow_nan=False),
    "ditto-mu": NEGATIVE,
    "lambda": NEGATIVE,
    "distance-threshold": NEGATIVE,
    "fail-prob": st.one_of(NEGATIVE, st.floats(min_value=1.0, exclude_min=True, allow_nan=False)),
    "round-timeout": st.floats(max_value=0.0, allow_nan=False),
    # BASE has 2 clients: no count above that, no fraction of 0 or less, no whole count that is not whole
    "min-clients": st.one_of(st.floats(max_value=0.0, allow_nan=False), st.integers(min_value=3),
                             st.floats(min_value=1.0, allow_nan=False, allow_infinity=False)
                             .filter(lambda v: not v.is_integer() or v > 2)),
}
STATE_LISTS = ("states", "synthetic-reversed", "fail-states")

not_text = st.one_of(st.integers(), st.floats(), st.booleans())
not_a_number = st.one_of(st.text(max_size=5), st.booleans(), st.sampled_from([math.nan, math.inf, -math.inf]))
code = st.text(string.ascii_letters + string.digits, min_size=1, max_size=3)


def bad_int(minimum: int):
    return st.one_of(
        st.integers(max_value=minimum - 1), st.integers(min_value=2**63), not_a_number,
        st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not v.is_integer()),
    )


def bad_state_list():
    unknown = code.filter(lambda c: c.upper() not in FOLKTABLES_STATES)
    return st.one_of(
        st.lists(st.one_of(unknown, st.sampled_from(["AL", "CA"])), min_size=1, max_size=4)
        .filter(lambda cs: any(c.upper() not in FOLKTABLES_STATES for c in cs)).map(",".join),
        st.sampled_from(["AL", "CA"]).map(lambda c: f"{c},{c.lower()}"),  # a state twice
        not_text,
    )


INVALID = {
    **{key: st.one_of(st.text(max_size=12).filter(lambda v, key=key: v not in CHOICES[key]), not_text) for key in CHOICES},
    **{key: bad_int(minimum) for key, minimum in INT_MINIMUM.items()},
    **{key: st.one_of(values, not_a_number) for key, values in FLOAT_OUT_OF_RANGE.items()},
    **{key: bad_state_list() for key in STATE_LISTS},
    "synthetic-reversed": st.one_of(bad_state_list(), st.just("WY")),  # WY: outside the run's states
    "fail-states": st.one_of(bad_state_list(), st.just("WY")),
    "node-states": st.one_of(
        not_text,
        st.sampled_from(["CA", "12=CA,12=AL", "x=CA", "12=", "=CA", "-3=CA", f"{2**64}=CA", "12:CA"]),
        code.filter(lambda c: c.upper() not in FOLKTABLES_STATES).map(lambda c: f"12={c}"),  # unknown state
        st.just("12=WY"),  # outside the run's states
    ),
    "data-path": not_text,
    "data-dir": not_text,
    "resume": st.one_of(not_text, st.text(string.ascii_letters, min_size=1, max_size=8)),  # relative
}  # results-dir is set by run_in_process itself


@pytest.mark.parametrize("key", sorted(INVALID))
@EXAMPLES
@given(data=st.data())
def test_an_invalid_config_value_is_named_and_leaves_no_results_dir(key, data, tmp_path_factory):
    value = data.draw(INVALID[key], label=key)
    results = tmp_path_factory.mktemp("bad-config") / "results"
    with pytest.raises(ValueError) as err:
        run_in_process({**BASE, key: value}, results)
    assert f"'{key}'" in str(err.value) or f"unknown {key} '" in str(err.value), str(err.value)
    assert not results.exists()


@pytest.mark.parametrize(("strategy", "key", "value", "message"), [
    ("ditto", "ditto-mu", -0.1, "config key 'ditto-mu' must be >= 0, got -0.1"),
    ("perfedavg", "adapt-lr", 0.0, "config key 'adapt-lr' must be > 0, got 0"),
    ("perfedavg", "adapt-lr", -0.05, "config key 'adapt-lr' must be > 0, got -0.05"),
])
def test_a_personalization_step_out_of_range_is_named_by_its_strategy_before_training(strategy, key, value, message,
                                                                                      tmp_path):
    with pytest.raises(ValueError) as err:
        run_in_process({**BASE, "strategy": strategy, key: value}, tmp_path / "results")
    assert str(err.value) == message and not (tmp_path / "results").exists()


@pytest.mark.parametrize("key", ["epochs", "rounds", "fail_prob", "Seed"])
def test_an_unknown_key_is_named(key, tmp_path):
    with pytest.raises(ValueError, match=f"'{key}'"):
        run_in_process({**BASE, key: 1}, tmp_path / "results")
    assert not (tmp_path / "results").exists()


def table(tmp_path_factory, frame: pd.DataFrame, suffix: str) -> str:
    path = tmp_path_factory.mktemp("table") / f"acs{suffix}"
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
    return str(path)


def good_frame() -> pd.DataFrame:
    return pd.concat([income_frame("CA", 30), income_frame("AL", 20, seed=1)], ignore_index=True)


def run_on_table(path: str, tmp_path_factory) -> tuple[str, bool]:
    """(the error message, whether a results directory was left)."""
    results = tmp_path_factory.mktemp("bad-table") / "results"
    with pytest.raises(ValueError) as err:
        run_in_process({**BASE, "states": "", "data-source": "table", "data-path": path}, results)
    return str(err.value), results.exists()


@EXAMPLES
@given(column=st.sampled_from(["STATE", *INCOME.columns, "label"]), suffix=st.sampled_from([".csv", ".parquet"]))
def test_a_table_missing_a_column_names_it(column, suffix, tmp_path_factory):
    message, left = run_on_table(table(tmp_path_factory, good_frame().drop(columns=column), suffix), tmp_path_factory)
    assert f"lacks column(s) {column} " in message and not left


@EXAMPLES
@given(column=st.sampled_from(INCOME.columns), row=st.integers(0, 49),
       value=st.one_of(st.sampled_from([np.nan, np.inf, -np.inf]), st.text(string.ascii_letters, min_size=1, max_size=6)))
def test_a_blank_or_non_numeric_feature_names_its_column(column, row, value, tmp_path_factory):
    frame = good_frame().astype({column: object})
    frame.loc[row, column] = value
    message, left = run_on_table(table(tmp_path_factory, frame, ".csv"), tmp_path_factory)
    assert f"column {column} has a blank or non-numeric value" in message and not left


@EXAMPLES
@given(row=st.integers(0, 49), value=st.one_of(
    st.integers().filter(lambda v: v not in (0, 1)),
    st.floats(allow_nan=True).filter(lambda v: v not in (0.0, 1.0)),
    st.text(string.ascii_letters, min_size=1, max_size=6).filter(lambda v: v.lower() not in ("true", "false")),
))
def test_a_label_other_than_0_or_1_is_named(row, value, tmp_path_factory):
    frame = good_frame().astype({"label": object})
    frame.loc[row, "label"] = value
    message, left = run_on_table(table(tmp_path_factory, frame, ".csv"), tmp_path_factory)
    assert "column label must hold only 0/1 or False/True" in message and not left


@EXAMPLES
@given(row=st.integers(0, 49), value=code.filter(lambda c: c not in FOLKTABLES_STATES),
       suffix=st.sampled_from([".csv", ".parquet"]))
def test_an_unknown_state_code_names_the_state_column(row, value, suffix, tmp_path_factory):
    frame = good_frame()
    frame.loc[row, "STATE"] = value
    message, left = run_on_table(table(tmp_path_factory, frame, suffix), tmp_path_factory)
    assert "unknown STATE value(s)" in message and not left


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_without_rows_is_refused(suffix, tmp_path_factory):
    message, left = run_on_table(table(tmp_path_factory, good_frame().iloc[:0], suffix), tmp_path_factory)
    assert "has no rows" in message and not left


def test_the_preflight_check_names_the_key_and_exits_2(tmp_path):
    results = tmp_path / "never"
    proc = subprocess.run([sys.executable, "-m", "fl_app.check", "--run-config", f'fail-prob=2.0 results-dir="{results}"'],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr.strip()) == (2, "error: config key 'fail-prob' must be <= 1, got 2")
    assert not results.exists()

"""Specification of the per-state (group, label) cell fractions and their figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.data_figures import cell_fractions, main, write_figures

# (STATE, SEX, RAC1P, label, how many such people)
PEOPLE = [
    ("AA", 1, 1, True, 3),
    ("AA", 1, 2, False, 1),
    ("AA", 2, 1, True, 2),
    ("AA", 2, 3, False, 4),
    ("BB", 1, 1, False, 1),
    ("BB", 2, 9, True, 3),
]
EXPECTED = {  # (state, attribute, group, label) -> (n, fraction)
    ("AA", "sex", "male", 1): (3, 0.3),
    ("AA", "sex", "male", 0): (1, 0.1),
    ("AA", "sex", "female", 1): (2, 0.2),
    ("AA", "sex", "female", 0): (4, 0.4),
    ("AA", "race", "white", 1): (5, 0.5),
    ("AA", "race", "white", 0): (0, 0.0),
    ("AA", "race", "non-white", 1): (0, 0.0),
    ("AA", "race", "non-white", 0): (5, 0.5),
    ("BB", "sex", "male", 1): (0, 0.0),
    ("BB", "sex", "male", 0): (1, 0.25),
    ("BB", "sex", "female", 1): (3, 0.75),
    ("BB", "sex", "female", 0): (0, 0.0),
    ("BB", "race", "white", 1): (0, 0.0),
    ("BB", "race", "white", 0): (1, 0.25),
    ("BB", "race", "non-white", 1): (3, 0.75),
    ("BB", "race", "non-white", 0): (0, 0.0),
}
PNGS = [
    "income_sex_cells_by_state.png",
    "income_sex_cell_histograms.png",
    "income_race_cells_by_state.png",
    "income_race_cell_histograms.png",
]


def people() -> pd.DataFrame:
    rows = [(s, sex, race, label) for s, sex, race, label, n in PEOPLE for _ in range(n)]
    frame = pd.DataFrame(rows, columns=["STATE", "SEX", "RAC1P", "label"])
    frame["AGEP"] = 40  # an extra column, to be ignored
    return frame


def as_dict(table: pd.DataFrame) -> dict:
    return {
        (r.state, r.attribute, r.group, r.label): (r.n, r.fraction)
        for r in table.itertuples(index=False)
    }


def test_cell_fractions_are_the_exact_shares_of_each_state_including_empty_cells():
    table = cell_fractions(people())
    assert list(table.columns) == ["state", "attribute", "group", "label", "n", "fraction"]
    got = as_dict(table)
    assert got.keys() == EXPECTED.keys()
    for key, (n, fraction) in EXPECTED.items():
        assert got[key][0] == n
        assert got[key][1] == pytest.approx(fraction, abs=1e-15)


def test_cell_fractions_sum_to_one_per_state_and_attribute():
    sums = cell_fractions(people()).groupby(["state", "attribute"])["fraction"].sum()
    assert sums.to_numpy() == pytest.approx([1.0] * 4, abs=1e-15)


def test_integer_labels_count_like_booleans():
    frame = people()
    frame["label"] = frame["label"].astype(int)
    assert as_dict(cell_fractions(frame)) == as_dict(cell_fractions(people()))


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [("SEX", 3, "SEX"), ("RAC1P", 0, "RAC1P"), ("label", 2, "label")],
)
def test_cell_fractions_rejects_codes_outside_the_coding(column, value, expected):
    frame = people().astype({"label": int})
    frame.loc[0, column] = value
    with pytest.raises(ValueError, match=expected):
        cell_fractions(frame)


def test_cell_fractions_names_a_missing_column():
    with pytest.raises(ValueError, match="RAC1P"):
        cell_fractions(people().drop(columns="RAC1P"))


def test_write_figures_writes_the_csv_and_non_empty_pngs(tmp_path):
    written = write_figures(cell_fractions(people()), "income", tmp_path / "figs")
    assert [p.name for p in written] == ["cell_fractions.csv", *PNGS]
    for png in written[1:]:
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert as_dict(pd.read_csv(written[0])) == as_dict(cell_fractions(people()))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_reads_csv_or_parquet_and_reports_every_file(tmp_path, capsys, suffix):
    data = tmp_path / f"people{suffix}"
    if suffix == ".csv":
        people().to_csv(data, index=False)
    else:
        people().to_parquet(data)
    out = tmp_path / "figs"
    assert main(["--data", str(data), "--task", "income", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"wrote {out / name}" for name in ["cell_fractions.csv", *PNGS]]
    assert as_dict(pd.read_csv(out / "cell_fractions.csv")) == as_dict(cell_fractions(people()))


def write_missing_column(path):
    people().drop(columns="SEX").to_csv(path, index=False)


def write_garbage(path):
    path.write_bytes(b"\x00not a parquet file\xff" * 10)


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("absent.parquet", None, "does not exist"),
        ("people.csv", write_missing_column, "lacks column(s): SEX"),
        ("people.parquet", write_garbage, "is unreadable"),
        ("people.xlsx", write_garbage, "unsupported format"),
    ],
)
def test_cli_rejects_bad_input_with_one_message_and_no_output_dir(
    tmp_path, capsys, name, make, expected
):
    data = tmp_path / name
    if make is not None:
        make(data)
    out = tmp_path / "figs"
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(data), "--task", "income", "--out", str(out)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert expected in captured.err
    assert not out.exists()


def test_synthetic_source_gives_figures_for_the_employment_task(tmp_path):
    out = tmp_path / "figs"
    assert main(["--source", "synthetic", "--states", "AL,WY", "--task", "employment", "--out", str(out)]) == 0
    table = pd.read_csv(out / "cell_fractions.csv", keep_default_na=False)
    assert sorted(table["state"].unique()) == ["AL", "WY"]
    sums = table.groupby(["state", "attribute"])["fraction"].sum()
    assert np.allclose(sums.to_numpy(), 1.0)

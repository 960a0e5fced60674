"""Refactors keep results byte-identical: each reference case, run now, writes exactly the
files recorded from an earlier main by tests/reference/record.py."""

import pytest

from strategies.registry import SPECS
from tests.reference.record import CASES, FILES, HERE, run_case


@pytest.mark.parametrize("case", sorted(CASES))
def test_results_equal_the_recorded_reference_bytes(case, tmp_path):
    out = run_case(case, tmp_path)
    recorded = sorted(p.name for p in (HERE / case).iterdir())
    assert sorted(f for f in FILES if (out / f).exists()) == recorded
    for name in recorded:
        assert (out / name).read_bytes() == (HERE / case / name).read_bytes(), f"{case}/{name} differs"


def test_every_registered_strategy_has_a_reference_case():
    covered = {case["strategy"] for case in CASES.values()}
    assert [s.name for s in SPECS if s.name not in covered] == []

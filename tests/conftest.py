"""Shared test data builders: small frames of raw income codes made here, never read from disk."""

import numpy as np
import pandas as pd
import pytest


def income_frame(state: str, n: int, seed: int = 0) -> pd.DataFrame:
    """n random income records of one state, raw PUMS code ranges, about 40% positive."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "STATE": state,
            "AGEP": rng.integers(17, 90, n), "COW": rng.integers(1, 9, n), "SCHL": rng.integers(1, 25, n),
            "MAR": rng.integers(1, 6, n), "OCCP": rng.integers(10, 9830, n), "POBP": rng.integers(1, 555, n),
            "RELP": rng.integers(0, 18, n), "WKHP": rng.integers(1, 99, n), "SEX": rng.integers(1, 3, n),
            "RAC1P": rng.integers(1, 10, n), "label": rng.random(n) < 0.4,
        }
    )


@pytest.fixture
def make_income_frame():
    return income_frame

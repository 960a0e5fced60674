"""Deterministic synthetic PUMS person records, shaped like the 2018 ACS 1-Year person files.

Used when no real data is at hand, to write offline folktables fixtures for tests, and to give
clustered-FL tests two clearly different client populations (`reversed_states`). Codes and blanks
follow the 2018 PUMS data dictionary. The labels folktables derives (PINCP > 50,000 for ACSIncome,
ESR == 1 for ACSEmployment) come from a state-specific logistic relation on the features, so a
model can learn them, plus direct sex and race terms, so fairness gaps exist (men and White people
higher, as in the real data). Each state draws from its own generator seeded by (seed, FIPS code),
so its rows never depend on which other states are requested.

The income side is fitted to the census per state (`clients/fit_synthetic.py` writes the knobs to
`synthetic_params.json`): its ACSIncome records match the real ones in number, female and
non-White shares, positive rate by sex and by race, and the held-out AUC of a logistic
regression, so that federated training at the study's settings learns as it does on real data.
What the census table cannot tell (employment, birthplace) stays a seeded draw per state.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clients import fixed_math
from core.states import STATE_FIPS

if TYPE_CHECKING:  # loaded where frames are made: a ClientApp process reading cached codes never needs it
    import pandas as pd

SURVEY_YEAR = "2018"
HORIZON = "1-Year"

COLUMNS = (
    "SERIALNO", "ST", "PWGTP", "AGEP", "COW", "SCHL", "MAR", "OCCP", "POBP", "RELP", "WKHP",
    "SEX", "RAC1P", "PINCP", "DIS", "ESP", "CIT", "MIG", "MIL", "ANC", "NATIVITY", "DEAR",
    "DEYE", "DREM", "ESR",
)
# Columns PUMS leaves blank outside their universe: float64 with NaN, as read_csv gives them.
BLANKABLE = ("COW", "SCHL", "OCCP", "WKHP", "PINCP", "ESP", "MIG", "MIL", "DREM", "ESR")

_AGE_P = np.interp(np.arange(100), [0, 60, 70, 80, 90, 99], [1, 1, 0.8, 0.45, 0.15, 0.02])
_US_FIPS = np.array(sorted(set(STATE_FIPS.values()) - {72}))
_TERRITORIES = np.array([60, 66, 69, 72, 78])
_TERRITORY_P = [0.02, 0.05, 0.02, 0.86, 0.05]
# Foreign birthplace code ranges (Europe, Asia, Americas, Africa, Oceania) and their mix for
# White, Black, Asian and other-race immigrants.
_REGIONS = np.array([[100, 169], [200, 254], [300, 399], [400, 469], [501, 554]])
_REGION_P = np.array([
    [0.35, 0.05, 0.55, 0.03, 0.02],
    [0.02, 0.02, 0.45, 0.50, 0.01],
    [0.01, 0.96, 0.01, 0.01, 0.01],
    [0.05, 0.10, 0.80, 0.03, 0.02],
])
_NONWHITE_P = [0.45, 0.04, 0.003, 0.01, 0.22, 0.008, 0.12, 0.15]  # RAC1P 2..9

# Years of schooling per SCHL code (index = code), the education signal of both labels.
_YEARS = np.array([0, 0, 0, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11.5, 12, 12, 12.5, 13, 14,
                   16, 18, 19, 20])
# Adults' highest grade: below high school (1-15), then codes 16..24, with these shares.
_ADULT_SCHL = np.array([0, 16, 17, 18, 19, 20, 21, 22, 23, 24])
_ADULT_SCHL_P = np.array([0.11, 0.23, 0.04, 0.06, 0.14, 0.09, 0.20, 0.09, 0.02, 0.02])
_LOW_SCHL_P = [7, 1, 1, 1, 1, 1, 1, 2, 3, 2, 5, 7, 12, 22, 14]  # codes 1..15

# MAR 1..5 by age band: 15-17, 18-24, 25-34, 35-64, 65+ (under 15 is 5, "never married").
_MAR_AGES = [18, 25, 35, 65]
_MAR_P = np.array([
    [0.01, 0.0, 0.0, 0.0, 0.99],
    [0.10, 0.0, 0.005, 0.005, 0.89],
    [0.45, 0.002, 0.05, 0.015, 0.483],
    [0.60, 0.03, 0.14, 0.025, 0.205],
    [0.55, 0.25, 0.13, 0.01, 0.06],
])


def _relp_row(weights: dict[int, float]) -> list[float]:
    return [weights.get(code, 0.0) for code in range(18)]


# RELP 0..17 for children, unmarried adults 18-24 / 25-64 / 65+, and married adults.
_RELP_P = np.array([
    _relp_row({2: .80, 3: .02, 4: .04, 5: .01, 7: .08, 10: .02, 14: .005, 15: .015, 16: .005,
               17: .005}),
    _relp_row({0: .18, 2: .45, 5: .02, 7: .02, 10: .03, 11: .02, 12: .06, 13: .08, 15: .03,
               16: .01, 17: .10}),
    _relp_row({0: .50, 2: .15, 5: .03, 6: .01, 10: .03, 11: .02, 12: .05, 13: .12, 15: .03,
               16: .03, 17: .01}),
    _relp_row({0: .70, 2: .03, 5: .02, 6: .03, 8: .02, 10: .04, 11: .01, 12: .02, 13: .04,
               15: .01, 16: .06, 17: .01}),
    _relp_row({0: .50, 1: .46, 2: .01, 6: .01, 8: .005, 9: .01, 10: .005}),
])

# Civilian occupation groups, in the order of tasks.OCCP_GROUP_EDGES (MGR ... TRN): code range,
# share, skill (pull of education, and the income premium) and pull towards women.
_OCC_EDGES = np.array([0, 500, 800, 1000, 1300, 1600, 2000, 2100, 2200, 2600, 3000, 3600, 3700,
                       4000, 4200, 4300, 4700, 5000, 6000, 6200, 6800, 7000, 7700, 9000, 9800])
_OCC_SHARE = np.array([.10, .04, .025, .03, .02, .01, .015, .012, .06, .02, .06, .025, .02, .055,
                       .035, .03, .10, .11, .008, .05, .003, .035, .055, .07])
_OCC_SKILL = np.array([1.0, .9, .9, 1.2, 1.2, 1.3, .5, 1.3, 1.0, .6, 1.1, -.3, -.2, -1.0, -1.2,
                       -.6, -.2, 0.0, -1.2, -1.0, -.8, -.6, -.9, -1.0])
_OCC_FEMALE = np.array([0.0, .2, .2, -.8, -1.0, 0.0, .4, 0.0, .8, 0.0, .6, 1.2, -.8, .2, .2, .6,
                        0.0, .6, -.8, -2.0, -2.0, -2.0, -.6, -1.0])
_MILITARY_OCCP = np.array([9800, 9810, 9820, 9830])
_MILITARY_SKILL = 0.3
_NEVER_WORKED_OCCP = 9920  # with COW 9: unemployed, last worked 5+ years ago or never

_COW_P = [0.66, 0.09, 0.067, 0.05, 0.032, 0.062, 0.038, 0.003]  # COW 1..8
_COW_INCOME = np.array([0, 0, -0.1, 0, 0, 0.4, -0.2, 0.5, -3.0, 0])  # index = COW code
_ESP_P = [0.46, 0.20, 0.03, 0.02, 0.04, 0.01, 0.20, 0.04]  # ESP 1..8
_ANC = np.array([1, 2, 3, 4, 8])
_ANC_P = [0.56, 0.19, 0.01, 0.235, 0.005]
_INCOME_SCALE = 0.55  # log-income units per unit of the income latent


PARAMS_PATH = Path(__file__).with_name("synthetic_params.json")


@dataclass(frozen=True)
class Knobs:
    """A state's generator settings fitted to its census records (clients/fit_synthetic.py).

    `rows` raw person records; person-level `female` and `white` shares; the income task's
    positive rate, relation `strength` and direct logit gaps for women and non-White people.
    """

    rows: int
    female: float
    white: float
    income_rate: float
    strength: float
    sex_gap: float
    race_gap: float


@lru_cache(maxsize=1)
def fitted_knobs() -> dict[str, Knobs]:
    """Every state's fitted knobs, from `synthetic_params.json` (a JSON file, so FABs carry it)."""
    states = json.loads(PARAMS_PATH.read_text())["states"]
    return {state: Knobs(**fit["knobs"]) for state, fit in states.items()}


@dataclass(frozen=True)
class _Profile:
    """A state's heterogeneity: fitted income knobs, plus seeded draws for what the census table
    cannot tell (no employment columns, no birthplace shares): employment and foreign-born."""

    knobs: Knobs
    foreign: float
    employment_rate: float
    employment_strength: float
    employment_sex_gap: float
    employment_race_gap: float


def _profile(seed: int, fips: int, knobs: Knobs) -> _Profile:
    rng = np.random.default_rng([seed, fips, 0])
    return _Profile(
        knobs=knobs,
        foreign=rng.uniform(0.02, 0.15),
        employment_rate=rng.uniform(0.50, 0.66),
        employment_strength=rng.uniform(2.5, 4.0),
        employment_sex_gap=rng.uniform(1.0, 1.6),
        employment_race_gap=rng.uniform(0.4, 1.0),
    )


def _draw(rng: np.random.Generator, probs: np.ndarray | Sequence[float], n: int) -> np.ndarray:
    """One category index per row, from one probability row or one row per draw (unnormalised)."""
    cum = np.cumsum(np.atleast_2d(probs), axis=1)
    u = rng.random(n) * cum[:, -1]
    return (u[:, None] >= cum).sum(axis=1)


def _logistic(rng: np.random.Generator, n: int) -> np.ndarray:
    """Standard logistic draws, as numpy's `rng.logistic` makes them (log(u / (1 - u)), u in
    (0, 1)), with the log from clients.fixed_math: numpy's calls libm's, which differs by CPU."""
    u = rng.random(n)
    while (zero := u <= 0.0).any():
        u[zero] = rng.random(int(zero.sum()))
    return fixed_math.log(u / (1.0 - u))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + fixed_math.exp(-x))


def _standardise(score: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Centre and scale on the task's population, so `strength` means the same in every state."""
    if mask.sum() < 2:
        return score
    return (score - score[mask].mean()) / max(score[mask].std(), 1e-9)


def _intercept(score: np.ndarray, target: float) -> float:
    """The intercept whose expected positive rate on `score` is `target` (bisection)."""
    if score.size == 0:
        return float(fixed_math.log(target / (1.0 - target)))
    lo, hi = -30.0, 30.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _sigmoid(mid + score).mean() < target else (lo, mid)
    return 0.5 * (lo + hi)


def _birthplace(rng: np.random.Generator, p: _Profile, fips: int, age: np.ndarray,
                race: np.ndarray) -> dict[str, np.ndarray]:
    """POBP, CIT and NATIVITY, kept mutually consistent as in the Census coding."""
    n = len(age)
    race_group = np.select([race == 1, race == 2, race == 6], [0, 1, 2], 3)
    foreign_p = p.foreign * np.interp(age, [0, 18, 25, 65, 99], [0.25, 0.6, 1.3, 1.2, 1.0])
    foreign = rng.random(n) < np.minimum(foreign_p * np.where(race_group >= 2, 2.5, 1.0), 0.9)
    region = _REGIONS[_draw(rng, _REGION_P[race_group], n)]
    abroad = rng.integers(region[:, 0], region[:, 1] + 1)
    home = np.where(rng.random(n) < (0.95 if fips == 72 else 0.7), fips, rng.choice(_US_FIPS, n))
    native = np.where(rng.random(n) < 0.01, rng.choice(_TERRITORIES, n, p=_TERRITORY_P), home)
    pobp = np.where(foreign, abroad, native)
    naturalised = rng.random(n) < np.interp(age, [0, 30, 60, 99], [0.15, 0.35, 0.6, 0.75])
    cit = np.select([pobp < 60, pobp < 100, rng.random(n) < 0.07, naturalised], [1, 2, 3, 4], 5)
    return {"POBP": pobp, "CIT": cit, "NATIVITY": np.where(cit <= 3, 1, 2)}


def _schooling(rng: np.random.Generator, age: np.ndarray, race: np.ndarray,
               foreign: np.ndarray) -> np.ndarray:
    """SCHL: grade by age for children, a latent attainment for adults, blank under 3."""
    n = len(age)
    shift = np.select([race == 1, race == 2, race == 6], [0.2, -0.3, 0.6], -0.5)
    shift = shift - 0.3 * foreign - 0.01 * (age - 40)
    shares = np.cumsum(_ADULT_SCHL_P)[:-1]
    cuts = fixed_math.log(shares / (1 - shares))
    adult = _ADULT_SCHL[np.searchsorted(cuts, _logistic(rng, n) + shift)]
    adult = np.where(adult == 0, 1 + _draw(rng, _LOW_SCHL_P, n), adult)
    cap = np.select([age < 20, age < 22, age < 24, age < 26], [19, 20, 21, 22], 24)
    child = np.clip(age - 2 - (rng.random(n) < 0.3), 2, 15)
    toddler = np.where(rng.random(n) < 0.4, 1, 2)
    return np.select([age < 3, age < 5, age < 18], [np.nan, toddler, child], np.minimum(adult, cap))


def _people(rng: np.random.Generator, p: _Profile, fips: int, n: int) -> dict[str, np.ndarray]:
    """Everything but work and income: demographics, household role, disability, mobility."""
    age = _draw(rng, _AGE_P, n)
    female = rng.random(n) < p.knobs.female
    race = np.where(rng.random(n) < p.knobs.white, 1, 2 + _draw(rng, _NONWHITE_P, n))
    d = {"AGEP": age, "SEX": np.where(female, 2, 1), "RAC1P": race}
    d.update(_birthplace(rng, p, fips, age, race))
    d["SCHL"] = _schooling(rng, age, race, d["NATIVITY"] == 2)

    mar_band = np.searchsorted(_MAR_AGES, age, side="right")
    mar = np.where(age < 15, 5, 1 + _draw(rng, _MAR_P[mar_band], n))
    relp_row = np.select([age < 18, mar == 1, age < 25, age < 65], [0, 4, 1, 2], 3)
    relp = _draw(rng, _RELP_P[relp_row], n)
    own_child = np.isin(relp, (2, 3, 4)) & (age < 18)
    d.update(MAR=mar, RELP=relp, ESP=np.where(own_child, 1 + _draw(rng, _ESP_P, n), np.nan))

    dis_p = np.interp(age, [0, 18, 35, 65, 75, 90], [0.04, 0.06, 0.08, 0.25, 0.35, 0.6])
    disabled = rng.random(n) < dis_p
    dear = disabled & (rng.random(n) < np.interp(age, [0, 65, 90], [0.1, 0.3, 0.5]))
    deye = disabled & (rng.random(n) < 0.15)
    drem = disabled & (rng.random(n) < np.where(age < 65, 0.4, 0.25))
    d.update(DIS=np.where(disabled, 1, 2), DEAR=np.where(dear, 1, 2), DEYE=np.where(deye, 1, 2),
             DREM=np.where(age < 5, np.nan, np.where(drem, 1, 2)))

    mig_p = np.array([[.87, .005, .125], [.75, .015, .235], [.90, .005, .095], [.95, .002, .048]])
    mig_band = np.searchsorted([18, 35, 65], age, side="right")
    d["MIG"] = np.where(age < 1, np.nan, 1 + _draw(rng, mig_p[mig_band], n))
    veteran = np.interp(age, [17, 30, 50, 70, 80, 99], [.01, .04, .07, .2, .35, .3])
    veteran = veteran * np.where(female, 0.125, 1.0)
    active = np.where(age <= 45, np.where(female, 0.001, 0.006), 0.0)
    u = rng.random(n)
    d["MIL"] = np.select(
        [age < 17, u < active, u < active + veteran, u < active + veteran + 0.006 * (age < 65)],
        [np.nan, 1, 2, 3], 4)
    d["ANC"] = _ANC[_draw(rng, _ANC_P, n)]
    return d


def _employment(rng: np.random.Generator, p: _Profile, d: dict[str, np.ndarray],
                sign: float) -> np.ndarray:
    """ESR for ages 16+, from a state-specific logistic relation on the ACSEmployment features."""
    age, n = d["AGEP"], len(d["AGEP"])
    merit = (np.clip(-((age - 40) / 15) ** 2, -4, 0) + (_years(d["SCHL"]) - 13) / 3
             - 1.5 * (d["DIS"] == 1) - 0.3 * (d["DEAR"] == 1) - 0.3 * (d["DEYE"] == 1)
             - 0.5 * (d["DREM"] == 1) + 0.3 * (d["MAR"] == 1) - 0.5 * (d["MIG"] == 2)
             - 0.2 * (d["CIT"] == 5) - 0.3 * ((d["RELP"] == 2) & (age >= 18))
             - 3.0 * (d["RELP"] == 16))
    working_age = age >= 16
    gap = _group_gap(p.employment_sex_gap, p.employment_race_gap, d)
    score = sign * p.employment_strength * _standardise(merit, working_age) - gap
    employed = rng.random(n) < _sigmoid(_intercept(score[working_age], p.employment_rate) + score)
    return np.select(
        [~working_age, d["MIL"] == 1, employed & (rng.random(n) < 0.025), employed,
         rng.random(n) < 0.08],
        [np.nan, 4, 2, 1, 3], 6)


def _work(rng: np.random.Generator, d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """WKHP for work in the past 12 months; COW and OCCP for work in the past 5 years."""
    age, esr, n = d["AGEP"], d["ESR"], len(d["AGEP"])
    female = d["SEX"] == 2
    at_work = np.isin(esr, (1, 2, 4))
    worked_year = at_work | ((esr == 3) & (rng.random(n) < 0.6)) | (
        (esr == 6) & (rng.random(n) < np.where(age < 65, 0.15, 0.05)))
    never_worked = (esr == 3) & ~worked_year & (rng.random(n) < 0.3)
    worked_recently = worked_year | ((esr == 3) & ~never_worked) | (
        (esr == 6) & (age < 75) & (rng.random(n) < 0.2))
    hours = np.select(
        [~at_work, rng.random(n) < 0.42, rng.random(n) < np.where(female, 0.3, 0.15)],
        [rng.normal(30, 14, n).clip(1, 99), 40, rng.normal(22, 8, n).clip(1, 34)],
        rng.normal(46, 8, n).clip(35, 99))

    military = esr == 4
    edu_z = (_years(d["SCHL"]) - 13) / 3
    sex_sign = np.where(female, 1.0, -1.0)[:, None]
    occ_logits = 1.2 * _OCC_SKILL * edu_z[:, None] + 0.5 * _OCC_FEMALE * sex_sign
    group = _draw(rng, _OCC_SHARE * fixed_math.exp(occ_logits), n)
    width = (_OCC_EDGES[group + 1] - _OCC_EDGES[group]) // 10
    civil = _OCC_EDGES[group] + 10 * rng.integers(1, width)
    kinds = [military, never_worked, worked_recently]
    return {
        "WKHP": np.where(worked_year, np.round(hours), np.nan),
        "COW": np.select(kinds, [5, 9, 1 + _draw(rng, _COW_P, n)], np.nan),
        "OCCP": np.select(kinds, [rng.choice(_MILITARY_OCCP, n), _NEVER_WORKED_OCCP, civil],
                          np.nan),
        "skill": np.select([military, worked_recently], [_MILITARY_SKILL, _OCC_SKILL[group]], 0.0),
    }


def _income(rng: np.random.Generator, p: _Profile, d: dict[str, np.ndarray],
            sign: float) -> np.ndarray:
    """PINCP for ages 15+: workers' earnings follow a logistic latent, so PINCP > 50,000 obeys a
    state-specific logistic law on the ACSIncome features; others live on transfers or nothing."""
    age, n = d["AGEP"], len(d["AGEP"])
    worked_year = ~np.isnan(d["WKHP"])
    merit = ((_years(d["SCHL"]) - 13) / 3 + (np.nan_to_num(d["WKHP"]) - 38) / 10 * worked_year
             + np.clip(-((age - 48) / 16) ** 2, -3, 0) + 0.8 * d["skill"]
             + _COW_INCOME[np.nan_to_num(d["COW"]).astype(int)] + 0.2 * (d["MAR"] == 1)
             - 0.2 * (d["CIT"] == 5))
    earner = (age > 16) & worked_year
    k = p.knobs
    score = sign * k.strength * _standardise(merit, earner) - _group_gap(k.sex_gap, k.race_gap, d)
    latent = _intercept(score[earner], k.income_rate) + score + _logistic(rng, n)
    earnings = 50_000 * fixed_math.exp(_INCOME_SCALE * latent)
    transfers = fixed_math.exp(rng.normal(np.where(age >= 62, fixed_math.log(18_000), fixed_math.log(4_000)), 1.0))
    no_income = rng.random(n) < np.where(age < 25, 0.5, 0.15)
    pincp = np.select([age < 15, worked_year, no_income], [np.nan, earnings, 0], transfers)
    return np.round(pincp).clip(None, 1_500_000)


def _years(schl: np.ndarray) -> np.ndarray:
    return _YEARS[np.nan_to_num(schl).astype(int)]


def _group_gap(sex_gap: float, race_gap: float, d: dict[str, np.ndarray]) -> np.ndarray:
    """Direct logit penalty for women and non-White people (positive in every state's census)."""
    return sex_gap * (d["SEX"] == 2) + race_gap * (d["RAC1P"] != 1)


def _state_block(state: str, seed: int, rows: int | None, reverse: bool, knobs: Knobs | None = None) -> pd.DataFrame:
    """One state's records; `knobs` replaces the fitted ones (the fit tries candidates this way)."""
    import pandas as pd

    fips = STATE_FIPS[state]
    p = _profile(seed, fips, knobs or fitted_knobs()[state])
    n = p.knobs.rows if rows is None else rows
    rng = np.random.default_rng([seed, fips, 1])
    sign = -1.0 if reverse else 1.0
    d = _people(rng, p, fips, n)
    d["ESR"] = _employment(rng, p, d, sign)
    d.update(_work(rng, d))
    d["PINCP"] = _income(rng, p, d, sign)
    kind = np.where(np.isin(d["RELP"], (16, 17)), "GQ", "HU").tolist()
    d["SERIALNO"] = [f"{SURVEY_YEAR}{k}{fips:02d}{i:05d}" for i, k in enumerate(kind)]
    d["ST"] = np.full(n, fips)
    d["PWGTP"] = fixed_math.exp(rng.normal(fixed_math.log(70), 0.6, n)).round().clip(1, 1500)
    frame = pd.DataFrame({c: d[c] for c in COLUMNS})
    ints = [c for c in COLUMNS if c not in BLANKABLE and c != "SERIALNO"]
    return frame.astype({**{c: np.int64 for c in ints}, **{c: np.float64 for c in BLANKABLE}})


def synthetic_pums(
    states: Sequence[str],
    seed: int,
    rows_per_state: int | None = None,
    reversed_states: Collection[str] = (),
) -> pd.DataFrame:
    """PUMS-shaped person records, one block per state, in the order given.

    `rows_per_state=None` gives each state its fitted size: as many raw rows as yield about its
    census count of ACSIncome records (3,064 for WY to 195,665 for CA); in `reversed_states` the
    feature-label relation of both labels is negated (the direct sex and race gaps are kept), so
    those clients form a clearly different population.
    """
    unknown = [s for s in (*states, *reversed_states) if s not in STATE_FIPS]
    if unknown:
        raise ValueError(f"unknown state codes {unknown}; expected folktables' 2-letter codes")
    if rows_per_state is not None and rows_per_state < 0:
        raise ValueError(f"rows_per_state must be >= 0, got {rows_per_state}")
    import pandas as pd

    blocks = [_state_block(s, seed, rows_per_state, s in reversed_states) for s in states]
    if not blocks:  # still the full set of typed columns
        return _state_block("AL", seed, 0, False)
    return pd.concat(blocks, ignore_index=True)


def write_folktables_fixture(
    root: str | Path,
    states: Sequence[str],
    seed: int,
    rows_per_state: int | None = None,
    reversed_states: Collection[str] = (),
) -> Path:
    """Write synthetic records as folktables' 2018 1-Year person files, for offline `get_data`.

    Files follow the Census layout `root/2018/1-Year/psam_pNN.csv`: record type `RT` first and
    SERIALNO second as in the Census files, integer codes, empty fields for blanks.
    """
    directory = Path(root) / SURVEY_YEAR / HORIZON
    directory.mkdir(parents=True, exist_ok=True)
    frame = synthetic_pums(states, seed, rows_per_state, reversed_states)
    for state in dict.fromkeys(states):
        block = frame[frame["ST"] == STATE_FIPS[state]]
        block.insert(0, "RT", "P")
        block.to_csv(directory / f"psam_p{STATE_FIPS[state]:02d}.csv", index=False, na_rep="",
                     float_format="%.0f")
    return directory

"""Fit the synthetic generator to the census: `python -m clients.fit_synthetic`.

Per state it measures a few statistics of the real ACSIncome records in the shared 46-state
table (`income_statistics`): the record count, the female and non-White shares, the positive
rate overall and by sex and race, and the feature-label strength as the held-out AUC of a
logistic regression on the task's encoded features (what the client model sees). For the
states absent from the table (CA, FL, NY, TX, PR) the count is folktables' published one and
every other statistic the 46 states' median.

The generator's knobs are then solved per state so that its own ACSIncome records show those
statistics: a few fixed-point steps (`fit_knobs`), each generating the state anew from the
same seed, so the map from knobs to statistics is smooth. Targets, knobs and the statistics
the knobs achieve go to `clients/synthetic_params.json`, which `clients/synthetic.py` reads.
Needs scikit-learn (the test extra).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
from folktables import acs
from scipy.special import logit
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from clients.make_sample import DEFAULT_SOURCE
from clients.synthetic import PARAMS_PATH, Knobs, _state_block
from core.states import FOLKTABLES_STATES, fips
from core.tasks import INCOME, encode

# folktables' ACSIncome 2018 1-Year counts of the states the shared table lacks: CA as its
# README states it; the other four complete its all-areas total of 1,664,500 exactly.
ABSENT_RECORDS = {"CA": 195_665, "FL": 98_925, "NY": 103_021, "TX": 135_924, "PR": 9_071}
STATISTICS = ("records", "female", "nonwhite", "rate", "rate_male", "rate_female", "rate_white",
              "rate_nonwhite", "auc")
CALIBRATION_ROWS = 40_000  # raw persons per fit step: about 20,000 income records
STEPS = 8
SEED = 0


def income_statistics(frame: pd.DataFrame, seed: int) -> dict[str, float]:
    """The fitted statistics of one state's income records (`label` and raw feature codes).

    `auc`: a logistic regression fit on a seeded half, scored on the other half."""
    y = frame["label"].to_numpy(dtype=bool)
    female = frame["SEX"].to_numpy() == 2
    nonwhite = frame["RAC1P"].to_numpy() != 1
    order = np.random.default_rng(seed).permutation(len(y))
    train, test = order[: len(y) // 2], order[len(y) // 2 :]
    x = encode(INCOME, frame)
    model = LogisticRegression(max_iter=2000).fit(x[train], y[train])
    return {
        "records": int(len(y)),
        "female": float(female.mean()),
        "nonwhite": float(nonwhite.mean()),
        "rate": float(y.mean()),
        "rate_male": float(y[~female].mean()),
        "rate_female": float(y[female].mean()),
        "rate_white": float(y[~nonwhite].mean()),
        "rate_nonwhite": float(y[nonwhite].mean()),
        "auc": float(roc_auc_score(y[test], model.decision_function(x[test]))),
    }


def census_targets(table: pd.DataFrame, seed: int) -> dict[str, dict[str, float]]:
    """Target statistics per state: measured, or for the states in ABSENT_RECORDS that the table
    lacks, their published count and the measured states' medians."""
    measured = {str(s): income_statistics(f.reset_index(drop=True), seed) for s, f in table.groupby("STATE")}
    medians = {k: float(np.median([t[k] for t in measured.values()])) for k in STATISTICS[1:]}
    absent = {s: {"records": n, **medians} for s, n in ABSENT_RECORDS.items() if s not in measured}
    return dict(sorted({**measured, **absent}.items()))


def synthetic_statistics(state: str, knobs: Knobs, seed: int) -> dict[str, float]:
    """The statistics of the generator's income records for `state` under `knobs`."""
    raw = _state_block(state, seed, knobs.rows, False, knobs)
    features, label, _ = acs.ACSIncome.df_to_pandas(raw)
    frame = features.astype(np.int64).assign(label=label.to_numpy().ravel().astype(bool))
    return income_statistics(frame, seed)


def _sex_logit_gap(s: dict[str, float]) -> float:
    return float(logit(s["rate_male"]) - logit(s["rate_female"]))


def _race_logit_gap(s: dict[str, float]) -> float:
    return float(logit(s["rate_white"]) - logit(s["rate_nonwhite"]))


def _separation(auc: float) -> float:
    """The binormal d' of an AUC: strength scales with it."""
    return float(np.sqrt(2.0) * norm.ppf(auc))


def fit_knobs(
    state: str, target: dict[str, float], seed: int, calibration_rows: int = CALIBRATION_ROWS, steps: int = STEPS
) -> tuple[Knobs, dict[str, float]]:
    """Knobs whose income records match `target`, and the statistics they achieve at full size.

    Each step moves every knob by its own statistic's miss, on the logit scale for shares and
    rates, additively for the gaps, in proportion to d' for the strength."""
    knobs = Knobs(calibration_rows, target["female"], 1 - target["nonwhite"], target["rate"], 3.0,
                  _sex_logit_gap(target), _race_logit_gap(target))
    for _ in range(steps):
        got = synthetic_statistics(state, knobs, seed)
        knobs = Knobs(
            rows=calibration_rows,
            female=_nudge(knobs.female, target["female"], got["female"]),
            white=1 - _nudge(1 - knobs.white, target["nonwhite"], got["nonwhite"]),
            income_rate=_nudge(knobs.income_rate, target["rate"], got["rate"]),
            strength=knobs.strength * _separation(target["auc"]) / _separation(got["auc"]),
            sex_gap=knobs.sex_gap + _sex_logit_gap(target) - _sex_logit_gap(got),
            race_gap=knobs.race_gap + _race_logit_gap(target) - _race_logit_gap(got),
        )
    rows = int(round(calibration_rows * target["records"] / got["records"]))
    knobs = Knobs(**_rounded(asdict(replace(knobs, rows=rows))))  # as written, so they reproduce `achieved`
    return knobs, synthetic_statistics(state, knobs, seed)


def _nudge(value: float, target: float, got: float) -> float:
    return float(1 / (1 + np.exp(-(logit(value) + logit(target) - logit(got)))))


def _rounded(stats: dict[str, float]) -> dict[str, float]:
    return {k: v if isinstance(v, int) else round(v, 4) for k, v in stats.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the 46-state ACSIncome table")
    parser.add_argument("--out", type=Path, default=PARAMS_PATH)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    table = pd.read_parquet(args.source, columns=["STATE", *INCOME.columns, "label"])
    targets = census_targets(table, args.seed)
    lacking = sorted(set(FOLKTABLES_STATES) - set(targets))
    if lacking:
        print(f"error: '{args.source}' lacks state(s) {', '.join(lacking)}, beyond the five whose counts "
              f"are known here ({', '.join(ABSENT_RECORDS)})", file=sys.stderr)
        return 2
    states = {}
    for state, target in targets.items():
        knobs, achieved = fit_knobs(state, target, args.seed)
        states[state] = {"target": _rounded(target), "knobs": asdict(knobs), "achieved": _rounded(achieved)}
        print(f"{state} (FIPS {fips(state):02d}) target {_rounded(target)}\n   achieved {_rounded(achieved)}", flush=True)
    params = {
        "description": (
            "Per state: target = statistics of the real ACSIncome records (records, female and non-White "
            "shares, positive rate overall and by sex and race, auc = held-out AUC of a logistic regression "
            "on the encoded features); knobs = the synthetic generator's settings fitted to them; achieved = "
            "the statistics of the generator's records under those knobs. Written by "
            "`python -m clients.fit_synthetic`."
        ),
        "source": args.source.name,
        "source_sha256": hashlib.sha256(args.source.read_bytes()).hexdigest(),
        "seed": args.seed,
        "absent_states": (
            "CA, FL, NY, TX, PR are not in the source: records = folktables' published ACSIncome counts, "
            "every other statistic = the median over the 46 states"
        ),
        "license": "Census PUMS microdata (ACS 2018 1-Year): public-domain US government data",
        "states": states,
    }
    args.out.write_text(json.dumps(params, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

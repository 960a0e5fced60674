"""Per-FedAvg's adaptation, swept: does the adapted model beat its own global model?

Run `python -m benchmarks.perfedavg_sweep [--data PATH] [--states AL,...] [--rounds N]
[--adapt-lrs 0.1,0.2] [--adapt-steps 32,64] [--json]` (defaults: the grid below, 8 rounds).
It runs, on the real ACSIncome file and through `./run.sh run` (the real `flwr run`, so each row's
seconds include starting the federation), `perfedavg` for every adapt-lr x adapt-steps pair
of the grid, and `fedavg`, `local` and `ditto` (for each `ditto-mu` of its grid) beside them,
all with the paper's setup (`preset="paper"`: paper encoding, 1000/2000/2000 records per
state, lr 0.001 x 10 local epochs, meta-lr 0.001) and seed 0. Meta-training does not depend
on the adaptation keys, so every Per-FedAvg row shares one global model; the rows differ only
in how it is adapted.

The table gives, for the last round, the mean over clients (unweighted, metrics.csv's MEAN
rows) of the deployed model's accuracy and of the global model's (Per-FedAvg's unadapted
model, Ditto's FedAvg model), on the validation split (where defaults are chosen) and on the
test split, and in how many states the deployed model beats the global one on validation.
With `--json` the last line is one JSON object with every row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "acs_income_2018_46states.parquet"
# Ten of the 46 states (3,546 to 8,265 records each). AK, DE, ND and VT have fewer than 5,000,
# so they get the 1000/2000/2000 partition's proportions (AK: 709 training records).
DEFAULT_STATES = "AK,DE,HI,ID,ME,MT,ND,NH,RI,VT"
ADAPT_LRS = (0.001, 0.01, 0.05, 0.2, 0.5)
ADAPT_STEPS = (5, 20, 32)  # 32: one epoch of 1,000 training records in batches of 32
DITTO_MUS = (0.01, 0.1, 1.0)


def grid(adapt_lrs: tuple[float, ...] = ADAPT_LRS, adapt_steps: tuple[int, ...] = ADAPT_STEPS) -> list[tuple[str, dict]]:
    """(row label, overrides): the baselines, then Per-FedAvg's adapt-lr x adapt-steps grid."""
    rows = [("fedavg", {"strategy": "fedavg"}), ("local", {"strategy": "local"})]
    rows += [(f"ditto ditto-mu={mu}", {"strategy": "ditto", "ditto-mu": mu}) for mu in DITTO_MUS]
    for lr in adapt_lrs:
        for steps in adapt_steps:
            rows.append((f"perfedavg adapt-lr={lr} adapt-steps={steps}", {"strategy": "perfedavg", "adapt-lr": lr,
                                                                          "adapt-steps": steps}))
    return rows


def last_round(results: Path, file: str) -> pd.DataFrame:
    frame = pd.read_csv(results / file, keep_default_na=False)
    return frame[frame["round"] == frame["round"].max()]


def mean_accuracy(frame: pd.DataFrame, metric: str) -> float:
    rows = frame[(frame["state"] == "MEAN") & (frame["metric"] == metric)]
    return float(rows["value"].iloc[0]) if len(rows) else float("nan")


def states_beating_global(frame: pd.DataFrame) -> int:
    """States whose deployed model is more accurate than their global model (0 without one)."""
    per_state = frame[~frame["state"].isin(["ALL", "MEAN"]) & ~frame["state"].str.startswith("cluster:")]
    table = per_state.pivot_table(index="state", columns="metric", values="value", aggfunc="first")
    if "global_accuracy" not in table:
        return 0
    return int((table["accuracy"] > table["global_accuracy"]).sum())


def run_config(keys: dict) -> str:
    """`--run-config` text: strings as TOML strings (JSON's quoting is TOML's for these), numbers bare."""
    return " ".join(f"{key}={json.dumps(value) if isinstance(value, str) else value}" for key, value in keys.items())


def measure(label: str, overrides: dict, base: dict, work: Path) -> dict:
    started = time.monotonic()
    results = work / label.replace(" ", "_")
    env = {**os.environ, "FAIRFL_NO_REPORT": "1"}
    proc = subprocess.run(["bash", str(REPO / "run.sh"), "run", "--run-config",
                           run_config({**base, **overrides, "results-dir": str(results)})],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{label}: ./run.sh run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    val, test = last_round(results, "val_metrics.csv"), last_round(results, "metrics.csv")
    return {
        "row": label,
        "val_deployed": mean_accuracy(val, "accuracy"), "val_global": mean_accuracy(val, "global_accuracy"),
        "test_deployed": mean_accuracy(test, "accuracy"), "test_global": mean_accuracy(test, "global_accuracy"),
        "val_states_beating_global": states_beating_global(val), "seconds": round(time.monotonic() - started, 1),
    }


def markdown(rows: list[dict], states: int) -> str:
    lines = [f"| run | val deployed | val global | test deployed | test global | states deployed > global (val, of {states}) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[k]:.4f}" if r[k] == r[k] else "-" for k in ("val_deployed", "val_global", "test_deployed", "test_global")]
        beating = str(r["val_states_beating_global"]) if r["val_global"] == r["val_global"] else "-"
        lines.append(f"| {r['row']} | {' | '.join(cells)} | {beating} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--states", default=DEFAULT_STATES)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--adapt-lrs", default=",".join(map(str, ADAPT_LRS)), help="comma-separated adapt-lr values")
    parser.add_argument("--adapt-steps", default=",".join(map(str, ADAPT_STEPS)), help="comma-separated adapt-steps values")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    base = {"data-source": "table", "data-path": str(args.data.resolve()), "states": args.states,
            "preset": "paper", "num-server-rounds": args.rounds, "seed": 0}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lrs, steps = tuple(float(v) for v in args.adapt_lrs.split(",")), tuple(int(v) for v in args.adapt_steps.split(","))
        for label, overrides in grid(lrs, steps):
            rows.append(measure(label, overrides, base, Path(tmp)))
            print(f"{label}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    print(f"{len(args.states.split(','))} states ({args.states}), {args.rounds} rounds, preset paper, seed 0; "
          "mean local accuracy over clients, last round")
    print(markdown(rows, len(args.states.split(","))))
    if args.json:
        clean = [{k: (None if v != v else v) for k, v in r.items()} for r in rows]  # NaN is no JSON
        print(json.dumps({"states": args.states, "rounds": args.rounds, "rows": clean}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write the bundled sample of real ACSIncome records: `python -m clients.make_sample`.

The sample is the app's offline default (data source `sample`): per state a seeded random
5,000 records of the shared 46-state table (all of a smaller state's), in the table's own
order, so a fresh checkout runs on real data with no download. Codes are stored in the
smallest integer types and the file is zstd-compressed, which keeps it under 2 MB. A JSON
sidecar records where it came from, the seed and the per-state counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clients.sources import SAMPLE_PATH, DataError, check_table
from core.states import fips
from core.tasks import INCOME

DEFAULT_SOURCE = SAMPLE_PATH.parents[2] / "shared" / "data" / "acs_income_2018_46states.parquet"
PER_STATE = 5_000
SEED = 0
COLUMNS = ("STATE", *INCOME.columns, "label")
ZSTD_LEVEL = 19
LICENSE = "Census PUMS microdata (ACS 2018 1-Year): public-domain US government data"


def sample_records(frame: pd.DataFrame, per_state: int, seed: int, columns: tuple[str, ...] = COLUMNS) -> pd.DataFrame:
    """Per state, `per_state` records drawn without replacement from (seed, FIPS code), kept in
    the table's order; a state with fewer keeps all. `columns` are STATE, the task's feature
    codes and label; codes become the smallest integer types."""
    picks = []
    for state, rows in frame.groupby("STATE", sort=True).indices.items():
        if len(rows) > per_state:
            rng = np.random.default_rng([seed, fips(str(state))])
            rows = np.sort(rng.choice(rows, size=per_state, replace=False))
        picks.append(rows)
    sample = frame.iloc[np.concatenate(picks)].reset_index(drop=True)
    out = pd.DataFrame({"STATE": sample["STATE"].astype(str)})
    for column in columns[1:-1]:
        out[column] = pd.to_numeric(sample[column], downcast="integer")
    out["label"] = sample["label"].astype(bool)
    return out


def write_sample(sample: pd.DataFrame, path: Path) -> None:
    """Parquet, zstd; the same table gives the same bytes (no timestamps are written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(sample, preserve_index=False)
    pq.write_table(table, path, compression="zstd", compression_level=ZSTD_LEVEL)


def sample_facts(sample: pd.DataFrame, seed: int, per_state: int) -> dict:
    """The sidecar's account of a sample, shared by both tasks' samples: how it was drawn and what
    it holds per state."""
    counts = sample.groupby("STATE", sort=True)["label"].agg(["size", "sum"])
    return {
        "seed": seed,
        "per_state": per_state,
        "rows": int(len(sample)),
        "states": len(counts),
        "counts": {s: int(n) for s, n in counts["size"].items()},
        "positives": {s: int(p) for s, p in counts["sum"].items()},
        "license": LICENSE,
    }


def write_sidecar(info: dict, out: Path) -> None:
    """`out`'s JSON sidecar, then the per-state counts and what was written, on the console."""
    out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    for state, n in info["counts"].items():
        print(f"{state} {n}")
    print(f"wrote {out} ({info['rows']} rows, {out.stat().st_size:,} bytes) and {out.with_suffix('.json').name}")


def sidecar(sample: pd.DataFrame, source: Path, seed: int, per_state: int) -> dict:
    """What the sample is and where it came from, for `data/<name>.json` (FABs carry JSON)."""
    return {
        "description": (
            f"Seeded random sample of the folktables ACSIncome task (2018 ACS 1-Year person survey): "
            f"{per_state} records per state, all of a smaller state's; columns STATE and the ten raw "
            "ACSIncome features with their PUMS codes, label = PINCP > 50,000."
        ),
        "source": source.name,
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        **sample_facts(sample, seed, per_state),
        "rebuild": "python -m clients.make_sample",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the 46-state ACSIncome table")
    parser.add_argument("--out", type=Path, default=SAMPLE_PATH, help="parquet file to write")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--per-state", type=int, default=PER_STATE)
    args = parser.parse_args(argv)
    try:
        check_table(args.source, INCOME)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sample = sample_records(pq.read_table(args.source, columns=list(COLUMNS)).to_pandas(), args.per_state, args.seed)
    write_sample(sample, args.out)
    print(f"source: {args.source.resolve()} (seed {args.seed}, {args.per_state} per state)")
    write_sidecar(sidecar(sample, args.source.resolve(), args.seed, args.per_state), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write the bundled sample of real ACSEmployment records: `python -m clients.make_employment_sample`.

The employment task's offline default (data source `sample`), made the way the income sample is
(`clients.make_sample`: per state a seeded 5,000 records, all of a smaller state's, in source
order, smallest integer types, zstd) from the only real employment data on hand: Wyoming's raw
2018 PUMS file read through the project's folktables path, and the Massachusetts table folktables
made. Both go through `state_records`, so blanks are 0 in both, as the folktables path gives them.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import pandas as pd

from clients.make_sample import sample_facts, sample_records, write_sample, write_sidecar
from clients.sources import EMPLOYMENT_SAMPLE_PATH, DataError, Source, folktables_file, resolve_source, state_records
from core.tasks import EMPLOYMENT

SHARED_DATA = EMPLOYMENT_SAMPLE_PATH.parents[2] / "shared" / "data"
DEFAULT_PUMS_DIR = SHARED_DATA / "pums"
DEFAULT_TABLE = SHARED_DATA / "acs_employment_2018_MA.parquet"
PER_STATE = 5_000
SEED = 0
COLUMNS = ("STATE", *EMPLOYMENT.columns, "label")


def real_records(sources: list[Source]) -> pd.DataFrame:
    """Every state of every source, read as a run reads it."""
    frames = [state_records(source, EMPLOYMENT, state, 0, 0)[list(COLUMNS)]
              for source in sources for state in source.states]
    return pd.concat(frames, ignore_index=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sidecar(sample: pd.DataFrame, files: list[Path], seed: int, per_state: int) -> dict:
    """What the sample is and where it came from, for `data/<name>.json`."""
    return {
        "description": (
            f"Seeded random sample of the folktables ACSEmployment task (2018 ACS 1-Year person survey): "
            f"{per_state} records per state, all of a smaller state's; columns STATE and the 16 raw "
            "ACSEmployment features with their PUMS codes (blank answers 0), label = ESR == 1."
        ),
        "sources": {path.name: _sha256(path) for path in files},
        **sample_facts(sample, seed, per_state),
        "rebuild": "python -m clients.make_employment_sample",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pums-dir", type=Path, default=DEFAULT_PUMS_DIR, help="folktables root of raw PUMS files")
    parser.add_argument("--pums-states", default="WY", help="comma-separated states read from --pums-dir")
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="ACSEmployment table (parquet or CSV)")
    parser.add_argument("--out", type=Path, default=EMPLOYMENT_SAMPLE_PATH, help="parquet file to write")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--per-state", type=int, default=PER_STATE)
    args = parser.parse_args(argv)
    pums_states = tuple(s for s in args.pums_states.split(",") if s)
    try:
        pums = resolve_source("folktables", "", str(args.pums_dir), pums_states, EMPLOYMENT)
        table = resolve_source("table", str(args.table), "", (), EMPLOYMENT)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sample = sample_records(real_records([pums, table]), args.per_state, args.seed, COLUMNS)
    write_sample(sample, args.out)
    files = [folktables_file(args.pums_dir, s) for s in pums.states] + [args.table]
    print(f"sources: {', '.join(str(f.resolve()) for f in files)} (seed {args.seed}, {args.per_state} per state)")
    write_sidecar(sidecar(sample, files, args.seed, args.per_state), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Download Census PUMS person files into a folktables root: `python -m clients.download_acs`.

The one place the project downloads anything, so that a run stays offline: `data-source
"folktables"` then reads `<data-dir>/2018/1-Year/psam_pXX.csv` with folktables' `download=False`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from folktables import ACSDataSource

from clients.sources import ACS_HORIZON, ACS_YEAR, default_data_dir, folktables_file
from core.states import FOLKTABLES_STATES


def parse_states(text: str) -> tuple[str, ...]:
    """Comma-separated state codes; "" is every folktables state. Raises ValueError naming the valid ones."""
    states = tuple(s.strip().upper() for s in text.split(",") if s.strip()) or FOLKTABLES_STATES
    unknown = [s for s in states if s not in FOLKTABLES_STATES]
    if unknown:
        raise ValueError(f"unknown state(s) {', '.join(unknown)}; valid choices: {', '.join(FOLKTABLES_STATES)}")
    return states


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folktables root (run key data-dir)")
    parser.add_argument("--states", default="", help="comma-separated state codes; '' = all 51")
    args = parser.parse_args(argv)
    try:
        states = parse_states(args.states)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    reader = ACSDataSource(survey_year=ACS_YEAR, horizon=ACS_HORIZON, survey="person", root_dir=str(args.data_dir))
    for state in states:
        reader.get_data(states=[state], download=True)
        path = folktables_file(args.data_dir, state)
        if not path.is_file():
            print(f"error: the download of {state} left no file at '{path}'", file=sys.stderr)
            return 1
        print(f"{state} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

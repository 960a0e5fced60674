"""The study: strategies x configurations x seeds, trained in few federations and resumable, then one summary
with bootstrap intervals over seeds and one report (Markdown and self-contained HTML).

`./run.sh study` or `python -m analysis.study --strategies 'fedavg ifca fair-ifca' --seeds 5
--lambdas 0.5,1,5 --run-config '<common keys>' --out DIR [--grid FILE.toml]`.

A study directory holds `study.json` (its grid), `runs.csv`, `runs/<run>/` (one results directory
per run), `federations/` (the runs trained together in one `flwr run`), `logs/`, and the outputs
(`summary.csv`, the report and its tables). With a `[tune]` grid, the tuning runs (`runs/tune-*`)
train beside every arm that needs no choice, the choice goes to `tuning.csv`, then arm "tuned" trains.
Running the same command again trains nothing that is complete (a finished tuning phase included),
resumes killed runs, retries failed ones and rewrites the outputs; a directory holding another study
is refused. Grid files: `analysis/grids/paper.toml`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.cli import OneLineErrorParser
from analysis.study_plan import (
    DEFAULT_SEEDS,
    TUNED,
    StudyError,
    build_grid,
    check_out_dir,
    plan,
    study_record,
    unique_runs,
    valid_strategies,
)
from analysis.study_run import check_configs, execute, lock, run_state
from analysis.study_tune import choose, tuning_runs, write_tuning
from recorder.files import ResultsError, write_atomic


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="python -m analysis.study", description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", help=f"space-separated (default: all: {' '.join(valid_strategies())})")
    parser.add_argument("--seeds", help=f"N for seeds 0..N-1 or a list such as 0,1,2 (default {DEFAULT_SEEDS})")
    parser.add_argument("--lambdas", help="Fair-* weights, e.g. 0.5,1,5 (default 1)")
    parser.add_argument("--run-config", help="keys common to every run, as for ./run.sh run")
    parser.add_argument("--grid", type=Path, help="TOML grid file (analysis/grids/paper.toml); options override it")
    parser.add_argument("--out", type=Path, help="study directory (new, or this study's to continue)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        grid, out = build_grid(args)
        tuning = tuning_runs(grid)
        runs = plan(grid)
        first = [*tuning, *unique_runs(runs)]  # tuning and every arm that needs no choice, trained together
        record = study_record(grid, first)
        check_out_dir(out, record)
        check_configs(out, first)
        out.mkdir(parents=True, exist_ok=True)
        held = lock(out)
        if not (out / "study.json").is_file():
            write_atomic(out / "study.json", (json.dumps(record, indent=2) + "\n").encode())
        fresh = any(run_state(out / r.run_dir) != "complete" for r in first)
        rows = execute(out, first, say, last=grid.tune is None)
        if grid.tune is not None:
            chosen, table = choose(out, grid, rows)
            write_tuning(out, table)
            for strategy in grid.tune.strategies:
                say(f"tuning: {strategy} runs as '{TUNED}' with " + " ".join(f"{k}={v}" for k, v in chosen[strategy].items())
                    if strategy in chosen else f"tuning: no choice for {strategy} yet (a tuning run did not complete "
                    "or none scored a finite validation loss); its tuned arm waits for the next invocation")
            runs = plan(grid, chosen)
            tuned = [r for r in unique_runs(runs) if r.run_dir not in {f.run_dir for f in first}]
            check_configs(out, tuned)
            rows = execute(out, [*tuning, *unique_runs(runs)], say, attempted=rows, last=not fresh)
    except StudyError as error:
        parser.error(str(error))
    from analysis.study_report import write_outputs  # matplotlib and friends only once runs are done

    try:
        written = write_outputs(out, runs, rows)
    except ResultsError as error:  # a completed run's files were changed or damaged since
        say(f"python -m analysis.study: error: cannot report: {error}")
        return 1
    finally:
        os.close(held)
    print("wrote " + ", ".join(str(p) for p in written))
    failed = [r["run_dir"] for r in rows if r["status"] == "failed"]
    if failed:
        say(f"{len(failed)} run(s) failed: {', '.join(failed)} (see logs/); run the same command to retry them")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

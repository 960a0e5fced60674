#!/usr/bin/env bash
# One entry point for users and CI.
#   ./run.sh setup                      create .venv with the pinned dependencies
#   ./run.sh clean-cache                empty the caches runs rebuild by themselves (fl_app/clean_cache.py)
#   ./run.sh test [--fast] [pytest args] setup, then run the test suite (--fast: only the tests
#                                       not marked live, i.e. no federation in other processes)
#   ./run.sh lint                       ruff check on the whole repository (the suite runs it too)
#   ./run.sh py [args]                  the project venv's python (e.g. ./run.sh py -m analysis.compare ...)
#   ./run.sh run [--run-config '...']   setup, then one experiment through `flwr run`
#   ./run.sh deploy [--run-config '...'] the same on Flower's deployment engine (SuperLink + SuperNodes)
#   ./run.sh compare [--run-config '...'] every strategy with the study's settings, then the
#                                       per-state comparison against FedAvg (and local)
#   ./run.sh study [--strategies '...'] [--seeds N|0,1,2] [--lambdas 0.5,1] [--run-config '...'] [--grid FILE] --out DIR
#                                       strategies x seeds (resumable), summary with bootstrap CIs, report
# FAIRFL_NO_REPORT=1 skips the end-of-run report (compare writes one for all its runs).
# `run` takes care of the Flower traps measured here (see docs/deployment.md): no runtime dependency
# install, absolute paths, the right number of SuperNodes, its own SuperLink (own FLWR_HOME
# and ports, stopped by pid at the end), and a non-zero exit when the run failed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${FAIRFL_VENV:-$REPO/.venv}"
PY="$VENV/bin/python"

setup() {
  local stamp="$VENV/.fairfl-stamp" want
  want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
  local started=$SECONDS
  echo "setup 1/4: creating the virtualenv $VENV" >&2
  python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
  echo "setup 2/4: upgrading pip" >&2
  "$VENV/bin/pip" install --quiet --upgrade pip
  # torch first, exactly pinned: the CPU wheel on disk; anything looser pulls CUDA builds.
  echo "setup 3/4: installing torch 2.13.0 (CPU wheel)" >&2
  "$VENV/bin/pip" install --progress-bar off "torch==2.13.0" 2>&1 | pip_progress
  echo "setup 4/4: installing fairfl and its pinned dependencies (flwr, ray, numba, pandas, ...)" >&2
  "$VENV/bin/pip" install --progress-bar off -e "$REPO[test]" 2>&1 | pip_progress
  echo "$want" > "$stamp"
  echo "setup done in $((SECONDS - started)) s" >&2
}

# pip's "Collecting X" / "Successfully installed" lines, one per package, to stderr; a failure's
# message is kept whole by pipefail (the install's own exit code decides).
pip_progress() { grep --line-buffered -E '^(Collecting|Successfully installed|ERROR)' | sed -u 's/^/  /' >&2 || true; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Long commands run in the background and are waited for: bash runs a trap only after a
# foreground command ends, but interrupts `wait` at once. CHILD is the one running now.
CHILD=""
run_bg() {
  "$@" &
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}

# Teardown (EXIT trap of `run`): the running CLI first (so it cannot start a SuperLink any
# more), then the local SuperLink it started and every process below it, by pid
# (fl_app/processes.py), then its FLWR_HOME. Signals during the teardown only set the exit code.
STOP_CODE=""
teardown() {
  local code=$?
  trap 'STOP_CODE=130' INT
  trap 'STOP_CODE=143' TERM
  if [[ -n "$CHILD" ]]; then
    kill -TERM "$CHILD" 2>/dev/null || true
    while kill -0 "$CHILD" 2>/dev/null; do wait "$CHILD" 2>/dev/null || true; done
  fi
  if [[ -n "${FLWR_HOME:-}" && -d "$FLWR_HOME" ]]; then
    "$PY" -m fl_app.processes stop --match "$FLWR_HOME/" --env "FLWR_HOME=$FLWR_HOME" || true
    rm -rf "$FLWR_HOME"
  fi
  exit "${STOP_CODE:-$code}"
}

on_signal() {
  STOP_CODE="$1"
  echo "run.sh: $2 received: stopping everything started (exit $1)" >&2
  exit "$1"
}

run_experiment() {
  local overrides=() fed_extra="" arg
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --run-config|-c) overrides+=(--run-config "$2"); shift 2 ;;
      --federation-config) fed_extra="$2"; shift 2 ;;
      *) echo "run.sh run: unknown argument '$1' (valid: --run-config '...', --federation-config '...')" >&2; exit 2 ;;
    esac
  done
  export FLWR_HOME; FLWR_HOME="$(mktemp -d /tmp/fairfl-flwr-XXXXXX)"
  trap teardown EXIT
  trap 'on_signal 130 SIGINT' INT
  trap 'on_signal 143 SIGTERM' TERM
  cd "$REPO"
  export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
  export FLWR_LOCAL_SUPERLINK_HTTP_API_PORT; FLWR_LOCAL_SUPERLINK_HTTP_API_PORT="$(free_port)"
  export FLWR_LOCAL_CONTROL_API_PORT; FLWR_LOCAL_CONTROL_API_PORT="$(free_port)"
  export FAIRFL_GIT_COMMIT; FAIRFL_GIT_COMMIT="$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unavailable)"
  export PATH="$VENV/bin:$PATH"
  # The SuperLink `flwr run` would start (same flags as flwr 1.42's cli/local_superlink.py), and
  # the app files it packages (fl_app/app_copy.py), get ready while the pre-flight check runs.
  local link_dir="$FLWR_HOME/local-superlink" link_pid copy_pid
  mkdir -p "$link_dir"
  setsid flower-superlink --insecure --simulation --isolation subprocess \
    --control-api-address "127.0.0.1:$FLWR_LOCAL_CONTROL_API_PORT" --host 127.0.0.1 \
    --port "$FLWR_LOCAL_SUPERLINK_HTTP_API_PORT" --log-file "$link_dir/superlink.log" \
    --log-rotation-interval-hours 24 --log-rotation-backup-count 7 --database "$link_dir/state.db" \
    </dev/null >/dev/null 2>&1 &
  link_pid=$!
  "$PY" -m fl_app.app_copy "$FLWR_HOME/app" >/dev/null &
  copy_pid=$!
  local plan_file="$FLWR_HOME/plan.json"
  run_bg "$PY" -m fl_app.check "${overrides[@]}" > "$plan_file" || exit 2
  wait "$copy_pid" || { echo "run.sh: could not copy the app's files into $FLWR_HOME/app" >&2; exit 1; }
  run_bg "$PY" -m fl_app.local_link wait "$FLWR_LOCAL_SUPERLINK_HTTP_API_PORT" "$link_pid" \
    --log "$link_dir/superlink.log" || exit 1
  local n results pinned data replicates
  n="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["num_clients"])' "$plan_file")"
  data="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"])' "$plan_file")"
  replicates="$("$PY" -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["replicates"]))' "$plan_file")"
  results="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["results_dir"])' "$plan_file")"
  pinned="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["overrides"])' "$plan_file")"

  local cpus="${FAIRFL_ACTOR_CPUS:-1}"
  echo "flwr run: $n SuperNodes, data $data, results in ${results:-$replicates}" >&2
  echo "  (Flower then warns that its default changed from 10 SuperNodes to 2: not this run's size, set above)" >&2
  local out_file="$FLWR_HOME/run.json" run_id
  run_bg flwr run "$FLWR_HOME/app" --format json "${overrides[@]}" --run-config "$pinned" \
        --federation-config "num-supernodes=$n client-resources-num-cpus=$cpus $fed_extra" > "$out_file" || true
  run_id="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["run-id"])' "$out_file" 2>/dev/null)" || {
    echo "flwr run did not start: $(cat "$out_file")" >&2; exit 1; }
  run_bg flwr log "$run_id" --stream || true
  local status
  run_bg "$PY" -m fl_app.run_status "$run_id" > "$FLWR_HOME/status" || true
  status="$(cat "$FLWR_HOME/status")"
  echo "run $run_id: $status" >&2
  [[ "$status" == "finished:completed" ]] || { echo "the run did not complete; see the log above" >&2; exit 1; }
  if [[ -z "$results" ]]; then echo "results: $replicates"; return 0; fi  # replicates: each its own directory
  if [[ "${FAIRFL_NO_REPORT:-}" != 1 ]]; then
    (cd "$REPO" && "$PY" -m analysis.report "$results" --out "$results/report" >/dev/null) \
      && echo "report: $results/report/report.md" >&2 || echo "the report could not be written (the results are complete)" >&2
  fi
  echo "results: $results"
}

# The study's hyperparameters per strategy come from the strategy registry (docs/strategies.md),
# with the fairness weight for the strategies that take one; the user's --run-config comes after.
study_settings() {
  (cd "$REPO" && "$PY" -m fl_app.study_settings "$1" --lambda "$2")
}

compare_strategies() {
  local overrides=() strategies="fedavg perfedavg ifca fair-ifca" lambda="1.0"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --run-config|-c) overrides+=(--run-config "$2"); shift 2 ;;
      --strategies) strategies="$2"; shift 2 ;;
      --lambda) lambda="$2"; shift 2 ;;
      *) echo "run.sh compare: unknown argument '$1' (valid: --run-config '...', --strategies 'fedavg ifca ...', --lambda X)" >&2; exit 2 ;;
    esac
  done
  [[ " $strategies " == *" fedavg "* ]] || { echo "run.sh compare: --strategies must include fedavg, the baseline" >&2; exit 2; }
  local base="$REPO/results/$(date -u +%Y%m%d-%H%M%S)-compare" dirs=() s
  for s in $strategies; do
    local settings; settings="$(study_settings "$s" "$lambda")" || exit 2
    ( FAIRFL_NO_REPORT=1 run_experiment --run-config "strategy=\"$s\" $settings" "${overrides[@]}" \
        --run-config "results-dir=\"$base/$s\"" ) || exit 1
    dirs+=("$base/$s")
  done
  "$PY" -m analysis.compare "${dirs[@]}" --out "$base/comparison.csv" | tee "$base/comparison.md"
  (cd "$REPO" && "$PY" -m analysis.report "${dirs[@]}" --out "$base/report" >/dev/null)
  echo "report: $base/report/report.md" >&2
}

trap 'exit 130' INT  # before `run` sets its own: e.g. during setup
trap 'exit 143' TERM
cmd="${1:-help}"; shift || true
case "$cmd" in
  setup) setup ;;
  clean-cache) setup; cd "$REPO"; exec "$PY" -m fl_app.clean_cache ;;
  test)
    setup; cd "$REPO"
    if [[ "${1:-}" == "--fast" ]]; then shift; exec "$PY" -m pytest -m "not live" "$@"; fi
    exec "$PY" -m pytest "$@" ;;
  lint) setup; cd "$REPO"; exec "$VENV/bin/ruff" check . ;;
  # The user's directory stays the working one, with the repository importable from anywhere.
  py) setup; PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" "$@" ;;
  run) setup; run_experiment "$@" ;;
  deploy) setup; exec "$PY" -m fl_app.deploy "$@" ;;
  compare) setup; compare_strategies "$@" ;;
  # The user's directory stays the working one, so --out and --grid resolve where they were typed.
  study) setup; PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m analysis.study "$@" ;;
  *) echo "usage: ./run.sh setup | clean-cache | test [--fast] [pytest args] | lint | py [python args] | run [--run-config '<k>=<v> ...'] [--federation-config '...'] | deploy [--run-config '...'] | compare [--run-config '...'] [--strategies '...'] [--lambda X] | study [--strategies '...'] [--seeds ...] [--lambdas ...] [--run-config '...'] [--grid FILE] --out DIR" >&2; exit 2 ;;
esac

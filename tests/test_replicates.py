"""Replicates: many (strategy, settings, seed) in one federation, one message per client per
exchange. A replicate's files are byte-identical to the same run alone, whichever replicates
share its federation; every strategy is covered."""

import json

import pytest

from core.settings import ConfigError
from strategies.flower import NAMES as FLOWER_NAMES
from strategies.registry import STRATEGIES
from tests.conftest import InProcessGrid, run_in_process, run_replicates_in_process

COMMON = {"states": "AL,CA,WY", "data-source": "synthetic", "synthetic-rows": 600, "num-server-rounds": 3,
          "local-epochs": 1, "lr": 0.3, "batch-size": 16}
OWN = {  # each strategy's keys for a short, meaningful run
    "ifca": {"k": 2, "warmup-rounds": 1}, "fair-ifca": {"k": 2, "lambda": 1.0},
    "flhc": {"k": 2, "warmup-rounds": 1}, "fair-flhc": {"k": 2, "warmup-rounds": 1, "lambda": 1.0},
    "perfedavg": {"meta-lr": 1.0}, "flwr:FedProx": {"proximal-mu": 0.5}, "flwr:FedTrimmedAvg": {"trim-beta": 0.1},
}
TABLES = [  # one per registered and built-in strategy, with seeds, rounds and faults of their own
    *({"strategy": name, "seed": i % 3, **OWN.get(name, {})} for i, name in enumerate([*STRATEGIES, *FLOWER_NAMES])),
    {"strategy": "fedavg", "seed": 1, "num-server-rounds": 2, "train-rows": 200, "test-rows": 200, "val-rows": 100},
    {"strategy": "fedavg", "seed": 0, "fail-states": "CA", "fail-mode": "train-error"},
    {"strategy": "ifca", "seed": 2, "k": 2, "fail-states": "WY", "fail-mode": "nan-update", "min-clients": 2},
]
FILES = ("metrics.csv", "counts.csv", "clusters.csv", "val_metrics.csv", "val_counts.csv", "summary.json")


def slug(table: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in table.items()).replace(":", "_").replace("/", "_")


class Counting(InProcessGrid):
    """Counts the messages each node receives."""

    messages: list = []

    def send_and_receive(self, messages, *, timeout=None):
        Counting.messages += list(messages)
        return super().send_and_receive(messages, timeout=timeout)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    base = tmp_path_factory.mktemp("replicates")
    tables = [{**t, "results-dir": str(base / "together" / slug(t))} for t in TABLES]
    (base / "replicates.json").write_text(json.dumps(tables))
    Counting.messages = []
    dirs = run_replicates_in_process({**COMMON, "replicates": str(base / "replicates.json")}, base, Counting)
    return base, dirs, list(Counting.messages)


@pytest.mark.parametrize("table", TABLES, ids=slug)
def test_a_replicates_files_equal_its_run_alone(bundle, table, tmp_path):
    base, dirs, _ = bundle
    together = base / "together" / slug(table)
    assert together in dirs
    alone = run_in_process({**COMMON, **table}, tmp_path / "alone")
    written = sorted(f for f in FILES if (alone / f).exists())
    assert sorted(f for f in FILES if (together / f).exists()) == written and "metrics.csv" in written
    for name in written:
        assert (together / name).read_bytes() == (alone / name).read_bytes(), name
    before = json.loads((alone / "config.json").read_text())["config"]
    after = json.loads((together / "config.json").read_text())["config"]
    after["results-dir"] = before["results-dir"]
    assert after == before


STOP = {"num-server-rounds": 12, "lr": 1.0, "train-rows": 200, "test-rows": 200, "val-rows": 100}
STOPPING = [  # replicates that plateau (stop-patience) at different rounds, and one that reaches its ceiling
    {"strategy": "fedavg", "seed": 0, **STOP, "stop-patience": 1},
    {"strategy": "fedavg", "seed": 1, **STOP, "stop-patience": 3},
    {"strategy": "ifca", "seed": 2, "k": 2, **STOP, "stop-patience": 2},
    {"strategy": "fedavg", "seed": 1, **STOP, "stop-patience": 2, "eval-every": 2},
    {"strategy": "fedavg", "seed": 0, **STOP, "lr": 0.3, "stop-patience": 3},
]


@pytest.fixture(scope="module")
def stopping(tmp_path_factory):
    base = tmp_path_factory.mktemp("stopping")
    tables = [{**t, "results-dir": str(base / "together" / slug(t))} for t in STOPPING]
    (base / "replicates.json").write_text(json.dumps(tables))
    run_replicates_in_process({**COMMON, "replicates": str(base / "replicates.json")}, base)
    return base


def test_replicates_stop_at_their_own_rounds(stopping):
    stops = [json.loads((stopping / "together" / slug(t) / "summary.json").read_text())["stopped"] for t in STOPPING]
    assert [(s["round"], s["reason"]) for s in stops] == [
        (6, "plateau"), (10, "plateau"), (6, "plateau"), (6, "plateau"), (12, "ceiling")]


@pytest.mark.parametrize("table", STOPPING, ids=slug)
def test_a_replicate_that_stops_early_writes_what_it_writes_alone(stopping, table, tmp_path):
    together = stopping / "together" / slug(table)
    alone = run_in_process({**COMMON, **table}, tmp_path / "alone")
    written = sorted(f for f in FILES if (alone / f).exists())
    assert sorted(f for f in FILES if (together / f).exists()) == written and "val_metrics.csv" in written
    for name in written:
        assert (together / name).read_bytes() == (alone / name).read_bytes(), name


def test_each_client_gets_one_message_per_exchange_for_all_replicates(bundle):
    _, dirs, messages = bundle
    per_node = {}
    for message in messages:
        per_node.setdefault(message.metadata.dst_node_id, []).append(message)
    # one exchange per round (evaluating the last round's models, training this one's; the longest
    # replicate has 3 rounds; round 1's also asks each node which client it serves, for every
    # replicate), and the evaluate-only exchange that closes the run
    assert sorted(len(m) for m in per_node.values()) == [4, 4, 4]
    first = json.loads(json.dumps(list(messages[1].content["config"]["replicate-types"])))
    trains = [t for t in first if t != "query.identify"]
    assert first.count("query.identify") == len(TABLES)
    assert len(trains) == len(TABLES) - 1 and all(t.startswith("train") for t in trains)  # centralized sends none


def test_a_replicate_table_may_not_set_what_the_federation_shares(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps([{"results-dir": str(tmp_path / "a"), "states": "AL"}]))
    with pytest.raises(ConfigError, match="replicate 0 of .* sets states, which every replicate of a federation"):
        run_replicates_in_process({**COMMON, "replicates": str(tmp_path / "r.json")}, tmp_path)
    (tmp_path / "r.json").write_text(json.dumps([{"results-dir": "relative"}]))
    with pytest.raises(ConfigError, match="must give an absolute 'results-dir'"):
        run_replicates_in_process({**COMMON, "replicates": str(tmp_path / "r.json")}, tmp_path)
    assert not (tmp_path / "a").exists()

"""Identify folded into the first message a new node receives, on the in-process federation:
round 1 costs one exchange, a restarted node is asked in its round's message when every client
without a node gets the same payload, and in an identify exchange of its own when not; the
results files and config.json's client sizes are what they were with a separate identify."""

import json

import pandas as pd
from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.proto.node_pb2 import NodeInfo

from core.wire import IDENTIFY, ROUND_KEY
from tests.conftest import InProcessGrid, run_in_process

STATES = ("AL", "CA", "WY")
BASE = {"states": ",".join(STATES), "data-source": "synthetic", "synthetic-rows": 600, "num-server-rounds": 3,
        "local-epochs": 1, "lr": 0.3, "batch-size": 16, "train-rows": 200, "test-rows": 100, "val-rows": 50}
FILES = ("metrics.csv", "counts.csv", "val_metrics.csv", "val_counts.csv", "summary.json")
SIZES = {"AL": {"train": 181, "test": 90, "val": 45}, "CA": {"train": 160, "test": 80, "val": 40},
         "WY": {"train": 172, "test": 86, "val": 43}}  # synthetic-rows 600 per state, capped by the *-rows keys
NEW = 2000  # a restarted node's id: NEW + its partition-id


class Exchanges(InProcessGrid):
    """Records every exchange as (destination node, message type, part types) per message. From
    round `restart_round` on, the nodes of partitions `restarted` serve under new ids."""

    made: list["Exchanges"] = []
    restart_round: int | None = None
    restarted: tuple[int, ...] = ()

    def __init__(self, run_config: dict, num_nodes: int) -> None:
        super().__init__(run_config, num_nodes)
        for i in self.restarted:
            self.contexts[NEW + i] = Context(run_id=1, node_id=NEW + i, node_config=self.contexts[1000 + i].node_config,
                                             state=RecordDict(), run_config=run_config)
        self.last_round = 0
        self.exchanges: list[list[tuple[int, str, list[str]]]] = []
        Exchanges.made.append(self)

    def live(self) -> list[int]:
        moved = self.restart_round is not None and self.last_round + 1 >= self.restart_round
        return [NEW + i if moved and i in self.restarted else 1000 + i for i in range(len(STATES))]

    def get_node_ids(self):
        return self.live()

    def get_nodes(self):
        return [NodeInfo(node_id=n, last_activated_at="") for n in self.live()]

    def send_and_receive(self, messages, *, timeout=None):
        self.exchanges.append([(m.metadata.dst_node_id, m.metadata.message_type,
                                list(m.content["config"]["replicate-types"])) for m in messages])
        for m in messages:
            if m.metadata.message_type != IDENTIFY:
                self.last_round = max(self.last_round, int(m.content["config"][ROUND_KEY]))
        return [self.deliver(m) for m in messages]


def recorded(settings: dict, results, grid: type[Exchanges] = Exchanges) -> Exchanges:
    run_in_process(settings, results, grid)
    return Exchanges.made.pop()


def client_sizes(results) -> dict:
    return json.loads((results / "config.json").read_text())["data"]["client_sizes"]


def test_round_one_is_one_exchange_whose_messages_also_ask_which_client_a_node_serves(tmp_path):
    grid = recorded({**BASE, "strategy": "fedavg"}, tmp_path / "r")
    assert len(grid.exchanges) == 3 + 1  # one per round and the closing evaluation; no identify exchange
    assert [types for _, _, types in grid.exchanges[0]] == [[IDENTIFY, "train"]] * 3
    assert [message_type for _, message_type, _ in grid.exchanges[0]] == ["train"] * 3
    assert all(IDENTIFY not in types for exchange in grid.exchanges[1:] for _, _, types in exchange)
    assert sorted(node for node, _, _ in grid.exchanges[0]) == [1000, 1001, 1002]


def test_client_sizes_are_those_a_separate_identify_exchange_records(tmp_path):
    folded = recorded({**BASE, "strategy": "fedavg"}, tmp_path / "folded")
    separate = recorded({**BASE, "strategy": "centralized"}, tmp_path / "separate")  # round 1 sends no payload
    assert [m for m, _, _ in folded.exchanges[0]] != [] and IDENTIFY not in {t for _, t, _ in folded.exchanges[0]}
    assert {t for _, t, _ in separate.exchanges[0]} == {IDENTIFY}
    assert client_sizes(tmp_path / "folded") == client_sizes(tmp_path / "separate") == SIZES


class TwoRestartInRound3(Exchanges):
    restart_round, restarted = 3, (1, 2)


def test_restarted_nodes_sent_the_same_payload_are_asked_in_their_rounds_message(tmp_path):
    grid = recorded({**BASE, "strategy": "fedavg"}, tmp_path / "restarted", TwoRestartInRound3)
    run_in_process({**BASE, "strategy": "fedavg"}, tmp_path / "plain")
    assert len(grid.exchanges) == 4
    round3 = {node: types for node, _, types in grid.exchanges[2]}
    assert round3 == {1000: ["evaluate", "train"], NEW + 1: [IDENTIFY, "evaluate", "train"],
                      NEW + 2: [IDENTIFY, "evaluate", "train"]}
    for name in FILES:
        assert (tmp_path / "restarted" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes(), name


def test_restarted_nodes_whose_clients_get_different_payloads_are_identified_first(tmp_path):
    """Local's clients train their own models, so which client a new node serves decides what it is sent."""
    grid = recorded({**BASE, "strategy": "local"}, tmp_path / "restarted", TwoRestartInRound3)
    run_in_process({**BASE, "strategy": "local"}, tmp_path / "plain")
    assert len(grid.exchanges) == 5
    assert [types for _, _, types in grid.exchanges[0]] == [[IDENTIFY, "train"]] * 3  # round 1: one payload for all
    assert grid.exchanges[2] == [(NEW + 1, IDENTIFY, [IDENTIFY]), (NEW + 2, IDENTIFY, [IDENTIFY])]
    assert sorted(node for node, _, _ in grid.exchanges[3]) == [1000, NEW + 1, NEW + 2]
    for name in FILES:
        assert (tmp_path / "restarted" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes(), name


class WYFailsItsFirstMessage(Exchanges):
    def deliver(self, message):
        if message.metadata.dst_node_id == 1002 and IDENTIFY in message.content["config"]["replicate-types"] \
                and len(self.exchanges) == 1:
            return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="node unavailable"), reply_to=message)
        return super().deliver(message)


def test_a_folded_node_that_fails_fails_its_client_and_is_asked_again_next_round(tmp_path):
    results = tmp_path / "r"
    grid = recorded({**BASE, "strategy": "fedavg"}, results, WYFailsItsFirstMessage)
    frame = pd.read_csv(results / "metrics.csv")
    failed = frame[(frame["state"] == "ALL") & (frame["metric"] == "failed_clients")]
    assert dict(zip(failed["round"], failed["value"])) == {1: 1.0, 2: 0.0, 3: 0.0}
    assert [types for node, _, types in grid.exchanges[1] if node == 1002] == [[IDENTIFY, "evaluate", "train"]]
    assert client_sizes(results) == {s: SIZES[s] for s in ("AL", "CA")}  # WY's first answer never came

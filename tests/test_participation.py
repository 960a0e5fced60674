"""Who takes part in a round, in process: quorum, lost and rejoining nodes, refused identities, timeouts.

Each grid here is the in-process federation of conftest with one thing changed (a node that
vanishes, comes back under a new id, claims another client, or never answers); the ServerApp
logic and the ClientApp handlers are the real ones. The same behaviours on Flower's deployment
engine are tested in tests/test_deployment_faults.py.
"""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from flwr.app import Context, Error, Message, MetricRecord, RecordDict
from flwr.common.config import get_fused_config_from_dir
from flwr.common.constant import ErrorCode
from flwr.proto.node_pb2 import NodeInfo

from core.wire import CLIENT_KEY, IDENTIFY, ROUND_KEY
from fl_app.client_app import app as client_app
from fl_app.config import ConfigError, RunConfig
from fl_app.setup import QuorumError, build_run
from recorder.checkpoint import load_checkpoint
from tests.conftest import REPO, InProcessGrid, run_in_process

STATES = ["AL", "CA", "WY"]
BASE = {"states": ",".join(STATES), "data-source": "synthetic", "synthetic-rows": 600, "num-server-rounds": 4,
        "local-epochs": 1, "lr": 0.3, "batch-size": 16}
IFCA = {**BASE, "strategy": "ifca", "synthetic-reversed": "WY", "lr": 0.1}
AL, CA, WY = 1000, 1001, 1002  # in-process node ids of the clients (partition-ids 0, 1, 2)
NEW_CA = 2001


def metrics(results) -> pd.DataFrame:
    return pd.read_csv(results / "metrics.csv", keep_default_na=False)


def health(results, metric: str) -> dict[int, float]:
    """round -> the ALL row of one failure count (rounds without the row are absent)."""
    frame = metrics(results)
    rows = frame[(frame["state"] == "ALL") & (frame["metric"] == metric)]
    return {int(r): float(v) for r, v in zip(rows["round"], rows["value"])}


def states_in(results, server_round: int) -> list[str]:
    """The clients with evaluation rows in a round."""
    frame = metrics(results)
    rows = frame[(frame["round"] == server_round) & (frame["metric"] == "accuracy")]
    return sorted(s for s in set(rows["state"]) if s in STATES)


def raw_config(settings: dict, results) -> dict:
    return get_fused_config_from_dir(REPO, {**settings, "results-dir": str(results)})


class ScriptedGrid(InProcessGrid):
    """The in-process grid with a script. `nodes()` says, before each round, which node ids are
    live (`last_round` is the latest round a train or evaluate message carried); NEW_CA runs CA's client; `answer`
    may drop or change a reply. Every exchange's timeout and every message are recorded."""

    def __init__(self, run_config: dict, num_nodes: int) -> None:
        super().__init__(run_config, num_nodes)
        self.last_round = 0
        self.timeouts: list[float | None] = []
        self.sent: list[Message] = []

    def nodes(self) -> set[int]:
        return set(self.contexts)

    def activated(self, node: int) -> str:
        return ""

    def get_node_ids(self):
        return list(self.nodes())

    def get_nodes(self):
        return [NodeInfo(node_id=n, last_activated_at=self.activated(n)) for n in self.nodes()]

    def send_and_receive(self, messages, *, timeout=None):
        self.timeouts.append(timeout)
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = f"m{len(self.sent)}"  # as Flower's push gives one
            self.sent.append(message)
            if message.metadata.message_type != IDENTIFY:
                self.last_round = max(self.last_round, int(message.content["config"][ROUND_KEY]))
            reply = self.answer(message)
            if reply is not None:
                replies.append(reply)
        return replies

    def answer(self, message: Message) -> Message | None:
        node = message.metadata.dst_node_id
        context = self.contexts[CA if node == NEW_CA else node]
        try:
            reply = client_app(message, context)
        except Exception as ex:  # as Flower's runtime: an error reply
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=str(ex)), reply_to=message)
        return reply

    def with_node_config(self, node: int, **config) -> None:
        old = self.contexts[node]
        self.contexts[node] = Context(run_id=1, node_id=node, node_config=config, state=RecordDict(),
                                      run_config=old.run_config)


# --- min-clients and max-failed-rounds ------------------------------------------------------------

class LosesCA(ScriptedGrid):
    """CA's node is gone from round 2 on; with `back_in`, from that round on it is live again."""

    back_in: int | None = None

    def nodes(self):
        upcoming = self.last_round + 1
        gone = upcoming >= 2 and (self.back_in is None or upcoming < self.back_in)
        return {n for n in self.contexts if not (gone and n == CA)}


class LosesCAForTwoRounds(LosesCA):
    back_in = 4


def test_min_clients_below_one_is_a_fraction_of_the_clients_rounded_up():
    assert [RunConfig(min_clients=0.5).min_updates(n) for n in (1, 2, 3, 51)] == [1, 1, 2, 26]
    assert RunConfig(min_clients=3.0).min_updates(51) == 3


def test_min_clients_above_the_federation_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match=r"'min-clients' \(4\) asks for more clients than the run has \(3\)"):
        build_run(raw_config({**BASE, "min-clients": 4}, tmp_path / "r"), datetime.now(UTC), tmp_path)
    assert not (tmp_path / "r").exists()


def stopped_state(settings: dict, results, max_failed: int):
    """The checkpoint a LosesCA run with min-clients 3 leaves when it stops after `max_failed` rounds."""
    with pytest.raises(QuorumError):
        run_in_process({**settings, "min-clients": 3, "max-failed-rounds": max_failed}, results, grid_class=LosesCA)
    return load_checkpoint(results)


@pytest.mark.parametrize("strategy", ["fedavg", "ifca", "perfedavg", "local", "ditto", "flwr:FedAvg", "flwr:FedAvgM"])
def test_a_round_below_min_clients_applies_no_aggregate_whatever_the_strategy(strategy, tmp_path):
    settings = {**BASE, "strategy": strategy}
    after_2 = stopped_state(settings, tmp_path / "two", max_failed=1)  # round 2: 2 usable updates < 3
    after_3 = stopped_state(settings, tmp_path / "three", max_failed=2)  # round 3 as well
    assert (after_2.server_round, after_3.server_round) == (2, 3)
    assert list(after_2.arrays) == list(after_3.arrays)
    for key, value in after_2.arrays.items():
        np.testing.assert_array_equal(value, after_3.arrays[key], err_msg=key)
    without_summary = [{k: v for k, v in c.strategy_state.items() if k != "summary_row"} for c in (after_2, after_3)]
    assert without_summary[0] == without_summary[1]


def test_a_round_below_min_clients_says_how_many_updates_it_had(tmp_path, caplog):
    with pytest.raises(QuorumError):
        run_in_process({**BASE, "min-clients": 3, "max-failed-rounds": 1}, tmp_path / "r", grid_class=LosesCA)
    line = next(line for line in caplog.text.splitlines() if "round   2/4 |" in line)
    assert "| failed 1 rejected 0 eval-failed 1 | 2 usable update(s) < min-clients 3: previous model kept |" in line


def test_max_failed_rounds_in_a_row_stop_the_run_naming_the_missing_clients(tmp_path):
    results = tmp_path / "r"
    with pytest.raises(QuorumError, match=r"2 round\(s\) in a row \(max-failed-rounds 2\) .* in round 3 2 of 3 "
                                          r"clients gave one, missing: CA\. The run stops; its checkpoint after round 3"):
        run_in_process({**BASE, "num-server-rounds": 5, "min-clients": 3, "max-failed-rounds": 2}, results,
                       grid_class=LosesCAForTwoRounds)
    assert load_checkpoint(results).server_round == 3 and not (results / "summary.json").exists()
    assert health(results, "failed_clients") == {1: 0.0, 2: 1.0, 3: 1.0}


def test_a_run_stopped_for_quorum_resumes_to_the_results_of_one_that_went_on(tmp_path):
    settings = {**BASE, "num-server-rounds": 5, "min-clients": 3}
    stopped, went_on = tmp_path / "stopped", tmp_path / "went-on"
    with pytest.raises(QuorumError):
        run_in_process({**settings, "max-failed-rounds": 2}, stopped, grid_class=LosesCAForTwoRounds)
    run_in_process({**settings, "max-failed-rounds": 2, "resume": str(stopped)}, stopped,
                   grid_class=LosesCAForTwoRounds)
    run_in_process({**settings, "max-failed-rounds": 3}, went_on, grid_class=LosesCAForTwoRounds)
    for name in ("metrics.csv", "counts.csv"):
        assert (stopped / name).read_text() == (went_on / name).read_text(), name
    assert (stopped / "summary.json").exists() and states_in(stopped, 5) == STATES


def test_a_run_where_every_client_always_fails_stops_after_max_failed_rounds(tmp_path):
    with pytest.raises(QuorumError, match="in round 3 0 of 3 clients gave one, missing: AL, CA, WY"):
        run_in_process({**BASE, "num-server-rounds": 6, "fail-states": "AL,CA,WY"}, tmp_path / "r")
    assert load_checkpoint(tmp_path / "r").server_round == 3


# --- lost and rejoining nodes ---------------------------------------------------------------------

class CARestartsWithNewId(ScriptedGrid):
    """From round 2 CA's client is served by a new node id (a restarted SuperNode without keys)."""

    def nodes(self):
        return {AL, CA, WY} if self.last_round < 1 else {AL, NEW_CA, WY}


class CARestartsWhileOldIdLingers(ScriptedGrid):
    """Round 2: the dead CA node is still listed (its messages fail, as Flower's NODE_UNAVAILABLE)
    and the restarted one is live too; from round 3 only the new one is listed."""

    def nodes(self):
        upcoming = self.last_round + 1
        return {AL, CA, WY} if upcoming < 2 else {AL, CA, NEW_CA, WY} if upcoming == 2 else {AL, NEW_CA, WY}

    def answer(self, message):
        if message.metadata.dst_node_id == CA and self.last_round >= 2:
            return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="node unavailable"), reply_to=message)
        return super().answer(message)


def test_a_client_whose_node_comes_back_under_a_new_id_keeps_its_state(tmp_path):
    plain = run_in_process(IFCA, tmp_path / "plain")
    rejoined = run_in_process(IFCA, tmp_path / "rejoined", grid_class=CARestartsWithNewId)
    for name in ("metrics.csv", "counts.csv", "clusters.csv"):
        assert (rejoined / name).read_text() == (plain / name).read_text(), name


def test_a_second_node_claiming_a_live_nodes_client_is_refused_until_that_node_vanishes(tmp_path, caplog):
    results = run_in_process(IFCA, tmp_path / "r", grid_class=CARestartsWhileOldIdLingers)
    assert f"nodes {CA} and {NEW_CA} both claim client CA; the newer node {NEW_CA} is refused" in caplog.text
    assert health(results, "refused_nodes") == {2: 1.0}
    assert health(results, "failed_clients") == {1: 0.0, 2: 1.0, 3: 0.0, 4: 0.0}
    # round 1's evaluation went with round 2's message, which CA's dead node did not answer; round
    # 2's went with round 3's, which its new node did
    assert [states_in(results, r) for r in (1, 2, 3, 4)] == [["AL", "WY"], STATES, STATES, STATES]
    clusters = pd.read_csv(results / "clusters.csv")
    assert sorted(clusters[clusters["state"] == "CA"]["round"]) == [1, 3, 4]


def test_later_rounds_go_on_with_fewer_nodes(tmp_path):
    """Round 1's evaluation travels with round 2's training (one exchange per round), so CA, gone
    from round 2 on, misses it too."""
    results = run_in_process(BASE, tmp_path / "r", grid_class=LosesCA)
    assert [states_in(results, r) for r in (1, 2, 3, 4)] == [["AL", "WY"]] * 4
    assert health(results, "failed_clients") == {1: 0.0, 2: 1.0, 3: 1.0, 4: 1.0}
    assert health(results, "failed_evaluations") == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    assert (results / "summary.json").exists()


# --- who a node claims to be ----------------------------------------------------------------------

class TwoNodesClaimCA(ScriptedGrid):
    """WY's node runs CA's client instead (node-config state CA) and registered earlier than CA's."""

    def __init__(self, run_config, num_nodes):
        super().__init__(run_config, num_nodes)
        for node, state in ((AL, "AL"), (CA, "CA"), (WY, "CA")):
            self.with_node_config(node, state=state)

    def activated(self, node):
        return {AL: "2026-01-01T00:00:01", WY: "2026-01-01T00:00:02", CA: "2026-01-01T00:00:03"}[node]


def test_of_two_live_nodes_claiming_one_client_the_newer_is_refused(tmp_path, caplog):
    results = run_in_process(BASE, tmp_path / "r", grid_class=TwoNodesClaimCA)
    assert f"nodes {WY} and {CA} both claim client CA; the newer node {CA} is refused" in caplog.text
    assert health(results, "refused_nodes") == {r: 1.0 for r in (1, 2, 3, 4)}
    assert health(results, "failed_clients") == {r: 1.0 for r in (1, 2, 3, 4)}  # WY has no node
    assert states_in(results, 4) == ["AL", "CA"]


def test_a_node_claiming_another_state_than_its_binding_is_refused(tmp_path, caplog):
    """The impostor (bound to WY, claiming CA) registered first; the binding decides, not the order."""
    bindings = f"{AL}=AL,{CA}=CA,{WY}=WY"
    results = run_in_process({**BASE, "node-states": bindings}, tmp_path / "r", grid_class=TwoNodesClaimCA)
    assert f"node {WY} claims state CA (client CA) but node-states binds it to state WY; refused" in caplog.text
    assert "both claim" not in caplog.text
    assert health(results, "refused_nodes") == {r: 1.0 for r in (1, 2, 3, 4)}
    assert states_in(results, 4) == ["AL", "CA"]


def test_with_node_states_a_node_bound_to_no_state_is_refused(tmp_path, caplog):
    results = run_in_process({**BASE, "node-states": f"{AL}=AL,{CA}=CA"}, tmp_path / "r", grid_class=ScriptedGrid)
    assert f"node {WY} claims state WY (client WY) but node-states binds no state to it; refused" in caplog.text
    assert states_in(results, 1) == ["AL", "CA"]


def test_node_states_naming_a_state_outside_the_run_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"'node-states' binds nodes to state\(s\) TX outside the run's states"):
        build_run(raw_config({**BASE, "node-states": "7=TX"}, tmp_path / "r"), datetime.now(UTC), tmp_path)


def test_node_states_parse_into_bindings():
    assert RunConfig(node_states=" 123456=ca, 789=WY ").bindings() == {123456: "CA", 789: "WY"}


def asks_identify(message: Message) -> bool:
    return IDENTIFY in message.content["config"]["replicate-types"]


class WYSignsAsAL(ScriptedGrid):
    """WY's node answers truthfully while it is asked which client it serves (in its first
    message), then names AL's client in its training replies."""

    def lies(self, message: Message) -> bool:
        return (message.metadata.dst_node_id == WY and message.metadata.message_type.startswith("train")
                and not asks_identify(message))

    def answer(self, message):
        reply = super().answer(message)
        if self.lies(message):
            metrics = dict(reply.content["metrics"])
            reply.content["metrics"] = MetricRecord({**metrics, CLIENT_KEY: 0})
        return reply


class WYFailsWhereItWouldLie(WYSignsAsAL):
    def answer(self, message):
        if self.lies(message):
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="failed"), reply_to=message)
        return super().answer(message)


def test_a_reply_naming_another_client_than_its_node_serves_is_not_used(tmp_path, caplog):
    results = run_in_process({**BASE, "num-server-rounds": 3}, tmp_path / "r", grid_class=WYSignsAsAL)
    honest = run_in_process({**BASE, "num-server-rounds": 3}, tmp_path / "honest", grid_class=WYFailsWhereItWouldLie)
    assert f"node {WY} serves client WY but its reply names another client; the reply is not used" in caplog.text
    assert health(results, "refused_nodes") == {2: 1.0, 3: 1.0}
    assert health(results, "failed_clients") == {1: 0.0, 2: 1.0, 3: 1.0}
    rows = [metrics(r).query("state in ['AL', 'CA']").reset_index(drop=True) for r in (results, honest)]
    pd.testing.assert_frame_equal(rows[0], rows[1])  # as if WY had failed: its update was not averaged


# --- round-timeout --------------------------------------------------------------------------------

class WYSilentInRound2(ScriptedGrid):
    """WY's node never answers its round-2 training message (a hung client past round-timeout)."""

    def answer(self, message):
        if message.metadata.dst_node_id == WY and message.metadata.message_type.startswith("train") \
                and int(message.content["config"][ROUND_KEY]) == 2:
            return None
        return super().answer(message)


class WYExpiredInRound2(WYSilentInRound2):
    """The same, as the deployment engine's SuperLink reports it when pulled just past the TTL."""

    def answer(self, message):
        reply = super().answer(message)
        if reply is None:
            return Message(Error(code=ErrorCode.MESSAGE_UNAVAILABLE, reason="expired"), reply_to=message)
        return reply


def test_round_timeout_bounds_every_exchange_and_expires_its_messages(tmp_path):
    grids = []

    class Recorded(ScriptedGrid):
        def __init__(self, run_config, num_nodes):
            super().__init__(run_config, num_nodes)
            grids.append(self)

    run_in_process({**BASE, "num-server-rounds": 1, "round-timeout": 7.5}, tmp_path / "r", grid_class=Recorded)
    assert set(grids[0].timeouts) == {7.5} and {m.metadata.ttl for m in grids[0].sent} == {7.5}


@pytest.mark.parametrize("silence", [WYSilentInRound2, WYExpiredInRound2], ids=["no reply", "expired reply"])
def test_a_node_that_timed_out_is_sent_nothing_more_that_round_and_asked_again_the_next(silence, tmp_path):
    grids = []

    class Recorded(silence):
        def __init__(self, run_config, num_nodes):
            super().__init__(run_config, num_nodes)
            grids.append(self)

    results = run_in_process({**BASE, "num-server-rounds": 3}, tmp_path / "r", grid_class=Recorded)
    to_wy = [(int(m.content["config"][ROUND_KEY]), m.metadata.message_type) for m in grids[0].sent
             if m.metadata.dst_node_id == WY and m.metadata.message_type != IDENTIFY]
    # one exchange per round: round r's message also evaluates round r-1's model, and an
    # evaluate-only one closes the run; WY's silent round-2 message held round 1's evaluation
    assert to_wy == [(1, "train"), (2, "train.replicates"), (3, "train.replicates"), (3, "evaluate")]
    assert health(results, "failed_clients") == {1: 0.0, 2: 1.0, 3: 0.0}
    assert health(results, "failed_evaluations") == {1: 1.0, 2: 0.0, 3: 0.0}

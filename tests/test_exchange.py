"""What crosses the wire: one message per client per round (evaluating the last round's model, then
training), `eval-every`, and a ClientApp that keeps its `Context.state` empty, because Flower's
simulation pickles the whole Context to and from a Ray actor with every message."""

import pandas as pd

from tests.conftest import InProcessGrid, run_in_process

SETTINGS = {"states": "AL,CA,WY", "data-source": "synthetic", "synthetic-rows": 300, "num-server-rounds": 2,
            "local-epochs": 1, "lr": 0.3, "batch-size": 16}


class KeptGrid(InProcessGrid):
    """The in-process grid, kept after the run so its nodes' contexts can be read."""

    made: list["KeptGrid"] = []

    def __init__(self, run_config: dict, num_nodes: int) -> None:
        super().__init__(run_config, num_nodes)
        KeptGrid.made.append(self)


def test_no_strategy_leaves_anything_in_a_clients_context_state(tmp_path):
    for strategy in ("fedavg", "ditto", "perfedavg", "local"):
        run_in_process({**SETTINGS, "strategy": strategy}, tmp_path / strategy, KeptGrid)
        states = [len(c.state.keys()) for c in KeptGrid.made.pop().contexts.values()]
        assert states == [0, 0, 0], strategy


class CountingGrid(InProcessGrid):
    """Keeps the message type of every part of every message, and counts the messages."""

    parts: list[str] = []
    messages = 0

    def send_and_receive(self, messages, *, timeout=None):
        for message in messages:
            CountingGrid.parts += list(message.content["config"]["replicate-types"])
            CountingGrid.messages += 1
        return super().send_and_receive(messages, timeout=timeout)


def test_one_message_per_round_evaluates_the_last_rounds_model_then_trains(tmp_path):
    CountingGrid.parts, CountingGrid.messages = [], 0
    run_in_process({**SETTINGS, "strategy": "fedavg", "num-server-rounds": 3}, tmp_path / "r", CountingGrid)
    assert CountingGrid.parts.count("train") == 3 * 3 and CountingGrid.parts.count("evaluate") == 3 * 3
    # per client: one per round (round 1's also asks which client the node serves), one closing
    assert CountingGrid.messages == 3 * (3 + 1) and CountingGrid.parts.count("query.identify") == 3


def test_eval_every_evaluates_those_rounds_and_the_last_with_the_same_rows(tmp_path):
    every = pd.read_csv(run_in_process({**SETTINGS, "strategy": "ifca", "k": 2, "num-server-rounds": 5},
                                       tmp_path / "every") / "metrics.csv")
    CountingGrid.parts = []
    sparse = pd.read_csv(run_in_process({**SETTINGS, "strategy": "ifca", "k": 2, "num-server-rounds": 5,
                                         "eval-every": 2}, tmp_path / "sparse", CountingGrid) / "metrics.csv")
    assert CountingGrid.parts.count("evaluate") == 3 * 3
    evaluated = sparse[sparse["metric"] == "accuracy"]["round"].unique().tolist()
    assert evaluated == [2, 4, 5]
    pd.testing.assert_frame_equal(sparse.reset_index(drop=True),
                                  every[every["round"].isin(evaluated) | (every["state"] == "ALL") & every["metric"].isin(
                                      ["failed_clients", "rejected_updates", "failed_evaluations"])].reset_index(drop=True))

"""What crosses the wire per message: the ClientApp keeps its `Context.state` empty, because
Flower's simulation pickles the whole Context to and from a Ray actor with every message."""

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

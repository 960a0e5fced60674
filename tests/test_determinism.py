"""Same seed and config, same results: whatever the number of Ray actors or the order replies arrive in."""

import numpy as np
import pytest
from flwr.app import Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from core.params import init_params, to_record
from core.rounds import RoundHealth
from core.wire import CLIENT_KEY
from strategies.replies import usable_updates
from tests.conftest import REAL_RUN_CONFIG, InProcessGrid, run_in_process, run_sh

IFCA = {"strategy": "ifca", "states": "AL,CA,OH,TX,VT,WA", "synthetic-reversed": "TX,VT,WA", "data-source": "synthetic",
        "synthetic-rows": 1500, "num-server-rounds": 3, "local-epochs": 1, "lr": 0.3, "warmup-rounds": 1,
        "fail-prob": 0.2}
FEDAVG = {"states": "AL,CA,WY", "data-source": "synthetic", "synthetic-rows": 1500, "num-server-rounds": 3,
          "local-epochs": 2, "lr": 0.3, "batch-size": 16, "fail-prob": 0.2}


class ReversedGrid(InProcessGrid):
    """Replies arrive in the reverse of the order the messages were sent."""

    def send_and_receive(self, messages, *, timeout=None):
        return super().send_and_receive(messages, timeout=timeout)[::-1]


SHAPES = {k: v.shape for k, v in init_params(6, 4, 0).items()}


def update_reply(state_index: int) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # as InProcessGrid sets them
    params = {k: np.full(shape, state_index, np.float32) for k, shape in SHAPES.items()}
    metrics = MetricRecord({CLIENT_KEY: state_index, "num-examples": 10})
    return Message(RecordDict({"arrays": to_record(params), "metrics": metrics}), dst_node_id=1, message_type="train")


def test_updates_are_aggregated_in_state_order_whatever_the_arrival_order():
    updates = usable_updates([update_reply(i) for i in (2, 0, 1)], SHAPES, ("AL", "CA", "WY"), RoundHealth())
    assert [u.client_index for u in updates] == [0, 1, 2]
    assert [float(u.params["fc2.bias"][0]) for u in updates] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("settings", [FEDAVG, IFCA], ids=["fedavg", "ifca"])
def test_reply_order_does_not_change_the_results(settings, tmp_path):
    in_order = run_in_process(settings, tmp_path / "in-order")
    reversed_ = run_in_process(settings, tmp_path / "reversed", ReversedGrid)
    names = sorted(p.name for p in in_order.glob("*.csv"))
    assert names == sorted(p.name for p in reversed_.glob("*.csv"))
    for name in names:
        assert (in_order / name).read_text() == (reversed_ / name).read_text(), name


def test_one_and_two_ray_actors_write_the_same_metrics(tmp_path, real_fedavg_run):
    one_actor = tmp_path / "one-actor"
    proc = run_sh("run", "--run-config", f'{REAL_RUN_CONFIG} results-dir="{one_actor}"', env={"FAIRFL_ACTOR_CPUS": "2"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("metrics.csv", "counts.csv"):
        assert (one_actor / name).read_text() == (real_fedavg_run / name).read_text(), name

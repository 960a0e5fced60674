"""The polling grid: replies gathered over several pulls, and only those in time."""

import itertools

from flwr.app import Message, RecordDict
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

from strategies.polling import REPLY_POLL_S, PollingGrid, receive


class TrickleGrid:
    """Replies to the pushed messages one per pull, in reverse order."""

    def __init__(self) -> None:
        self.ids = itertools.count()
        self.waiting: list[Message] = []
        self.pulls = 0

    def push_messages(self, messages):
        pushed = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = f"m{next(self.ids)}"
            self.waiting.append(message)
            pushed.append(message.metadata.message_id)
        return pushed

    def pull_messages(self, message_ids):
        self.pulls += 1
        ready = [m for m in self.waiting if m.metadata.message_id in set(message_ids)]
        if not ready:
            return []
        self.waiting.remove(ready[-1])
        return [Message(RecordDict(), reply_to=ready[-1])]


def messages(n: int) -> list[Message]:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # as a ServerApp process has them
    return [Message(RecordDict(), dst_node_id=node, message_type="train") for node in range(1, n + 1)]


def test_every_reply_is_gathered_across_pulls():
    grid, sent = TrickleGrid(), messages(3)
    replies = receive(grid, sent, timeout=60, poll_s=0.001)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert grid.pulls == 3


def test_the_deadline_returns_the_replies_that_came():
    grid = TrickleGrid()
    replies = receive(grid, messages(3), timeout=0, poll_s=0.001)
    assert [r.metadata.reply_to_message_id for r in replies] == ["m2"] and grid.pulls == 1


def test_the_wrapper_delegates_everything_but_the_wait():
    inner = TrickleGrid()
    grid = PollingGrid(inner, poll_s=0.001)
    assert len(list(grid.send_and_receive(messages(2), timeout=60))) == 2
    assert grid.pull_messages(["m0"]) == [] and inner.pulls == 3


def test_the_simulation_grid_is_polled_every_10_ms_or_less_and_the_deployment_grid_every_0_1_s():
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    assert PollingGrid.around(InMemoryGrid(state_factory=factory)).poll_s <= 0.01
    assert PollingGrid.around(TrickleGrid()).poll_s == REPLY_POLL_S == 0.1

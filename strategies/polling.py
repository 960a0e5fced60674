"""A grid that looks for replies every 5 ms in simulation and every 0.1 s on the deployment engine.

Flower 1.42's grids sleep between pulls in `send_and_receive`: 3 s on the deployment engine, 0.1 s
in simulation (`InMemoryGrid`'s fixed `pull_interval`). So every exchange ended up to that long
after its last reply arrived, a large share of a short round. This wrapper pushes and pulls
through the grid's own `push_messages`/`pull_messages` at its own interval; everything else is
the wrapped grid's. In simulation a pull is a look into the SuperLink's in-memory state, so 5 ms
costs little; on the deployment engine every pull is an RPC, and 0.1 s keeps the SuperLink idle.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.superlink.grid import InMemoryGrid

REPLY_POLL_S = 0.1  # deployment engine: each pull is an RPC to the SuperLink
SIMULATION_POLL_S = 0.005  # simulation: each pull reads the in-memory link state


def receive(grid: Grid, messages: Iterable[Message], timeout: float | None, poll_s: float = REPLY_POLL_S) -> list[Message]:
    """Push `messages`, then pull every `poll_s` until all have replied or `timeout` seconds passed
    (None: no limit); the replies that came."""
    pending = set(grid.push_messages(messages))
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    while pending:
        pulled = list(grid.pull_messages(pending))
        replies.extend(pulled)
        pending -= {m.metadata.reply_to_message_id for m in pulled}
        if not pending or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(poll_s)
    return replies


class PollingGrid(Grid):
    """`grid`, with `send_and_receive` polling every `poll_s` seconds."""

    def __init__(self, grid: Grid, poll_s: float = REPLY_POLL_S) -> None:
        self.grid = grid
        self.poll_s = poll_s

    @classmethod
    def around(cls, grid: Grid) -> PollingGrid:
        """`grid` wrapped with the interval its engine suits."""
        return cls(grid, SIMULATION_POLL_S if isinstance(grid, InMemoryGrid) else REPLY_POLL_S)

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(self, *args, **kwargs) -> Message:
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return receive(self.grid, messages, timeout, self.poll_s)

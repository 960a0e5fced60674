"""A grid that looks for replies every 0.1 s.

Flower 1.42's deployment-engine grid sleeps 3 s between pulls in `send_and_receive`, so every
exchange (identify, train, evaluate) ends up to 3 s after its last reply arrived: on a loopback
federation that was a large share of a round. This wrapper pushes and pulls through the grid's
own `push_messages`/`pull_messages`, with the 0.1 s interval Flower's simulation grid uses;
everything else is the wrapped grid's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.supercore.run import Run
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.serverapp import Grid

REPLY_POLL_S = 0.1


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

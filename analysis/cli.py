"""The analysis commands' argument parser: errors as one line, so scripts and tests can read them."""

from __future__ import annotations

import argparse


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line on stderr and exits 2, without usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")

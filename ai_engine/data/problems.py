"""Collecting every problem in a data set before reporting, so that one run
of the scan tells the user everything to fix rather than one file at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ai_engine.data.records import DataError

SHOWN_PROBLEMS = 12
SHOWN_NAMES = 5


def some(names: list[str], limit: int = SHOWN_NAMES) -> str:
    """A few names, and how many more there are."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class Problems:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """Records a DataError raised inside the block and carries on."""
        try:
            yield
        except DataError as error:
            self.add(str(error))

    def raise_if_any(self) -> None:
        if not self.messages:
            return
        if len(self.messages) == 1:
            raise DataError(f"{self.messages[0]} (data set {self.root})")
        listed = "\n".join(f"  - {message}" for message in self.messages[:SHOWN_PROBLEMS])
        more = len(self.messages) - SHOWN_PROBLEMS
        tail = f"\n  … and {more} more" if more > 0 else ""
        raise DataError(f"{len(self.messages)} problems in data set {self.root}:\n{listed}{tail}")

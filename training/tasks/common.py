"""What every task reader shares: one error type and the record of examples that could not be used."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path


class DataError(ValueError):
    """The input file cannot be used; the message names the file and the line or example id."""


@dataclass
class Problems:
    """Examples a reader skipped, each with 'FILE:LINE: why'. Never drop an example without one."""

    path: str
    messages: list[str] = field(default_factory=list)

    def add(self, where: str | int, why: str) -> None:
        self.messages.append(f"{self.path}:{where}: {why}")

    def __len__(self) -> int:
        return len(self.messages)

    def report(self, used: int, stream=sys.stderr, show: int = 10) -> None:
        if not self.messages:
            return
        print(f"skipped {len(self.messages)} of {used + len(self.messages)} examples in {self.path}:", file=stream)
        for message in self.messages[:show]:
            print(f"  {message}", file=stream)
        if len(self.messages) > show:
            print(f"  ... and {len(self.messages) - show} more", file=stream)

    def raise_if(self, strict: bool) -> None:
        if strict and self.messages:
            more = f" (and {len(self.messages) - 1} more)" if len(self.messages) > 1 else ""
            raise DataError(self.messages[0] + more)


def check_readable(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a data file")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    return path

"""What every task reader shares: one error type and the record of examples that could not be used."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from core.inference.readers import DataError, check_readable

__all__ = ["DataError", "Problems", "check_readable"]  # the readers' own, re-exported for training's callers


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

"""Build an argparse parser from a settings dataclass, so the CLI and the code say the same thing.

Each field's help comes from `field(metadata={"help": ...})`; bools become `--flag/--no-flag`.
Every command parses through `parse`, so `dry_run()` can check a command line without running it
(tests/test_docs.py checks every `bert ...` line of the docs that way).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


class ParsedOnly(BaseException):
    """Raised by `parse` under `dry_run()` once argparse has accepted the command line.

    A BaseException, like SystemExit, so that no `except Exception` between `parse` and the caller
    turns it into an error message.
    """

    def __init__(self, prog: str, namespace: argparse.Namespace):
        super().__init__(prog)
        self.prog = prog
        self.namespace = namespace


_dry_run = False


@contextlib.contextmanager
def dry_run():
    """Within this block, every command stops with ParsedOnly right after parsing its arguments."""
    global _dry_run
    previous, _dry_run = _dry_run, True
    try:
        yield
    finally:
        _dry_run = previous


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`parser.parse_args(argv)`, the one place every command's arguments are parsed."""
    namespace = parser.parse_args(argv)
    if _dry_run:
        raise ParsedOnly(parser.prog, namespace)
    return namespace


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(element type, is_list) with Optional stripped."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple):
        return typing.get_args(tp)[0], True
    return tp, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, positional: tuple[str, ...] = ()) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli") is False:
            continue
        tp, is_list = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        choices = f.metadata.get("choices")
        if f.name in positional:
            parser.add_argument(f.name, type=tp, nargs="+" if is_list else None, help=help_text, choices=choices)
            continue
        flag = "--" + f.name.replace("_", "-")
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
            continue
        if default is not None and not is_list:
            help_text = f"{help_text} (default: {default})"
        parser.add_argument(
            flag,
            dest=f.name,
            type=tp,
            nargs="+" if is_list else None,
            default=default,
            required=required,
            choices=choices,
            help=help_text,
        )


def parse_dataclass(cls: type[T], argv: list[str], prog: str, description: str = "", positional=()) -> T:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_dataclass_arguments(parser, cls, positional)
    return cls(**vars(parse(parser, argv)))


def run_cli(fn, prog: str) -> int:
    """Run `fn()`; user errors (CliError, ValueError, FileNotFoundError) become one line and exit 2."""
    try:
        return int(fn() or 0)
    except (CliError, ValueError, FileNotFoundError, PermissionError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2


def run_single_subcommand(
    argv: list[str] | None, group: str, subcommand: str, settings_cls: type[T], run, usage: str, description: str
) -> int:
    """`bert GROUP SUBCOMMAND [options]` for groups that have one subcommand (tokenizer train, data pretraining)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    if argv[0] != subcommand:
        print(f"bert {group}: unknown subcommand {argv[0]!r}; the only one is `{subcommand}`", file=sys.stderr)
        return 2
    prog = f"bert {group} {subcommand}"
    settings = parse_dataclass(settings_cls, argv[1:], prog=prog, description=description)
    return run_cli(lambda: run(settings), prog)

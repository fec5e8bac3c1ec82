"""A small Dockerfile reader for the image checks: instructions, ARG/ENV values, COPY sources, commands.

It handles what our Dockerfiles use (line continuations, comments, `${VAR}` substitution, exec-form
JSON commands, COPY flags), not the whole Dockerfile grammar.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Copy:
    sources: list[str]
    dest: str
    flags: dict[str, str]


@dataclass
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, raw arguments)
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    copies: list[Copy] = field(default_factory=list)
    base_images: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    user: str | None = None
    workdir: str = "/"
    expose: list[int] = field(default_factory=list)

    @property
    def command(self) -> list[str]:
        """What `docker run IMAGE` executes: ENTRYPOINT followed by CMD."""
        return self.entrypoint + self.cmd


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") and not current:
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def substitute(value: str, variables: dict[str, str]) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        if name in variables:
            return variables[name]
        if m.group(2) is not None:
            return m.group(2)
        return m.group(0)  # unknown (e.g. $PATH of the base image): left as written

    return _VAR.sub(repl, value)


def _exec_form(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        return list(json.loads(value))
    return ["/bin/sh", "-c", value]


def _pairs(value: str) -> dict[str, str]:
    out = {}
    for token in shlex.split(value):
        key, sep, val = token.partition("=")
        if sep:
            out[key] = val
    return out


def parse(path: str | Path) -> Dockerfile:
    path = Path(path)
    df = Dockerfile(path)
    for line in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        df.instructions.append((keyword, rest))
        variables = {**df.args, **df.env}
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            df.args[name.strip()] = substitute(default.strip(), variables)
        elif keyword == "ENV":
            for key, val in _pairs(rest).items():
                df.env[key] = substitute(val, {**df.args, **df.env})
        elif keyword == "FROM":
            df.base_images.append(substitute(rest.split()[0], variables))
        elif keyword in ("COPY", "ADD"):
            tokens = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
            flags = {}
            while tokens and tokens[0].startswith("--"):
                key, _, val = tokens.pop(0)[2:].partition("=")
                flags[key] = val
            tokens = [substitute(t, variables) for t in tokens]
            df.copies.append(Copy(tokens[:-1], tokens[-1], flags))
        elif keyword == "ENTRYPOINT":
            df.entrypoint = _exec_form(rest)
            df.cmd = []  # an ENTRYPOINT resets an inherited CMD
        elif keyword == "CMD":
            df.cmd = _exec_form(rest)
        elif keyword == "HEALTHCHECK":
            tokens = rest.split()
            while tokens and tokens[0].startswith("--"):
                tokens.pop(0)
            if tokens and tokens[0].upper() == "CMD":
                df.healthcheck = _exec_form(rest[rest.upper().index("CMD") + 3 :])
        elif keyword == "USER":
            df.user = rest.strip()
        elif keyword == "WORKDIR":
            df.workdir = substitute(rest.strip(), variables)
        elif keyword == "EXPOSE":
            df.expose += [int(p.split("/")[0]) for p in rest.split()]
    return df


def assemble(df: Dockerfile, context: Path, root: Path) -> None:
    """Lay out the files the image's COPY instructions put in place, under `root` instead of `/`.

    Docker semantics: a directory source copies its contents into the destination; a file source
    goes to `dest/NAME` when the destination ends with `/` (or there are several sources).
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for copy in df.copies:
        if "from" in copy.flags:
            continue
        dest = root / copy.dest.lstrip("/")
        into_dir = copy.dest.endswith("/") or len(copy.sources) > 1
        for source in copy.sources:
            src = context / source
            if src.is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True, ignore=ignore)
            elif into_dir:
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / src.name)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)


def rebase(value: str, root: Path, prefixes: set[str]) -> str:
    """`/app/serve.sh` -> `ROOT/app/serve.sh` for paths under the image's own top-level directories."""
    for prefix in prefixes:
        if value == prefix or value.startswith(prefix + "/"):
            return str(root) + value
    return value

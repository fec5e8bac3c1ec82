"""The docs cannot drift from the CLI, and they say nothing of the machines bertkit is developed on.

Every `bert ...` line in the shell blocks of README.md and docs/*.md is parsed by the real command
under `core.args.dry_run()`: argparse checks the command, its flags and its required arguments, and
nothing runs. Values are not checked, so placeholders such as `DIR` or `$MINILM` are fine.
"""

from __future__ import annotations

import importlib
import io
import re
import shlex
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from cli.main import COMMANDS
from cli.main import main as bert
from core.args import ParsedOnly, dry_run

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "zsh"}  # a block without a language is checked too
# `python -m MODULE ...` / `torchrun ... -m MODULE ...` lines that are checked like `bert ...` ones
MODULES = {"cli.main", "training.datasets", *(module for module, _ in COMMANDS.values())}
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")"}
REDIRECTS = {">", ">>", "<", ">&", "&>"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# What the development machines leave behind. `/work/` after a `:` is a mount target inside the
# training image (its WORKDIR is /work), not a path of this machine.
DEV_MACHINE = re.compile(r"(?<!:)/work/|shared/data|bertkit-heavy\.lock|\bflock |shared with other jobs")
README_MAX_LINES = 300


# --- finding the command lines ---------------------------------------------------------------------


def _quotes_closed(line: str) -> bool:
    try:
        shlex.split(line, comments=True)
    except ValueError:  # "No closing quotation": the string goes on on the next line
        return False
    return True


def fenced_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, line number of the first line, lines) of every fenced code block."""
    block: tuple[str, int, list[str]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*(\S*)", line)
        if fence and block is None:
            block = (fence.group(1).lower(), number + 1, [])
        elif fence:
            yield block
            block = None
        elif block is not None:
            block[2].append(line)


def _logical_lines(lines: list[str], first: int) -> Iterator[tuple[int, str]]:
    """(line number, logical line) of a shell block's lines: `\\` continuations and open quotes joined."""
    pending, start = "", first
    for number, line in enumerate(lines, first):
        if not pending:
            start = number
            line = re.sub(r"^\s*\$ ", "", line)  # a console prompt
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        elif not _quotes_closed(pending + line):
            pending += line + "\n"
        else:
            yield start, pending + line
            pending = ""


def shell_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, logical line) of every fenced shell block."""
    for language, first, lines in fenced_blocks(text):
        if language in SHELL_LANGUAGES:
            yield from _logical_lines(lines, first)


def split_commands(line: str) -> Iterator[list[str]]:
    """The simple commands of one shell line, comments, redirections and separators removed."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    command: list[str] = []
    tokens = iter(lexer)
    for token in tokens:
        if token in SEPARATORS:
            if command:
                yield command
            command = []
        elif token in REDIRECTS:
            next(tokens, None)  # the file it redirects to
        else:
            command.append(token)
    if command:
        yield command


def cli_call(command: list[str]) -> tuple[str, list[str]] | None:
    """(module, argv) when the command runs bertkit's CLI: `bert ...`, `python -m cli.main ...`,
    `torchrun ... -m cli.main ...` or `python -m training.datasets ...`; None for any other command."""
    while command and ENV_ASSIGNMENT.match(command[0]):
        command = command[1:]
    if command and command[0] == "bert":
        return "cli.main", command[1:]
    for i, (flag, module) in enumerate(zip(command, command[1:])):
        if flag == "-m" and module in MODULES:
            return module, command[i + 2 :]
    return None


def doc_commands(text: str) -> Iterator[tuple[int, str, list[str]]]:
    for number, line in shell_lines(text):
        for command in split_commands(line):
            call = cli_call(command)
            if call:
                yield number, *call


def parse_error(module: str, argv: list[str]) -> str | None:
    """None when the command line parses, else what is wrong with it (argparse's own message)."""
    main = importlib.import_module(module).main
    err = io.StringIO()
    wants_help = bool({"-h", "--help", "help"} & set(argv))
    with dry_run(), redirect_stdout(io.StringIO()), redirect_stderr(err):
        try:
            status = main(argv)
        except ParsedOnly:
            return None
        except SystemExit as exit_:
            status = exit_.code
    if status == 0 and wants_help:
        return None
    message = err.getvalue().strip().splitlines()
    return f"exit {status}: {message[-1] if message else 'the command never parsed its arguments'}"


ALL_COMMANDS = [
    pytest.param(module, argv, id=f"{path.relative_to(ROOT)}:{number}")
    for path in DOCS
    for number, module, argv in doc_commands(path.read_text(encoding="utf-8"))
]


@pytest.mark.parametrize("module, argv", ALL_COMMANDS)
def test_doc_command_parses(module, argv):
    error = parse_error(module, argv)
    assert error is None, f"{module} {shlex.join(argv)}: {error}"


def test_every_command_is_documented_with_an_example():
    documented = {argv[0] for module, argv in (p.values for p in ALL_COMMANDS) if module == "cli.main" and argv}
    assert len(ALL_COMMANDS) >= 40, "the command extraction found suspiciously few command lines"
    assert set(COMMANDS) <= documented, f"no example of: {sorted(set(COMMANDS) - documented)}"


SELF_TEST = """\
```bash
BERTKIT_DATA=data bert export runs/sst2 --out bundles/sst2 \\
    --optimize   # a comment --not-a-flag
python -m cli.main serve --bundles DIR --port 8080 && bert predict models > models.txt
bert export runs/sst2 --out bundles/sst2 --made-up-flag
bert export runs/sst2
bert exprot runs/sst2 --out bundles/sst2
torchrun --nproc_per_node=2 -m cli.main pretrain --data d --out r --max-steps many
```

```text
bert verify: error: this is output, not a command
```
"""


def test_the_parse_check_catches_what_it_should():
    found = list(doc_commands(SELF_TEST))
    assert [(number, module, argv[:1]) for number, module, argv in found] == [
        (2, "cli.main", ["export"]),
        (4, "cli.main", ["serve"]),
        (4, "cli.main", ["predict"]),
        (5, "cli.main", ["export"]),
        (6, "cli.main", ["export"]),
        (7, "cli.main", ["exprot"]),
        (8, "cli.main", ["pretrain"]),
    ]
    errors = [parse_error(module, argv) for _, module, argv in found]
    assert errors[:3] == [None, None, None]  # env prefix, continuation, comment, python -m, &&, redirect
    assert "unrecognized arguments: --made-up-flag" in errors[3]
    assert "the following arguments are required: --out" in errors[4]
    assert "unknown command 'exprot'" in errors[5]
    assert "invalid int value: 'many'" in errors[6]


# --- the curl examples against the API's own schemas --------------------------------------------


def _api_examples(text: str) -> Iterator[tuple[int, str, str, str | None]]:
    """(line, route, request body, the JSON block right after it or None) of each `curl ... /v1/X -d`."""
    blocks = list(fenced_blocks(text))
    for i, (language, first, lines) in enumerate(blocks):
        if language not in SHELL_LANGUAGES:
            continue
        after = blocks[i + 1] if i + 1 < len(blocks) and blocks[i + 1][0] == "json" else None
        for number, line in _logical_lines(lines, first):
            for command in split_commands(line):
                routes = [m.group(0) for m in map(re.compile(r"/v1/[a-z-]+").search, command) if m]
                data = [j + 1 for j, token in enumerate(command[:-1]) if token in ("-d", "--data")]
                if command[0] == "curl" and routes and data:
                    response = "\n".join(after[2]) if after else None
                    yield number, routes[0], command[data[0]], response


def test_curl_examples_match_the_api():
    from pydantic import ValidationError

    from service import schemas

    models = {
        "/v1/classify": (schemas.ClassifyRequest, schemas.ClassifyResponse),
        "/v1/ner": (schemas.NerRequest, schemas.NerResponse),
        "/v1/qa": (schemas.QaRequest, schemas.QaResponse),
        "/v1/embed": (schemas.EmbedRequest, schemas.EmbedResponse),
        "/v1/fill-mask": (schemas.FillMaskRequest, schemas.FillMaskResponse),
        "/v1/tokenize": (schemas.TokenizeRequest, schemas.TokenizeResponse),
    }
    checked = 0
    for path in DOCS:
        for number, route, body, response in _api_examples(path.read_text(encoding="utf-8")):
            where = f"{path.relative_to(ROOT)}:{number} {route}"
            assert route in models, f"{where}: no such endpoint"
            request_model, response_model = models[route]
            try:
                request_model.model_validate_json(body)
                if response is not None:
                    response_model.model_validate_json(response)
            except ValidationError as err:
                pytest.fail(f"{where}: {err}")
            checked += 1
    assert checked >= 9, "the curl extraction found suspiciously few examples"


# --- nothing of the development machines ---------------------------------------------------------


def _help_invocations() -> list[list[str]]:
    from service.client_cli import COMMANDS as PREDICT

    subcommands = {"tokenizer": ["train"], "data": ["pretraining"], "predict": list(PREDICT)}
    calls = [["--help"]]
    for name in COMMANDS:
        calls.append([name, "--help"])
        calls += [[name, sub, "--help"] for sub in subcommands.get(name, [])]
    return calls


def _help_text(argv: list[str]) -> str:
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        try:
            bert(argv)
        except SystemExit:
            pass
    return out.getvalue()


def _dev_machine_lines(name: str, text: str) -> list[str]:
    return [f"{name}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if DEV_MACHINE.search(line)]


def test_docs_and_benchmark_notes_name_no_development_machine():
    """Docs, benchmark notes and recorded results, and the benchmark scripts that write those results."""
    benchmarks = ROOT / "benchmarks"
    files = [*DOCS, *sorted(benchmarks.glob("*.md")), *sorted((benchmarks / "results").glob("*.md"))]
    files += sorted(benchmarks.glob("*.py"))
    found = [hit for path in files for hit in _dev_machine_lines(str(path.relative_to(ROOT)), path.read_text())]
    assert not found, "development-machine paths or locks:\n" + "\n".join(found)


def test_help_texts_name_no_development_machine():
    found = []
    for argv in _help_invocations():
        text = _help_text(argv)
        assert "usage" in text.lower(), f"bert {' '.join(argv)} printed no usage"
        found += _dev_machine_lines("bert " + " ".join(argv), text)
    assert not found, "development-machine paths or locks in help texts:\n" + "\n".join(found)


def test_source_messages_name_no_development_machine():
    """Help texts and error messages are written in the package source; none may name these machines."""
    packages = ("cli", "core", "model", "service", "training")
    files = sorted(path for package in packages for path in (ROOT / package).rglob("*.py"))
    found = [hit for path in files for hit in _dev_machine_lines(str(path.relative_to(ROOT)), path.read_text())]
    assert not found, "development-machine paths or locks in the source:\n" + "\n".join(found)


@pytest.mark.parametrize("argv", [argv for argv in _help_invocations() if len(argv) > 1], ids=" ".join)
def test_help_description_is_one_paragraph(argv):
    """A command's help opens with one short paragraph; the module docstring's examples belong in docs/."""
    paragraphs = _help_text(argv).split("\n\n")
    description = paragraphs[1] if len(paragraphs) > 1 else ""
    if description.startswith(("positional arguments:", "options:")):
        return
    assert len(description.strip().splitlines()) <= 3, f"bert {' '.join(argv)} --help opens with:\n{description}"


def test_readme_is_a_landing_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move the detail to docs/"

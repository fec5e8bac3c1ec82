"""`bert predict classify|ner|qa|embed|models`: call a running service from the command line.

    bert predict classify "a gripping, beautifully shot film"
    bert predict ner "Angela Merkel met Emmanuel Macron in Paris." --url http://127.0.0.1:8000
    bert predict qa --question "Where is the tower?" --context "The Eiffel Tower is in Paris."
    bert predict classify --file reviews.txt --json       # one text per line; JSON lines out

Texts come from the arguments, from `--file` (one per line) or from stdin with `-`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import get_args

import httpx
from pydantic import BaseModel

from core.args import CliError, add_dataclass_arguments, parse, run_cli
from service.client import Client, ServiceError
from service.schemas import NerRequest


def _f(default, help: str, **meta):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class ConnectionOptions:
    url: str | None = _f(None, "service URL (default: $BERTKIT_URL or http://127.0.0.1:8000)")
    api_key: str | None = _f(None, "API key sent as `Authorization: Bearer` (default: $BERTKIT_API_KEY)")
    json: bool = _f(False, "print the raw results as JSON (one line per input)")
    timeout: float = _f(60.0, "seconds to wait for an answer")


@dataclass
class ModelOptions(ConnectionOptions):
    model: str | None = _f(None, "bundle name (see `bert predict models`); default: the first of the task")


@dataclass
class TextOptions:
    texts: list[str] = _f([], "texts to send; `-` reads stdin (one text per line)")
    file: str | None = _f(None, "file with one text per line")


@dataclass
class ClassifyOptions(TextOptions, ModelOptions):
    top_k: int | None = _f(None, "keep the k best labels per input")


# `ner --aggregation` takes its default and choices from POST /v1/ner's, so the two cannot drift apart.
_AGGREGATION = NerRequest.model_fields["aggregation_strategy"]


@dataclass
class NerOptions(TextOptions, ModelOptions):
    aggregation: str = _f(
        _AGGREGATION.default,
        "how tokens become entities, as the API's aggregation_strategy (simple: adjacent B-/I- tags grouped; "
        "first/average/max: whole words)",
        choices=get_args(_AGGREGATION.annotation),
    )


@dataclass
class QaOptions(ModelOptions):
    question: str | None = _f(None, "the question")
    context: str | None = _f(None, "the text that holds the answer")
    context_file: str | None = _f(None, "read the context from this file instead")
    top_k: int | None = _f(None, "answers to return, best first")


@dataclass
class EmbedOptions(TextOptions, ModelOptions):
    normalize: bool = _f(True, "scale each vector to unit length")


COMMANDS = {
    "classify": (ClassifyOptions, "class scores of each text"),
    "ner": (NerOptions, "named entities of each text, with character offsets"),
    "qa": (QaOptions, "the answer to a question, found in a context"),
    "embed": (EmbedOptions, "sentence embeddings of each text"),
    "models": (ConnectionOptions, "the bundles the service has loaded"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bert predict", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, (cls, help_text) in COMMANDS.items():
        positional = ("texts",) if issubclass(cls, TextOptions) else ()
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_dataclass_arguments(p, cls, positional)
        if positional:  # texts may come from --file or stdin instead
            for action in p._actions:
                if action.dest == "texts":
                    action.nargs = "*"
    return parser


def _texts(opts: TextOptions) -> list[str]:
    texts = list(opts.texts or [])
    if texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin]
    if opts.file:
        with open(opts.file, encoding="utf-8") as f:
            texts += [line.rstrip("\n") for line in f]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise CliError("no text given: pass texts as arguments, --file FILE, or - to read stdin")
    return texts


def _jsonable(value):
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _print_classify(texts, results, as_json: bool) -> None:
    for text, scores in zip(texts, results):
        if as_json:
            print(json.dumps({"text": text, "scores": _jsonable(scores)}, ensure_ascii=False))
        else:
            print("  ".join(f"{s.label} {s.score:.3f}" for s in scores) + f"\t{text}")


def _print_ner(texts, results, as_json: bool) -> None:
    for text, entities in zip(texts, results):
        if as_json:
            print(json.dumps({"text": text, "entities": _jsonable(entities)}, ensure_ascii=False))
            continue
        print(text)
        if not entities:
            print("  (no entities)")
        for e in entities:
            print(f"  {e.entity_group:<8} {e.word!r:<30} [{e.start}:{e.end}]  {e.score:.3f}")


def _run(command: str, opts) -> int:
    with Client(opts.url, api_key=opts.api_key, timeout=opts.timeout) as client:
        if command == "models":
            for m in client.models():
                if opts.json:
                    print(json.dumps(m.model_dump()))
                else:
                    flag = " (default)" if m.default else ""
                    print(f"{m.name}\t{m.task}\t{m.precision}\t{','.join(m.labels or [])}{flag}")
            return 0
        if command == "classify":
            texts = _texts(opts)
            _print_classify(texts, client.classify(texts, top_k=opts.top_k, model=opts.model), opts.json)
        elif command == "ner":
            texts = _texts(opts)
            entities = client.ner(texts, aggregation_strategy=opts.aggregation, model=opts.model)
            _print_ner(texts, entities, opts.json)
        elif command == "embed":
            texts = _texts(opts)
            result = client.embed(texts, normalize=opts.normalize, model=opts.model)
            for text, vector in zip(texts, result.embeddings):
                if opts.json:
                    print(json.dumps({"text": text, "embedding": vector}, ensure_ascii=False))
                else:
                    print(f"{text}\t[{', '.join(f'{x:.4f}' for x in vector[:4])}, ...] dim {result.dim}")
        elif command == "qa":
            context = opts.context
            if opts.context_file:
                with open(opts.context_file, encoding="utf-8") as f:
                    context = f.read()
            if not (opts.question or "").strip() or not (context or "").strip():
                raise CliError("qa needs --question and --context (or --context-file)")
            answer = client.qa(opts.question, context, top_k=opts.top_k, model=opts.model)
            answers = answer if isinstance(answer, list) else [answer]
            for a in answers:
                if opts.json:
                    print(json.dumps(a.model_dump(), ensure_ascii=False))
                else:
                    print(f"{a.answer}\t[{a.start}:{a.end}]  {a.score:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(_parser(), sys.argv[1:] if argv is None else argv)
    command = args.command
    values = {k: v for k, v in vars(args).items() if k != "command"}
    opts = COMMANDS[command][0](**values)

    def go() -> int:
        try:
            return _run(command, opts)
        except ServiceError as err:
            raise CliError(f"the service refused the request: {err.message} (HTTP {err.status})") from err
        except httpx.TransportError as err:
            url = opts.url or "http://127.0.0.1:8000 ($BERTKIT_URL)"
            raise CliError(f"cannot reach the service at {url} ({err}); is `bert serve` running?") from err

    return run_cli(go, "bert predict")

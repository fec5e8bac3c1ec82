"""Entry point of the `bert` console script: dispatches `bert COMMAND ...` to its module."""

from __future__ import annotations

import importlib
import sys

# command -> (module with `main(argv) -> int`, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "tokenizer": ("training.tokenizer_cli", "train a WordPiece vocabulary (bert tokenizer train ...)"),
    "data": ("training.pretraining_data_cli", "build pretraining instances (bert data pretraining ...)"),
    "pretrain": ("training.pretrain", "MLM + NSP pretraining, resumable, CPU/GPU/torchrun"),
    "plot": ("training.plot", "plot a run's loss and accuracy curves to PNG"),
    "finetune": ("training.finetune.cli", "fine-tune classify | ner | qa heads"),
    "distill": ("training.distill.cli", "distil a fine-tuned teacher into a smaller student (classify | ner | qa)"),
    "evaluate": ("training.evaluate", "evaluate a model directory or an ONNX bundle"),
    "export": ("training.export.cli", "export a model to an ONNX bundle (static int8, dynamic int8, fp32, fp16)"),
    "verify": ("service.verify", "check a bundle's checksums, graph, tokenizer and labels"),
    "serve": ("service.cli", "serve bundles over HTTP with dynamic batching"),
    "predict": ("cli.predict", "call a running service, or score a file offline with --bundle"),
    "demo": ("cli.demo", "build the default bundles if missing and serve them"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: bert COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Run `bert COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"bert: unknown command {name!r}; run `bert --help` for the list", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or "a module"
        print(f"bert {name}: {missing} is not installed ({err}); see docs/install.md", file=sys.stderr)
        return 2
    try:
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        print(f"bert {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

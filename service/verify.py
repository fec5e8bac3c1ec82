"""`bert verify BUNDLE_DIR`: is this bundle whole and usable? torch-free.

Checks, in order: bundle.json is valid and of a known format_version; every file matches its
sha256 (a tampered or truncated file is named); the graph loads with the available execution
providers; its inputs and outputs are what the task needs; the tokenizer agrees with the
manifest and the graph (special ids, vocabulary size); the labels match the graph's output
width; one example runs and gives finite outputs of the right shape. The checks are
core.bundle's, the ones the service runs at start-up.

    bert verify bundles/sst2
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from core.args import parse_dataclass, run_cli
from core.bundle import MANIFEST, check_bundle, load_bundle


@dataclass
class VerifySettings:
    bundle_dir: str = field(metadata={"help": f"bundle directory (model.onnx, tokenizer.json, {MANIFEST})"})
    providers: list[str] | None = field(
        default=None, metadata={"help": "execution providers to load the graph with (default: all available)"}
    )


def verify_bundle(path, providers: list[str] | None = None) -> list[str]:
    """Run every check; returns one line per passed check, raises BundleError at the first failure."""
    bundle = load_bundle(path, providers=providers)
    m = bundle.manifest
    return [
        f"manifest: format_version {m.format_version}, {m.task}, {m.precision}",
        f"checksums: {len(m.files)} files match ({', '.join(m.files)})",
        f"graph loads with {', '.join(bundle.providers)}",
        *check_bundle(bundle),
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "bert verify"

    def run() -> int:
        settings = parse_dataclass(VerifySettings, argv, prog, __doc__.split("\n\n")[0], positional=("bundle_dir",))
        for line in verify_bundle(settings.bundle_dir, settings.providers):
            print(f"ok  {line}")
        print(f"{settings.bundle_dir}: bundle is valid")
        return 0

    return run_cli(run, prog)

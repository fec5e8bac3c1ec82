"""`bert serve --bundles DIR [DIR...]` or `--model-store DIR`: serve bundles over HTTP with dynamic batching.

    bert serve --bundles bundles/sst2 bundles/conll --port 8000 --workers 1
    bert serve --model-store models --max-loaded-models 2 --model-store-poll-s 30

Every other setting comes from BERTKIT_* environment variables (see docs/serving.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from core.args import CliError, parse, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bert serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", nargs="+", metavar="DIR", help="bundle directories to serve, loaded at start")
    parser.add_argument(
        "--model-store",
        metavar="DIR",
        help="serve every model under DIR (DIR/NAME/VERSION/ or DIR/NAME/), each loaded on first use",
    )
    parser.add_argument(
        "--max-loaded-models", type=int, metavar="N", help="model-store models loaded at once; the least recently "
        "used is unloaded (default: no limit)",
    )  # fmt: skip
    parser.add_argument(
        "--max-loaded-model-bytes", type=int, metavar="BYTES", help="memory budget of the loaded model-store models, "
        "counted as their model.onnx sizes (default: no limit)",
    )  # fmt: skip
    parser.add_argument(
        "--model-store-poll-s", type=float, metavar="S", help="look for new versions every S seconds and swap them "
        "in (default: 0 = only on POST /v1/models/NAME/reload)",
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes, each loading every bundle (default: 1)"
    )
    parser.add_argument("--provider", choices=["auto", "cpu", "cuda"], help="execution provider (default: auto)")
    parser.add_argument("--max-batch-tokens", type=int, help="padded tokens per batch (BERTKIT_MAX_BATCH_TOKENS)")
    parser.add_argument("--max-batch-size", type=int, help="sequences per batch; 1 = no batching")
    parser.add_argument("--api-key", help="require Authorization: Bearer KEY on /v1/* (prefer BERTKIT_API_KEY)")
    return parser


def _preflight(bundles: list[str]) -> None:
    """Refuse bad bundle paths with one line before any worker starts."""
    from core.bundle import MANIFEST, is_bundle, read_manifest

    for path in bundles:
        directory = Path(path)
        if not directory.is_dir():
            raise CliError(f"bundle directory {path} does not exist")
        if is_bundle(directory):
            read_manifest(directory)
        elif not any(is_bundle(sub) for sub in directory.iterdir()):
            raise CliError(f"{path} is not a bundle (no {MANIFEST}) and holds no bundle sub-directories")


def _preflight_store(path: str) -> None:
    """Refuse a model store that cannot serve anything with one line before any worker starts."""
    from core.bundle import MANIFEST, is_bundle
    from service.store import ModelStore

    directory = Path(path)
    if not directory.is_dir():
        raise CliError(f"model store {path} {'is not a directory' if directory.exists() else 'does not exist'}")
    if is_bundle(directory):
        raise CliError(f"{path} is a bundle, not a model store: serve it with --bundles {path}, or move it to a store")
    models, problems = ModelStore(directory).scan()
    if not models:
        skipped = f" ({problems[0]})" if problems else ""
        raise CliError(
            f"model store {path} holds no models: put each at {path}/NAME/VERSION/ or {path}/NAME/, "
            f"with its {MANIFEST}{skipped}"
        )
    if all(v.manifest is None for versions in models.values() for v in versions):
        first = next(v for versions in models.values() for v in versions)
        raise CliError(f"model store {path}: no model can load; {first.label}: {first.problem}")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.config import ServiceSettings

    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    if not 0 < args.port < 65536:
        raise CliError(f"--port must be between 1 and 65535, got {args.port}")
    if not args.bundles and not args.model_store:
        raise CliError("nothing to serve: pass --bundles DIR [DIR ...] and/or --model-store DIR")
    # Settings travel through the environment so that every worker process reads the same ones.
    if args.bundles:
        _preflight(args.bundles)
        os.environ["BERTKIT_BUNDLES"] = ",".join(str(Path(p).resolve()) for p in args.bundles)
    if args.model_store:
        _preflight_store(args.model_store)
        os.environ["BERTKIT_MODEL_STORE"] = str(Path(args.model_store).resolve())
    overrides = {
        "BERTKIT_MAX_LOADED_MODELS": args.max_loaded_models,
        "BERTKIT_MAX_LOADED_MODEL_BYTES": args.max_loaded_model_bytes,
        "BERTKIT_MODEL_STORE_POLL_S": args.model_store_poll_s,
        "BERTKIT_PROVIDER": args.provider,
        "BERTKIT_MAX_BATCH_TOKENS": args.max_batch_tokens,
        "BERTKIT_MAX_BATCH_SIZE": args.max_batch_size,
        "BERTKIT_API_KEY": args.api_key,
    }
    for key, value in overrides.items():
        if value is not None:
            os.environ[key] = str(value)
    try:
        settings = ServiceSettings()
    except ValueError as err:
        lines = [line.strip() for line in str(err).splitlines()[1:3]]
        raise CliError(f"invalid BERTKIT_* setting: {' '.join(lines)}") from None
    uvicorn.run(
        "service.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,  # the service logs each request itself, with its request id
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        log_level=settings.log_level,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(build_parser(), argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_cli(lambda: _serve(args), "bert serve")

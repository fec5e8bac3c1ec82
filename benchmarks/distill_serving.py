"""Served speed of distilled students vs their teacher when the HTTP layer is not the bottleneck.

    python benchmarks/distill_serving.py          # after benchmarks/distill_quality.py (its bundles)

benchmarks/distill_quality.py serves each int8 bundle as a user first would: one `bert serve`
process, one input per request. There a 2-layer student that runs 3x the teacher's inputs per
second at batch 8 serves only about 1.5x its requests: the event loop's own cost per request
(parsing, validation, answer shaping, about 0.65 ms of one core) is the same for every model and
takes the larger share as the model gets smaller. This measures the same bundles two more ways,
each against the teacher in the same configuration: `bert serve --workers 2` (two processes, two
event loops), and 8 inputs per request (the per-request cost shared by 8). 64 keep-alive
connections of benchmarks/load.py, held-out inputs of the task, `--seconds` after a warm-up, one
bundle served at a time, everything in one run. Writes benchmarks/results/distill_serving.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_model, machine, markdown_table, write_results  # noqa: E402
from benchmarks.load import ENDPOINTS, measure, read_inputs, request_body, run_load  # noqa: E402
from benchmarks.overload import raise_open_files, serve_command  # noqa: E402
from tests.service.live_service import free_port, running  # noqa: E402

TASKS = {"sst2": ("classify", "heldout.tsv"), "conll2003": ("ner", "heldout.conll")}
MODELS = ("teacher", "kd-3l", "kd-2l")


def several(items: list, per_request: int, seed: int = 0):
    """A request body maker: the item drawn by the load generator plus `per_request - 1` others."""
    rng = random.Random(seed)

    def body(path: str, item, model: str | None) -> dict:
        return request_body(path, [item, *rng.sample(items, per_request - 1)], model)

    return body


def measure_bundle(bundle: Path, endpoint: str, items: list, workers: int, per_request: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        with running(serve_command(bundle, port, workers), Path(tmp) / "serve.log", port) as live:
            path = ENDPOINTS[endpoint]
            body = several(items, per_request) if per_request > 1 else request_body
            asyncio.run(
                run_load(live.url, path, items, concurrency=64, max_requests=10**9, max_seconds=5, body_fn=body)
            )
            summary, _ = measure(
                live.url, path, items, concurrency=64, max_requests=10**9, max_seconds=seconds, body_fn=body
            )
    summary["inputs_per_s"] = round(summary["throughput_rps"] * per_request, 1)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "runs" / "distill-bench"), help="distill_quality.py's --work")
    parser.add_argument("--tasks", nargs="+", default=["sst2"], choices=sorted(TASKS))
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    raise_open_files(4096)
    configurations = [(1, 1), (2, 1), (1, 8)]  # (server processes, inputs per request)
    results, text = {}, []
    for task in args.tasks:
        endpoint, heldout = TASKS[task]
        base = Path(args.work) / task
        bundles = {m: base / "bundles" / f"{task}-{m}" for m in MODELS}
        missing = [str(b) for b in bundles.values() if not (b / "bundle.json").is_file()]
        if missing:
            raise SystemExit(f"no bundle at {missing[0]}: run benchmarks/distill_quality.py first")
        items = read_inputs(base / "data" / heldout)
        rows = {}
        for workers, per_request in configurations:
            for model, bundle in bundles.items():
                summary = measure_bundle(bundle, endpoint, items, workers, per_request, args.seconds)
                rows[(model, workers, per_request)] = summary
                print(task, model, workers, per_request, summary["inputs_per_s"], summary["errors"], flush=True)
        table = []
        for workers, per_request in configurations:
            teacher = rows[("teacher", workers, per_request)]["inputs_per_s"]
            for model in MODELS:
                s = rows[(model, workers, per_request)]
                table.append(
                    [
                        model,
                        workers,
                        per_request,
                        f"{s['inputs_per_s']:,.0f}",
                        f"{s['inputs_per_s'] / teacher:.2f}x",
                        f"{s['p50_ms']} / {s['p99_ms']}",
                        ", ".join(f"{k}: {v}" for k, v in s["errors"].items()) or "none",
                    ]
                )
        results[task] = {f"{m} workers={w} inputs={p}": s for (m, w, p), s in rows.items()}
        header = ["bundle (int8)", "server processes", "inputs per request", "inputs/s", "vs teacher", "p50 / p99 ms"]
        text.append(f"## {task}\n\n" + markdown_table([*header, "errors"], table) + "\n")
    intro = (
        "# Distilled students served: one process, two processes, 8 inputs per request\n\n"
        f"`python benchmarks/distill_serving.py {' '.join(argv if argv is not None else sys.argv[1:])}`: the int8 "
        "bundles of benchmarks/distill_quality.py, 64 connections of benchmarks/load.py on the same "
        f"{machine()['cpu_count']} cores ({cpu_model()}), {args.seconds:.0f} s each after a 5 s warm-up.\n\n"
    )
    payload = {"machine": machine(), "cpu": cpu_model(), "seconds": args.seconds, "tasks": results}
    write_results("distill_serving", payload, intro + "".join(text))
    print(intro + "".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Overload: the demo's SST-2 bundle under 64, 256 and 1,024 connections, one server, one run.

    python benchmarks/overload.py          # bundles/minilm-sst2, runs/demo/sst2/data/heldout.tsv

`bert serve --bundles bundles/minilm-sst2` with its defaults (max_queue_ms 1000) on the same
machine as the generator (benchmarks/load.py's raw keep-alive client, one process; its CPU share
is reported). Each point is a closed loop of N connections sending one held-out sentence per
request for `--seconds`, after a short warm-up. Two kinds of client: `hammer` sends its next
request the moment a 429 arrives (what wrk does), `retry-after` waits the Retry-After seconds first
(what a load balancer or a well-behaved client does). For 1,024 connections the targets are: the
p99 of accepted requests within max_queue_ms plus one batch time, accepted throughput at least
90% of the 64-connection figure, every other answer a 429 with Retry-After, no 5xx.
Writes benchmarks/results/overload.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_flags, cpu_model, machine, markdown_table, write_results  # noqa: E402
from benchmarks.load import measure, read_inputs, run_load  # noqa: E402
from tests.service.live_service import free_port, running  # noqa: E402

MAX_QUEUE_MS = 1000.0  # the service's default


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def demo_bundle_and_data(bundle: str, data: str) -> tuple[Path, Path]:
    """The bundle and the SST-2 file to send, or exit with what to do."""
    bundle_dir, data_file = Path(bundle), Path(data)
    if not (bundle_dir / "bundle.json").is_file():
        raise SystemExit(f"no bundle at {bundle_dir}: run `bert demo --no-serve` first")
    if not data_file.is_file():
        raise SystemExit(f"no data at {data_file}: pass --data (an SST-2 .tsv)")
    return bundle_dir, data_file


def serve_command(bundle: Path, port: int, workers: int = 1) -> list[str]:
    cmd = [sys.executable, "-m", "cli.main", "serve", "--bundles", str(bundle), "--port", str(port)]
    return cmd + (["--workers", str(workers)] if workers > 1 else [])


def verdict(point: dict, base_rps: float) -> dict:
    """The 1,024-connection targets, each met or not, with the measured number."""
    bound = MAX_QUEUE_MS + (point.get("server_mean_batch_ms") or 0)
    errors = point["errors"]
    five_xx = sum(n for status, n in errors.items() if status.startswith("5"))
    others = {k: v for k, v in errors.items() if k != "429"}
    return {
        "p99_ms": point["p99_ms"],
        "p99_bound_ms": round(bound, 1),
        "p99_met": point["p99_ms"] is not None and point["p99_ms"] <= bound,
        "throughput_ratio": round(point["throughput_rps"] / base_rps, 3),
        "throughput_met": point["throughput_rps"] >= 0.9 * base_rps,
        "refusals_all_429_with_retry_after": not others and point["missing_retry_after"] == 0,
        "five_xx": five_xx,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ROOT / "bundles" / "minilm-sst2"))
    parser.add_argument("--data", default=str(ROOT / "runs" / "demo" / "sst2" / "data" / "heldout.tsv"))
    parser.add_argument("--connections", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--seconds", type=float, default=40.0, help="per point")
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1, help="bert serve --workers (processes)")
    parser.add_argument("--name", default="overload", help="results file name under benchmarks/results/")
    args = parser.parse_args(argv)
    bundle, data = demo_bundle_and_data(args.bundle, args.data)
    raise_open_files(2 * max(args.connections) + 256)
    items = read_inputs(data)
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        with running(serve_command(bundle, port, args.workers), Path(tmp) / "serve.log", port) as live:
            url, path = live.url, "/v1/classify"
            asyncio.run(run_load(url, path, items, concurrency=64, max_requests=10**9, max_seconds=args.warmup_seconds))
            for connections in args.connections:
                for client in ("hammer", "retry-after") if connections > 64 else ("hammer",):
                    summary, _ = measure(
                        url,
                        path,
                        items,
                        concurrency=connections,
                        max_requests=10**9,
                        max_seconds=args.seconds,
                        honor_retry_after=client == "retry-after",
                    )
                    summary.update(connections=connections, client=client)
                    points.append(summary)
                    print(json.dumps(summary), flush=True)
    base = next(p for p in points if p["connections"] == 64)["throughput_rps"]
    for point in points:
        point["vs_64"] = round(point["throughput_rps"] / base, 3)
        if point["connections"] >= 1024:
            point["targets"] = verdict(point, base)
    payload = {
        "machine": machine(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "bundle": str(bundle.name),
        "data": data.name,
        "seconds_per_point": args.seconds,
        "max_queue_ms": MAX_QUEUE_MS,
        "server_processes": args.workers,
        "points": points,
    }
    rows = []
    for p in points:
        others = {k: v for k, v in p["errors"].items() if k != "429"}
        rows.append(
            [
                p["connections"],
                p["client"],
                f"{p['throughput_rps']:.0f}",
                f"{p['vs_64']:.2f}",
                p["p50_ms"],
                p["p99_ms"],
                f"{p['refused_429_rps']:.0f}",
                p["missing_retry_after"],
                ", ".join(f"{k}: {v}" for k, v in others.items()) or "none",
                p.get("server_mean_batch_size"),
                p.get("server_mean_batch_ms"),
                f"{100 * p['client_cpu_share']:.0f}%",
            ]
        )
    header = [
        "connections",
        "client after a 429",
        "accepted/s",
        "vs 64",
        "p50 ms (accepted)",
        "p99 ms (accepted)",
        "429/s",
        "429 without Retry-After",
        "other statuses",
        "mean batch",
        "batch ms",
        "generator CPU (of one core)",
    ]
    table = (
        f"# Overload: {bundle.name}, {data.name}, {args.seconds:.0f} s per point, {args.workers} server process(es)\n\n"
        f"`python benchmarks/overload.py {' '.join(argv if argv is not None else sys.argv[1:])}`, one server "
        f"(`bert serve` defaults, max_queue_ms {MAX_QUEUE_MS:.0f}) "
        f"and benchmarks/load.py's raw client on the same {machine()['cpu_count']} cores ({cpu_model()}).\n\n"
        + markdown_table(header, rows)
    )
    for p in points:
        if "targets" in p:
            t = p["targets"]
            table += (
                f"\n{p['connections']} connections, {p['client']}: accepted p99 {t['p99_ms']} ms vs bound "
                f"{t['p99_bound_ms']} ms ({'met' if t['p99_met'] else 'not met'}); accepted throughput "
                f"{t['throughput_ratio']:.2f} of 64 connections ({'met' if t['throughput_met'] else 'not met'}); "
                f"refusals all 429 with Retry-After: {'yes' if t['refusals_all_429_with_retry_after'] else 'no'}; "
                f"5xx: {t['five_xx']}.\n"
            )
    json_path, md_path = write_results(args.name, payload, table)
    print(table)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

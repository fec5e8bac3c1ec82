"""Offline scoring throughput: `bert predict --bundle` over the SST-2 train sentences, against the service.

    python benchmarks/offline_scoring.py            # $BERTKIT_DATA/sst2/train.tsv, bundles/minilm-sst2

Offline: `bert predict --bundle BUNDLE --input $BERTKIT_DATA/sst2/train.tsv --output OUT` with its
defaults, run as a subprocess and timed wall-clock, start-up, bundle load and the counting pass for
the progress bar included. Served: the same sentences sent to `bert serve` (default settings) by a
client loop, `--connections` requests of `--per-request` sentences in flight, timed from the first
request to the last answer (server start-up not counted). The two answer sets are compared: labels
that differ and the largest score difference. Writes benchmarks/results/offline_scoring.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_flags, cpu_model, data_dir, machine, markdown_table, write_results  # noqa: E402
from core.inference.offline import read_inputs  # noqa: E402
from tests.service.live_service import serve_bundles  # noqa: E402


def offline(bundle: Path, data: Path, output: Path) -> tuple[float, list]:
    """(wall seconds of the command, its answers)."""
    cmd = [sys.executable, "-m", "cli.main", "predict", "--bundle", str(bundle), "--input", str(data)]
    start = time.perf_counter()
    proc = subprocess.run([*cmd, "--output", str(output)], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bert predict failed:\n{proc.stderr[-2000:]}")
    return seconds, [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]


def served(bundle: Path, texts: list[str], connections: int, per_request: int, log: Path) -> tuple[float, list]:
    """(seconds from the first request to the last answer, the answers in input order)."""
    chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    with serve_bundles([bundle], log) as url, httpx.Client(timeout=600) as client:

        def post(chunk: list[str]) -> list:
            response = client.post(f"{url}/v1/classify", json={"inputs": chunk})
            response.raise_for_status()
            return response.json()["results"]

        post(chunks[0])  # one untimed request: connections and first-call costs
        start = time.perf_counter()
        with ThreadPoolExecutor(connections) as pool:
            results = [answer for answers in pool.map(post, chunks) for answer in answers]
        return time.perf_counter() - start, results


def compare(ours: list, theirs: list) -> dict:
    flips = sum(a[0]["label"] != b[0]["label"] for a, b in zip(ours, theirs))
    moves = [abs(x["score"] - y["score"]) for a, b in zip(ours, theirs) for x, y in zip(a, b)]
    return {"label_differences": flips, "max_score_difference": max(moves)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="bundles/minilm-sst2", help="the SST-2 bundle of `bert demo`")
    parser.add_argument("--data-dir", help="datasets directory holding sst2/train.tsv (default: $BERTKIT_DATA)")
    parser.add_argument("--connections", type=int, default=8, help="served: requests in flight")
    parser.add_argument("--per-request", type=int, default=64, help="served: sentences per request")
    parser.add_argument("--no-served", dest="served", action="store_false", help="measure offline scoring only")
    args = parser.parse_args(argv)
    bundle = Path(args.bundle)
    if not (bundle / "bundle.json").is_file():
        raise SystemExit(f"no bundle at {bundle}: run `bert demo --no-serve` first")
    data = data_dir(args.data_dir) / "sst2" / "train.tsv"
    texts = [text for _, text in read_inputs(data, "sequence-classification")]
    manifest = json.loads((bundle / "bundle.json").read_text())

    with tempfile.TemporaryDirectory() as tmp:
        seconds, ours = offline(bundle, data, Path(tmp) / "scores.jsonl")
        rows = [["offline: bert predict --bundle (defaults)", f"{len(ours):,}", f"{seconds:.1f}", len(ours) / seconds]]
        result = {"sentences": len(texts), "offline": {"seconds": seconds, "per_second": len(ours) / seconds}}
        print(json.dumps(result), flush=True)
        if args.served:
            served_seconds, theirs = served(bundle, texts, args.connections, args.per_request, Path(tmp) / "log")
            result["served"] = {
                "seconds": served_seconds,
                "per_second": len(theirs) / served_seconds,
                "connections": args.connections,
                "per_request": args.per_request,
                **compare(ours, theirs),
            }
            name = f"served: bert serve, {args.connections} requests of {args.per_request} in flight"
            rows.append([name, f"{len(theirs):,}", f"{served_seconds:.1f}", len(theirs) / served_seconds])
            print(json.dumps(result["served"]), flush=True)

    command = "python benchmarks/offline_scoring.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result.update(
        command=command.strip(),
        bundle={"name": manifest["name"], "precision": manifest["precision"]},
        machine={**machine(), "cpu": cpu_model(), "cpu_flags": cpu_flags()},
    )
    table = [
        "# Offline scoring vs the service (SST-2 train sentences)\n\n",
        f"Command: `{result['command']}`\n\n",
        f"Bundle: {manifest['name']} ({manifest['precision']}); input: $BERTKIT_DATA/sst2/train.tsv, "
        f"{len(texts):,} sentences. CPU: {cpu_model()} ({', '.join(cpu_flags())}), {machine()['cpu_count']} cores.\n"
        "Offline: `bert predict --bundle BUNDLE --input train.tsv --output OUT`, wall clock of the whole command "
        "(start-up and counting pass included). Served: timed from the first request to the last answer.\n\n",
        markdown_table(
            ["how", "sentences", "seconds", "sentences/s"], [[r[0], r[1], r[2], f"{r[3]:,.0f}"] for r in rows]
        ),
    ]
    if "served" in result:
        s = result["served"]
        table.append(
            f"\nLabels that differ between the two: {s['label_differences']}; "
            f"largest score difference: {s['max_score_difference']:.1e}.\n"
        )
    write_results("offline_scoring", result, "".join(table))
    print("".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())

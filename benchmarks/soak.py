"""Soak: the demo's SST-2 bundle at saturation for 10 minutes, with a 4x burst of connections every minute.

    python benchmarks/soak.py              # bundles/minilm-sst2, runs/demo/sst2/data/heldout.tsv

`bert serve --bundles bundles/minilm-sst2` with its defaults; benchmarks/load.py's raw client in
this process. Every minute: `--connections` closed-loop clients (held-out sentences, a new
request the moment the last answer arrives, 429s included) for the whole minute, and from second
`--burst-at` another 3x that many for `--burst-seconds`, so 4x the connections during the
burst. Reported per minute: accepted requests per second, p50/p99 of accepted requests, every
status and client error counted, and the server's resident memory (VmRSS of the process, sampled
every second: the last sample of the minute and the minute's maximum). Pass: no 5xx, no broken
connection, and RSS at the end no more than 5% above RSS after the first (warm-up) minute.
Writes benchmarks/results/soak.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_model, machine, markdown_table, write_results  # noqa: E402
from benchmarks.load import LoadResult, read_inputs, run_load  # noqa: E402
from benchmarks.overload import demo_bundle_and_data, raise_open_files, serve_command  # noqa: E402
from tests.service.live_service import free_port, running  # noqa: E402

RSS_GROWTH_LIMIT = 0.05


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler(threading.Thread):
    """VmRSS of `pid` every `every_s` seconds, as (seconds since start, bytes)."""

    def __init__(self, pid: int, every_s: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.samples.append((time.monotonic() - self.start_time, rss_bytes(self.pid)))

    def between(self, begin: float, end: float) -> list[int]:
        return [rss for t, rss in self.samples if begin <= t < end]


def merged(results: list[LoadResult], wall: float, client_cpu_s: float) -> dict:
    """One minute's summary over the base and burst loads (which ran in this process together)."""
    total = LoadResult(wall=wall, client_cpu_s=client_cpu_s)
    for r in results:
        total.latencies += r.latencies
        total.missing_retry_after += r.missing_retry_after
        for status, n in r.statuses.items():
            total.statuses[status] = total.statuses.get(status, 0) + n
    summary = total.summary()
    summary["statuses"] = dict(sorted(total.statuses.items()))
    return summary


async def one_minute(url: str, items: list, connections: int, burst_at: float, burst_seconds: float, seed: int):
    path = "/v1/classify"
    base = asyncio.create_task(
        run_load(url, path, items, concurrency=connections, max_requests=10**9, max_seconds=60.0, seed=seed)
    )
    await asyncio.sleep(burst_at)
    burst = await run_load(
        url, path, items, concurrency=3 * connections, max_requests=10**9, max_seconds=burst_seconds, seed=seed + 1
    )
    return [await base, burst]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ROOT / "bundles" / "minilm-sst2"))
    parser.add_argument("--data", default=str(ROOT / "runs" / "demo" / "sst2" / "data" / "heldout.tsv"))
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--connections", type=int, default=256, help="the saturating load (64 already saturates)")
    parser.add_argument("--burst-at", type=float, default=30.0, help="second of each minute the burst starts")
    parser.add_argument("--burst-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    bundle, data = demo_bundle_and_data(args.bundle, args.data)
    raise_open_files(8 * args.connections + 256)
    items = read_inputs(data)
    minutes = []
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        with running(serve_command(bundle, port), Path(tmp) / "serve.log", port) as live:
            sampler = RssSampler(live.proc.pid)
            sampler.start()
            rss_at_start = rss_bytes(live.proc.pid)
            for minute in range(1, args.minutes + 1):
                begin, cpu = time.monotonic() - sampler.start_time, time.process_time()
                results = asyncio.run(
                    one_minute(live.url, items, args.connections, args.burst_at, args.burst_seconds, seed=minute)
                )
                end = time.monotonic() - sampler.start_time
                summary = merged(results, wall=end - begin, client_cpu_s=time.process_time() - cpu)
                rss = sampler.between(begin, end) or [rss_bytes(live.proc.pid)]
                summary.update(
                    minute=minute, rss_mb_end=round(rss[-1] / 2**20, 1), rss_mb_max=round(max(rss) / 2**20, 1)
                )
                minutes.append(summary)
                print(json.dumps(summary), flush=True)
            sampler.stop.set()
    warm = minutes[0]["rss_mb_end"]
    growth = minutes[-1]["rss_mb_end"] / warm - 1
    five_xx = sum(n for m in minutes for status, n in m["statuses"].items() if status.startswith("5"))
    broken = sum(n for m in minutes for status, n in m["statuses"].items() if not status.isdigit())
    verdict = {
        "five_xx": five_xx,
        "broken_connections": broken,
        "rss_mb_after_warm_up": warm,
        "rss_mb_at_end": minutes[-1]["rss_mb_end"],
        "rss_growth": round(growth, 4),
        "rss_growth_met": growth <= RSS_GROWTH_LIMIT,
        "passed": five_xx == 0 and broken == 0 and growth <= RSS_GROWTH_LIMIT,
    }
    payload = {
        "machine": machine(),
        "cpu": cpu_model(),
        "bundle": bundle.name,
        "data": data.name,
        "settings": vars(args),
        "rss_mb_at_start": round(rss_at_start / 2**20, 1),
        "minutes": minutes,
        "verdict": verdict,
    }
    rows = [
        [
            m["minute"],
            f"{m['throughput_rps']:.0f}",
            m["p50_ms"],
            m["p99_ms"],
            ", ".join(f"{k}: {v:,}" for k, v in m["statuses"].items()),
            m["missing_retry_after"],
            m["rss_mb_end"],
            m["rss_mb_max"],
            f"{100 * m['client_cpu_share']:.0f}%",
        ]
        for m in minutes
    ]
    header = ["minute", "accepted/s", "p50 ms", "p99 ms", "statuses", "429 without Retry-After", "RSS MB", "RSS max MB"]
    header.append("generator CPU (of one core)")
    table = (
        f"# Soak: {bundle.name}, {args.minutes} minutes\n\n"
        f"`python benchmarks/soak.py`: {args.connections} connections all the time, {4 * args.connections} from "
        f"second {args.burst_at:g} to {args.burst_at + args.burst_seconds:g} of every minute; clients retry at once "
        f"after a 429. Server and generator on the same {machine()['cpu_count']} cores ({cpu_model()}).\n\n"
        + markdown_table(header, rows)
        + f"\n5xx: {five_xx}; broken connections: {broken}; RSS after the warm-up minute {warm} MB, at the end "
        f"{minutes[-1]['rss_mb_end']} MB ({100 * growth:+.1f}%, limit +{100 * RSS_GROWTH_LIMIT:.0f}%): "
        f"{'passed' if verdict['passed'] else 'FAILED'}.\n"
    )
    json_path, md_path = write_results("soak", payload, table)
    print(table)
    print(f"wrote {json_path} and {md_path}")
    return 0 if verdict["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Load generator for a running service: loopback only, bounded in requests and time.

    python benchmarks/load.py --url http://127.0.0.1:8000 --endpoint classify \
        --data "$BERTKIT_DATA/sst2/train.tsv" --concurrency 64 --requests 3000 --duration 30

Inputs are drawn from real text with its real length distribution: SST-2 sentences (`*.tsv`),
CoNLL-2003 sentences (`*.txt` / `*.conll`) or SQuAD question/context pairs (`*.json`). Two modes:
`--concurrency N` (N clients, each sends its next request when the last returns) or `--rate R`
(open loop, R requests per second whatever the latency). Reports throughput, p50/p95/p99
latency, errors by status and, from the server's /metrics, its batch size and padding ratio.

`--client raw` (the default) speaks keep-alive HTTP/1.1 over asyncio streams: about 10x less CPU
per request than httpx, which matters when the generator shares a few cores with the server (on a
2-core machine httpx alone caps the measurable rate near 200 requests/s). `--client httpx` uses
httpx.AsyncClient instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


# --- real inputs -------------------------------------------------------------------------------


def read_sst2(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0].strip() for line in lines if line.strip()]


def read_conll(path: Path) -> list[str]:
    sentences, words = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append(" ".join(words))
                words = []
            continue
        words.append(line.split()[0])
    if words:
        sentences.append(" ".join(words))
    return sentences


def read_squad(path: Path) -> list[dict]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    return [
        {"question": qa["question"], "context": paragraph["context"]}
        for article in data
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


def read_inputs(path: Path) -> list:
    if path.suffix == ".tsv":
        return read_sst2(path)
    if path.suffix == ".json":
        return read_squad(path)
    return read_conll(path)


def request_body(endpoint: str, item, model: str | None) -> dict:
    body: dict = {"inputs": item}
    if model:
        body["model"] = model
    return body


# --- metrics scraping --------------------------------------------------------------------------


def scrape(client: httpx.Client, url: str) -> dict[str, float]:
    """Sum the batch counters of all models: sequences, batches, real and padded tokens, batch seconds."""
    try:
        text = client.get(url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    totals = {"sequences": 0.0, "batches": 0.0, "real_tokens": 0.0, "padded_tokens": 0.0, "batch_seconds": 0.0}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        metric = name.split("{")[0]
        key = {
            "bertkit_batch_size_sum": "sequences",
            "bertkit_batch_size_count": "batches",
            "bertkit_real_tokens_total": "real_tokens",
            "bertkit_padded_tokens_total": "padded_tokens",
            "bertkit_inference_seconds_sum": "batch_seconds",
        }.get(metric)
        if key:
            totals[key] += float(value)
    return totals


# --- a lean HTTP/1.1 client -----------------------------------------------------------------------


class RawHttpError(Exception):
    """The connection broke or the server answered something that is not HTTP/1.1."""


class RawConnection:
    """One keep-alive HTTP/1.1 connection: POST JSON, read status and body (Content-Length only)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, timeout: float) -> tuple[int, dict[str, str]]:
        for attempt in range(2):  # a kept-alive connection the server closed is reopened once
            fresh = self.writer is None
            try:
                if fresh:
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                self.writer.write(head + body)
                return await asyncio.wait_for(self._response(), timeout)
            except (OSError, asyncio.IncompleteReadError, RawHttpError) as err:
                self.close()
                if fresh or attempt:
                    raise RawHttpError(type(err).__name__) from err
        raise RawHttpError("unreachable")

    async def _response(self) -> tuple[int, dict[str, str]]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise RawHttpError(f"bad status line {lines[0]!r}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(parts[1]), headers

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# --- the load ----------------------------------------------------------------------------------


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    statuses: dict[str, int] = field(default_factory=dict)  # "200", "429", "ConnectError", ...
    missing_retry_after: int = 0  # 429s without a Retry-After header
    client_cpu_s: float = 0.0  # CPU seconds of the generator's own process over the run
    sent_items: list = field(default_factory=list)  # inputs of successful requests, for FLOP counting
    wall: float = 0.0

    def summary(self) -> dict:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(1000 * lat[min(len(lat) - 1, int(p / 100 * len(lat)))], 2) if lat else None

        ok = len(lat)
        return {
            "requests": sum(self.statuses.values()),
            "ok": ok,
            "errors": {k: v for k, v in self.statuses.items() if k != "200"},
            "wall_s": round(self.wall, 3),
            "throughput_rps": round(ok / self.wall, 2) if self.wall else 0.0,
            "refused_429_rps": round(self.statuses.get("429", 0) / self.wall, 2) if self.wall else 0.0,
            "missing_retry_after": self.missing_retry_after,
            "client_cpu_share": round(self.client_cpu_s / self.wall, 3) if self.wall else 0.0,
            "p50_ms": pct(50),
            "p95_ms": pct(95),
            "p99_ms": pct(99),
        }


async def run_load(
    url: str,
    path: str,
    items: list,
    concurrency: int | None = 64,
    rate: float | None = None,
    max_requests: int = 2000,
    max_seconds: float = 30.0,
    model: str | None = None,
    timeout: float = 60.0,
    seed: int = 0,
    body_fn=request_body,
    client: str = "raw",
    honor_retry_after: bool = False,
) -> LoadResult:
    """Send requests until `max_requests` are sent or `max_seconds` pass; return latencies and statuses.

    Latencies are of the answered (200) requests. A client refused with 429 sends its next request
    at once, like wrk, or with `honor_retry_after` only after the Retry-After seconds, as a load
    balancer or a well-behaved client does.
    """
    host = urlparse(url).hostname or ""
    if host not in LOOPBACK and f"[{host}]" not in LOOPBACK:
        raise ValueError(f"load tests only target loopback addresses, not {host!r}")
    rng = random.Random(seed)
    result = LoadResult()
    sent = 0
    cpu_start = time.process_time()
    start = time.perf_counter()
    deadline = start + max_seconds
    limits = httpx.Limits(
        max_connections=max(concurrency or 0, 256), max_keepalive_connections=max(concurrency or 0, 256)
    )

    parsed = urlparse(url)
    idle: list[RawConnection] = []  # raw client: connections not in use

    async def send_raw(item) -> tuple[str, str | None]:
        """(status or error name, Retry-After header or None)."""
        conn = idle.pop() if idle else RawConnection(parsed.hostname, parsed.port or 80)
        try:
            status, headers = await conn.post(path, json.dumps(body_fn(path, item, model)).encode(), timeout)
        except (RawHttpError, TimeoutError) as err:
            conn.close()
            return str(err) or type(err).__name__, None
        idle.append(conn)
        return str(status), headers.get("retry-after")

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:

        async def send_httpx(item) -> tuple[str, str | None]:
            try:
                r = await http.post(url + path, json=body_fn(path, item, model))
                return str(r.status_code), r.headers.get("retry-after")
            except httpx.HTTPError as err:
                return type(err).__name__, None

        send = send_raw if client == "raw" else send_httpx

        async def one(item) -> float:
            """Send one request; the seconds to wait before the next (Retry-After when honoured)."""
            t0 = time.perf_counter()
            key, retry_after = await send(item)
            result.statuses[key] = result.statuses.get(key, 0) + 1
            if key == "200":
                result.latencies.append(time.perf_counter() - t0)
                result.sent_items.append(item)
            if key == "429":
                if retry_after is None or not retry_after.isdigit():
                    result.missing_retry_after += 1
                elif honor_retry_after:
                    return float(retry_after)
            return 0.0

        def take():
            nonlocal sent
            if sent >= max_requests or time.perf_counter() >= deadline:
                return None
            sent += 1
            return rng.choice(items)

        if rate:  # open loop: a fixed arrival rate, whatever the latency
            tasks = []
            while (item := take()) is not None:
                tasks.append(asyncio.create_task(one(item)))
                await asyncio.sleep(1.0 / rate)
            await asyncio.gather(*tasks)
        else:

            async def worker():
                while (item := take()) is not None:
                    pause = await one(item)
                    if pause:
                        await asyncio.sleep(min(pause, max(0.0, deadline - time.perf_counter())))

            await asyncio.gather(*(worker() for _ in range(concurrency or 1)))
    for conn in idle:
        conn.close()
    result.wall = time.perf_counter() - start
    result.client_cpu_s = time.process_time() - cpu_start
    return result


def measure(url: str, path: str, items: list, **kwargs) -> tuple[dict, LoadResult]:
    """run_load plus the server's batch statistics over the run (when it exposes /metrics)."""
    with httpx.Client() as client:
        before = scrape(client, url)
        result = asyncio.run(run_load(url, path, items, **kwargs))
        after = scrape(client, url)
    summary = result.summary()
    if before and after and after["batches"] > before["batches"]:
        d = {k: after[k] - before[k] for k in before}
        summary["server_mean_batch_size"] = round(d["sequences"] / d["batches"], 2)
        summary["server_mean_batch_ms"] = round(1000 * d["batch_seconds"] / d["batches"], 2)
        summary["server_padding_ratio"] = (
            round(1 - d["real_tokens"] / d["padded_tokens"], 3) if d["padded_tokens"] else 0
        )
    return summary, result


ENDPOINTS = {"classify": "/v1/classify", "ner": "/v1/ner", "qa": "/v1/qa", "embed": "/v1/embed"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL (loopback only)")
    parser.add_argument("--endpoint", choices=sorted(ENDPOINTS), default="classify")
    parser.add_argument("--data", required=True, help="SST-2 .tsv, CoNLL .txt/.conll or SQuAD .json")
    parser.add_argument("--model", help="bundle name (default: the service's default for the task)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, default=64, help="closed loop: this many clients")
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--requests", type=int, default=2000, help="stop after this many requests")
    parser.add_argument("--duration", type=float, default=30.0, help="stop after this many seconds")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw", help="HTTP client of the generator")
    parser.add_argument(
        "--honor-retry-after", action="store_true", help="after a 429 wait Retry-After seconds (default: retry at once)"
    )
    parser.add_argument("--out", help="write the summary JSON here")
    args = parser.parse_args(argv)
    try:
        items = read_inputs(Path(args.data))
        if not items:
            raise ValueError(f"{args.data} holds no inputs")
        summary, _ = measure(
            args.url,
            ENDPOINTS[args.endpoint],
            items,
            concurrency=None if args.rate else args.concurrency,
            rate=args.rate,
            max_requests=args.requests,
            max_seconds=args.duration,
            model=args.model,
            client=args.client,
            honor_retry_after=args.honor_retry_after,
        )
    except (OSError, ValueError, KeyError) as err:
        print(f"load: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

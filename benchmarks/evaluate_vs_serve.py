"""What `bert evaluate` scores is what `bert serve` answers, on the demo's bundles and held-out data.

    python benchmarks/evaluate_vs_serve.py                      # bundles/ and runs/demo/ of `bert demo`
    python benchmarks/evaluate_vs_serve.py --tasks sst2 --connections 64 256

For each demo bundle, the held-out file `bert demo` kept apart (runs/demo/TASK/data/heldout.*) is
scored by `bert evaluate --predictions` and sent to a running `bert serve`; the table counts the
examples whose prediction differs (label, word tags, answer text). SST-2 is also sent three ways
(each sentence alone, a burst of concurrent one-sentence requests, requests of 256 sentences) to
count labels that flip with the batch-mates and the largest score move. The client is Python threads
(httpx): this measures answers, not throughput. Writes benchmarks/results/evaluate_vs_serve.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_flags, cpu_model, machine, markdown_table, write_results  # noqa: E402
from tests.service.live_service import serve_bundles  # noqa: E402

TASKS = {  # demo key -> (bert evaluate task, bundle name, held-out file)
    "sst2": ("classify", "minilm-sst2", "heldout.tsv"),
    "conll2003": ("ner", "minilm-conll2003", "heldout.conll"),
    "squad": ("qa", "minilm-squad", "heldout.json"),
}
MULTI = 256  # inputs per request in the multi-input pass


def evaluated(task: str, bundle: Path, data: Path) -> tuple[list, object, list]:
    """(bert evaluate's predictions, the task object, the examples), read exactly as evaluate reads them."""
    from training import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "predictions.jsonl"
        code = evaluate.main([task, "--model", str(bundle), "--data", str(data), "--predictions", str(out)])
        if code != 0:
            raise SystemExit(f"bert evaluate failed on {bundle}")
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    settings = evaluate.EvaluateSettings(task=task, model=str(bundle), data=str(data))
    task_object, *_ = evaluate.load_backend(settings)
    examples, problems = task_object.read(data, for_training=False)
    if hasattr(task_object, "drop_unknown_labels"):
        examples = task_object.drop_unknown_labels(examples, problems)
    return [r["prediction"] for r in rows], task_object, examples


TRANSPORT_RETRIES = []  # one entry per request sent again after a connection closed without an answer


def post(client: httpx.Client, url: str, route: str, body: dict) -> list:
    failures = 0
    while True:
        try:
            response = client.post(f"{url}{route}", json=body, timeout=600)
        except httpx.TransportError as err:
            failures += 1
            if failures == 3:
                raise
            TRANSPORT_RETRIES.append(type(err).__name__)
            continue
        if response.status_code != 429:
            break
        time.sleep(float(response.headers.get("Retry-After", "1")))  # a burst over max_queue_ms: come back later
    response.raise_for_status()
    return response.json()["results"]


def served_classify(url: str, model: str, texts: list[str], mode: str, connections: int) -> list[dict]:
    """Top label and positive-class score per text: alone, as a burst of single requests, or MULTI a request."""
    body = {"model": model, "truncate": True, "top_k": None}
    # A kept-alive connection per thread: with fewer (httpx keeps 20 by default), httpcore 1.0.9's pool can
    # close a connection that another thread has just sent a request on (encode/httpcore#1110), which
    # surfaced as ReadError [Errno 9] Bad file descriptor in about 1 of 1,300 requests of a 256-thread burst.
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    with httpx.Client(limits=limits) as client:
        if mode == "alone":
            results = [post(client, url, "/v1/classify", {**body, "inputs": [t]})[0] for t in texts]
        elif mode == "burst":
            with ThreadPoolExecutor(connections) as pool:
                results = list(pool.map(lambda t: post(client, url, "/v1/classify", {**body, "inputs": [t]})[0], texts))
        else:
            results = [r for i in range(0, len(texts), MULTI) for r in
                       post(client, url, "/v1/classify", {**body, "inputs": texts[i : i + MULTI]})]  # fmt: skip
    return [{"label": r[0]["label"], "scores": {x["label"]: x["score"] for x in r}} for r in results]


def compare_sst2(url: str, bundle: Path, data: Path, connections: list[int]) -> dict:
    predictions, _, examples = evaluated("classify", bundle, data)
    texts = [(e.text, e.text_pair) if e.text_pair is not None else e.text for e in examples]
    model = json.loads((bundle / "bundle.json").read_text())["name"]
    alone = served_classify(url, model, texts, "alone", 1)
    row = {"task": "sst2", "examples": len(texts), "differ_from_evaluate": sum(
        a["label"] != p for a, p in zip(alone, predictions))}  # fmt: skip
    passes = {f"burst x{c}": served_classify(url, model, texts, "burst", c) for c in connections}
    passes[f"{MULTI} a request"] = served_classify(url, model, texts, "multi", 1)
    row["batch_mates"] = {}
    for name, other in passes.items():
        moves = [abs(a["scores"][k] - o["scores"][k]) for a, o in zip(alone, other) for k in a["scores"]]
        row["batch_mates"][name] = {
            "label_flips": sum(a["label"] != o["label"] for a, o in zip(alone, other)),
            "max_score_move": float(max(moves)),
            "p99_score_move": float(np.percentile(moves, 99)),
        }
    return row


def compare_conll(url: str, bundle: Path, data: Path) -> dict:
    from core.inference.ner import join_words

    predictions, _, sentences = evaluated("ner", bundle, data)
    model = json.loads((bundle / "bundle.json").read_text())["name"]
    joined = [join_words(s.tokens) for s in sentences]
    body = {"model": model, "aggregation_strategy": "none", "ignore_labels": []}
    differ = 0
    with httpx.Client() as client:
        for begin in range(0, len(joined), 64):
            chunk = joined[begin : begin + 64]
            served = post(client, url, "/v1/ner", {**body, "inputs": [text for text, _ in chunk]})
            for (_, starts), entities, tags in zip(chunk, served, predictions[begin : begin + 64]):
                first = {}
                for entity in entities:
                    first.setdefault(entity["start"], entity["entity_group"])
                differ += tags != [first.get(start, "O") for start in starts]
    return {"task": "conll2003", "examples": len(sentences), "differ_from_evaluate": differ}


def compare_squad(url: str, bundle: Path, data: Path) -> dict:
    predictions, _, examples = evaluated("qa", bundle, data)
    model = json.loads((bundle / "bundle.json").read_text())["name"]
    pairs = [{"question": e.question, "context": e.context} for e in examples]
    with httpx.Client() as client:
        served = [r for i in range(0, len(pairs), 32) for r in
                  post(client, url, "/v1/qa", {"model": model, "inputs": pairs[i : i + 32], "top_k": 1})]  # fmt: skip
    differ = sum(p != s["answer"] for p, s in zip(predictions, served))
    return {"task": "squad", "examples": len(examples), "differ_from_evaluate": differ}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles-dir", default="bundles", help="the bundles `bert demo` built")
    parser.add_argument("--work", default="runs/demo", help="`bert demo --work`: where the held-out files are")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--connections", nargs="+", type=int, default=[64], help="burst sizes for SST-2")
    args = parser.parse_args(argv)
    found = {k: (Path(args.bundles_dir) / TASKS[k][1], Path(args.work) / k / "data" / TASKS[k][2]) for k in args.tasks}
    missing = [str(p) for pair in found.values() for p in pair if not p.exists()]
    if missing:
        raise SystemExit(f"missing (run `bert demo --no-serve` first): {', '.join(missing)}")
    with tempfile.TemporaryDirectory() as tmp, serve_bundles([b for b, _ in found.values()], Path(tmp) / "log") as url:
        rows = []
        for key, (bundle, data) in found.items():
            if key == "sst2":
                rows.append(compare_sst2(url, bundle, data, args.connections))
            elif key == "conll2003":
                rows.append(compare_conll(url, bundle, data))
            else:
                rows.append(compare_squad(url, bundle, data))
            manifest = json.loads((bundle / "bundle.json").read_text())
            rows[-1].update(precision=manifest["precision"], batch_invariant=manifest.get("batch_invariant"))
            print(json.dumps(rows[-1]), flush=True)
    command = "python benchmarks/evaluate_vs_serve.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = [f"# bert evaluate vs bert serve on the demo bundles\n\n`{command}`\n\nCPU: {cpu_model()} "
             f"({', '.join(cpu_flags())}), {machine()['cpu_count']} cores\n\n"]  # fmt: skip
    table.append(markdown_table(
        ["task", "bundle", "held-out examples", "predictions that differ"],
        [[r["task"], f"{r['precision']}, batch_invariant={r['batch_invariant']}", r["examples"],
          r["differ_from_evaluate"]] for r in rows],
    ))  # fmt: skip
    for r in rows:
        if "batch_mates" in r:
            table.append(f"\nSST-2, each sentence alone vs with batch-mates ({r['examples']} sentences):\n\n")
            table.append(markdown_table(
                ["sent as", "label flips", "max score move", "p99 score move"],
                [[name, v["label_flips"], f"{v['max_score_move']:.2e}", f"{v['p99_score_move']:.2e}"]
                 for name, v in r["batch_mates"].items()],
            ))  # fmt: skip
    if TRANSPORT_RETRIES:
        table.append(f"\n{len(TRANSPORT_RETRIES)} request(s) were sent again after the connection closed unanswered.\n")
    payload = {
        "transport_retries": len(TRANSPORT_RETRIES),
        "command": command,
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "machine": machine(),
        "rows": rows,
    }
    json_path, md_path = write_results("evaluate_vs_serve", payload, "".join(table))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

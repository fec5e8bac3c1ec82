"""Does an input's answer depend on its batch-mates? Each export route on SST-2 held-out sentences.

    python benchmarks/batch_invariance.py --model-dir runs/demo/sst2/model \
        --calibration runs/demo/sst2/data/train.tsv          # datasets from --data-dir, else $BERTKIT_DATA

The routes are bundles written by `bert export` itself: dynamic int8 (fused, what `bert demo`
served before), static int8 (the default; plain and with --optimize), fp32 and fused fp32. The
sentences are the demo's held-out split of SST-2's training file (5%, seed 0, never trained on),
the first 872 (the size of GLUE's SST-2 dev set). Each sentence is run alone (unpadded), then
inside batches of 8, 32 and 64 sentences in a shuffled order, padded to the longest; a flip is a
label that differs, the score is the positive class's softmax probability (what the service
returns). Accuracy is scored on the sentences alone. Throughput: onnxruntime sessions with the
service's settings and 2 intra-op threads, batches of 1 and of 8 sentences (padded), every route
timed in turn on each repeat (interleaved), the median over repeats. Writes
benchmarks/results/batch_invariance.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_flags, cpu_model, data_dir, machine, markdown_table, write_results  # noqa: E402
from core.batches import ModelInput, pad_inputs  # noqa: E402
from core.providers import create_session  # noqa: E402
from model.tokenizer import load_tokenizer  # noqa: E402
from training import datasets  # noqa: E402
from training.export import export_bundle  # noqa: E402

ROUTES = {  # name -> export_bundle options
    "int8-dynamic, fused": {"precision": "int8-dynamic", "optimize": True},
    "int8 static (default)": {"precision": "int8"},
    "int8 static, --optimize": {"precision": "int8", "optimize": True},
    "fp32": {"precision": "fp32"},
    "fp32, fused": {"precision": "fp32", "optimize": True},
}
# Static int8 with one of the export's choices undone, quantized from the fp32 route's graph
# with the same calibration inputs: what each choice buys (static_int8.py explains them).
ABLATIONS = {
    "int8 static, every weight MatMul int8": {"min_sqnr_db": float("-inf")},
    "int8 static, 8-bit weights": {"reduce_range": False},
}
BASELINE = "int8-dynamic, fused"
BATCH_SIZES = (8, 32, 64)


def heldout(data: Path) -> tuple[list[str], np.ndarray]:
    """The demo's held-out split of SST-2's training file (training/demo.py prepare_data), in order."""
    _, held = datasets.holdout_split(datasets.load("sst2", data_dir=data), 0.05, seed=0)
    return [ex.text for ex in held], np.array([ex.label for ex in held])


class Route:
    def __init__(self, model: Path, manifest: dict, threads: int):
        self.manifest = manifest
        self.session = create_session(model, ["CPUExecutionProvider"], intra_op_threads=threads)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def logits(self, feeds: dict) -> np.ndarray:
        return self.session.run(["logits"], {k: feeds[k] for k in self.inputs})[0]  # (B, 2)


def positive(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True))[:, 1]  # (N,)


def invariance(route: Route, rows: list[ModelInput], pad_id: int) -> dict:
    alone = np.concatenate([route.logits(pad_inputs([r], pad_id)) for r in rows])  # (N, 2)
    result = {"alone": alone, "batched": {}}

    for size in BATCH_SIZES:
        order = list(range(len(rows)))
        random.Random(size).shuffle(order)
        together = np.zeros_like(alone)
        for start in range(0, len(order), size):
            index = order[start : start + size]
            together[index] = route.logits(pad_inputs([rows[i] for i in index], pad_id))
        diff = np.abs(positive(alone) - positive(together))
        result["batched"][size] = {
            "flips": int((alone.argmax(-1) != together.argmax(-1)).sum()),
            "max_score_diff": float(diff.max()),
            "p99_score_diff": float(np.quantile(diff, 0.99)),
        }
    return result


def throughput(routes: dict[str, Route], rows: list[ModelInput], pad_id: int, repeats: int) -> dict:
    """Sentences per second at batch 1 and batch 8, routes interleaved on every repeat; medians."""
    order = list(range(len(rows)))
    random.Random(1).shuffle(order)
    passes = {
        1: [pad_inputs([rows[i]], pad_id) for i in order[:64]],
        8: [pad_inputs([rows[i] for i in order[s : s + 8]], pad_id) for s in range(0, 256, 8)],
    }
    speeds = {name: {size: [] for size in passes} for name in routes}
    names = list(routes)
    for repeat in range(repeats + 1):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:  # rotate who goes first
            for size, feeds in passes.items():
                start = time.perf_counter()
                for f in feeds:
                    routes[name].logits(f)
                if repeat:  # the first round warms up
                    speeds[name][size].append(len(feeds) * size / (time.perf_counter() - start))
    return {name: {size: statistics.median(v) for size, v in by_size.items()} for name, by_size in speeds.items()}


def ablations(model_dir: str, fp32_graph: Path, calibration: str | None, work: Path, threads: int) -> dict:
    from training.export.calibration import calibration_file, calibration_inputs
    from training.export.source import read_source
    from training.export.static_int8 import quantize_int8_static

    source = read_source(model_dir, 128)
    feeds, _ = calibration_inputs(source, *calibration_file(source, calibration))
    routes = {}
    for name, options in ABLATIONS.items():
        graph = work / f"ablation{len(routes)}.onnx"
        quantization = quantize_int8_static(fp32_graph, graph, feeds, work, **options)
        manifest = {"precision": "int8", "batch_invariant": True, "optimized": False, "quantization": quantization}
        routes[name] = Route(graph, manifest, threads)
    return routes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="fine-tuned SST-2 model directory (bert finetune --out)")
    parser.add_argument("--calibration", help="static int8 calibration file (default: task.json's train_file)")
    parser.add_argument("--data-dir", help="datasets directory holding sst2/train.tsv (default: $BERTKIT_DATA)")
    parser.add_argument("--examples", type=int, default=872, help="held-out sentences run alone and batched")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds over all routes")
    args = parser.parse_args()
    all_texts, all_labels = heldout(data_dir(args.data_dir))
    texts, labels = all_texts[: args.examples], all_labels[: args.examples]
    payload = {
        "command": "python benchmarks/batch_invariance.py " + " ".join(sys.argv[1:]),
        "cpu": {"model": cpu_model(), "flags": cpu_flags(), **machine()},
        "model_dir": args.model_dir,
        "heldout": f"$BERTKIT_DATA/sst2/train.tsv, held-out 5% (seed 0): the first {len(texts)} of {len(all_texts)}",
        "threads": args.threads,
        "routes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        routes = {}
        for name, options in ROUTES.items():
            calibration = {"calibration": args.calibration} if options["precision"] == "int8" else {}
            started = time.perf_counter()
            out = Path(tmp) / f"b{len(routes)}"
            bundle = export_bundle(args.model_dir, out, max_seq_len=128, **options, **calibration)
            print(f"exported {name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            manifest = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
            routes[name] = Route(bundle / "model.onnx", manifest, args.threads)
        fp32_graph = Path(tmp) / f"b{list(ROUTES).index('fp32')}" / "model.onnx"
        routes.update(ablations(args.model_dir, fp32_graph, args.calibration, Path(tmp), args.threads))
        tokenizer = load_tokenizer(Path(tmp) / "b0" / "tokenizer.json")
        every = [ModelInput(e.ids, e.type_ids) for e in tokenizer.encode_batch(all_texts, max_length=128)]
        rows = every[: len(texts)]
        results = {name: invariance(route, rows, tokenizer.pad_id) for name, route in routes.items()}
        full = {  # accuracy on every held-out sentence (alone): a tighter estimate than on the first 872
            name: float(
                (
                    np.concatenate([r.logits(pad_inputs([x], tokenizer.pad_id)) for x in every]).argmax(-1)
                    == all_labels
                ).mean()
            )
            for name, r in routes.items()
        }
        speed = throughput(routes, rows, tokenizer.pad_id, args.repeats)
    reference = results["fp32"]["alone"]
    table = []
    for name, result in results.items():
        alone, batched = result["alone"], result["batched"]
        manifest = routes[name].manifest
        quantization = manifest.get("quantization") or {}
        record = {
            "bundle_json": {
                "precision": manifest["precision"],
                "batch_invariant": manifest["batch_invariant"],
                "optimized": manifest["optimized"],
                "quantization": {k: v for k, v in quantization.items() if k != "calibration"} or None,
                "calibration_examples": (quantization.get("calibration") or {}).get("examples"),
            },
            "batched": batched,
            "flips": sum(b["flips"] for b in batched.values()),
            "max_score_diff": max(b["max_score_diff"] for b in batched.values()),
            "p99_score_diff": max(b["p99_score_diff"] for b in batched.values()),
            "accuracy": float((alone.argmax(-1) == labels).mean()),
            f"accuracy_all_{len(all_texts)}": full[name],
            "labels_as_fp32": int((alone.argmax(-1) == reference.argmax(-1)).sum()),
            "mean_score_diff_vs_fp32": float(np.abs(positive(alone) - positive(reference)).mean()),
            "sentences_per_s": {f"batch {size}": round(v, 1) for size, v in speed[name].items()},
        }
        payload["routes"][name] = record
        base = speed[BASELINE]
        table.append(
            [
                name,
                ("yes" if manifest["batch_invariant"] else "**no**") if name in ROUTES else "(ablation)",
                "/".join(str(b["flips"]) for b in batched.values()),
                f"{record['max_score_diff']:.2g}",
                f"{record['p99_score_diff']:.2g}",
                f"{100 * record['accuracy']:.2f}",
                f"{100 * full[name]:.2f}",
                f"{record['labels_as_fp32']}/{len(texts)}",
                f"{record['mean_score_diff_vs_fp32']:.4f}",
                f"{speed[name][1]:.0f} ({speed[name][1] / base[1]:.2f}x)",
                f"{speed[name][8]:.0f} ({speed[name][8] / base[8]:.2f}x)",
            ]
        )
    header = [
        "route (`bert export`)",
        "bundle.json batch_invariant",
        f"flips alone vs batched ({'/'.join(map(str, BATCH_SIZES))})",
        "max abs score diff",
        "p99 abs score diff",
        f"accuracy (%), {len(texts)}",
        f"accuracy (%), all {len(all_texts)}",
        "labels as fp32",
        "mean abs score diff vs fp32",
        "sentences/s batch 1 (vs dynamic)",
        "sentences/s batch 8 (vs dynamic)",
    ]
    flags = payload["cpu"]["flags"]
    text = (
        "# Batch invariance of the export routes: SST-2 held-out sentences alone vs batched\n\n"
        f"CPU: {payload['cpu']['model']}; int8-relevant flags: {', '.join(flags) or 'none'} "
        f"(AVX2 {'yes' if 'avx2' in flags else 'no'}, AVX-512 {'yes' if 'avx512f' in flags else 'no'}, "
        f"VNNI {'yes' if {'avx512_vnni', 'avx_vnni'} & set(flags) else 'no'}, "
        f"AMX {'yes' if 'amx_int8' in flags else 'no'}); onnxruntime, {args.threads} intra-op threads.\n"
        f"Model: `{args.model_dir}` (all-MiniLM-L6-v2 fine-tuned by `bert demo`), bundles max_seq_len 128. "
        f"Sentences: {payload['heldout']}.\n\n"
        f"Command: `{payload['command']}`\n\n"
        + markdown_table(header, table)
        + "\nFlips and score differences: each sentence alone against the same sentence inside shuffled batches "
        f"of {', '.join(map(str, BATCH_SIZES))} padded to the longest (flips per batch size; the largest "
        "differences of the three). Accuracy, agreement and score difference with fp32: the sentences alone. "
        "The ablations are static int8 with one choice undone (see training/export/static_int8.py). "
        "Throughput: the median of "
        f"{args.repeats} interleaved rounds (64 sentences one at a time; 256 in batches of 8, padded).\n"
    )
    write_results("batch_invariance", payload, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

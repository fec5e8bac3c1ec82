"""`export_bundle`: model directory -> checked ONNX bundle (model.onnx, tokenizer.json, bundle.json).

Steps: trace fp32 -> (optimize) -> check the fp32 graph against PyTorch (max abs diff <= 1e-4)
-> (calibrate and quantize to int8 | int8-dynamic | fp16) -> check the variant against PyTorch,
and each input alone against the same input padded in a batch -> (score both on --eval FILE)
-> write the bundle with the sha256 of every file. The bundle is assembled in a scratch
directory and moved into place only when every check passed, so a failed export never leaves a
half-written bundle behind.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.bundle import FORMAT_VERSION, INPUT_NAMES, MANIFEST, OUTPUT_NAMES, Manifest, sha256_file
from core.providers import create_session
from training.export import parity
from training.export.calibration import calibration_file, calibration_inputs
from training.export.graph import DEFAULT_OPSET, ExportWrapper, export_onnx, load_model
from training.export.source import ModelSource, read_source
from training.export.variants import convert_fp16, missing_fusions, optimize_graph, quantize_int8_dynamic


class ExportError(ValueError):
    """The export cannot be completed or failed its own checks; the message says which."""


STEPS = ("load", "trace", "optimize", "check fp32", "calibrate", "convert", "check variant", "evaluate", "write")

# What each --precision writes: bundle.json's precision, and whether an input's outputs are independent
# of its batch-mates (dynamic int8 computes its activation scales over the whole batch).
PRECISIONS = {
    "int8": ("int8", True),  # static: activation scales calibrated at export (static_int8.py)
    "int8-dynamic": ("int8", False),
    "fp32": ("fp32", True),
    "fp16": ("fp16", True),
}
DEFAULT_PRECISION = "int8"


def export_bundle(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    precision: str = DEFAULT_PRECISION,
    optimize: bool = False,
    calibration: str | Path | None = None,
    opset: int | None = None,
    eval_file: str | Path | None = None,
    name: str | None = None,
    max_seq_len: int | None = None,
    eval_limit: int | None = None,
    overwrite: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> Path:
    """Export `model_dir` to a bundle in `out_dir`; returns `out_dir`. See docs/bundle-format.md.

    precision: int8 (static, calibrated on `calibration`, else on the training file task.json
    records), int8-dynamic, fp32 or fp16.
    """
    step = on_step or (lambda _: None)
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if calibration is not None and precision != "int8":
        raise ExportError(f"--calibration is for --precision int8 only (got {precision})")
    opset = opset or DEFAULT_OPSET
    if not 14 <= opset <= 21:
        raise ExportError(f"opset must be between 14 and 21, got {opset}")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    name = name or _default_name(out_dir)
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
        raise ExportError(f"bundle name {name!r} may hold only letters, digits, '-', '_' and '.'")

    step("load")
    source = read_source(model_dir, max_seq_len)
    if source.tokenizer.vocab_size > source.config.vocab_size:
        raise ExportError(
            f"{source.directory}: the tokenizer has {source.tokenizer.vocab_size} tokens but the model's "
            f"embedding table only {source.config.vocab_size}"
        )
    model = load_model(source)
    wrapper = ExportWrapper(model, source.task)
    # static int8 needs calibration data: a missing file is reported before the slow steps
    calibration_data = calibration_file(source, calibration) if precision == "int8" else None
    outputs = OUTPUT_NAMES[source.task]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir.parent) as scratch:
        work = Path(scratch)
        step("trace")
        graph = work / "fp32.onnx"
        export_onnx(wrapper, graph, opset)
        fusions = None
        if optimize:
            step("optimize")
            fused = work / "fused.onnx"
            attention = precision != "int8"  # static int8 quantizes the attention projections: keep them MatMuls
            fusions = optimize_graph(graph, fused, source.config, attention)
            graph = fused
            missing = missing_fusions(fusions, source.config, attention)
            if missing:
                print(f"warning: the graph is only partly fused (missing {', '.join(missing)})", file=sys.stderr)

        # The reference: the model as PyTorch users run it (SDPA attention), fp32, eval mode.
        model.bert.set_attention_implementation("sdpa")
        reference = parity.torch_runner(wrapper, outputs)
        batches = parity.random_batches(
            source.tokenizer, source.config.vocab_size, source.config.type_vocab_size, source.max_seq_len
        )
        batches.append(parity.text_batch(source.tokenizer, source.task, source.max_seq_len))

        step("check fp32")
        fp32_session = create_session(graph, ["CPUExecutionProvider"])
        fp32_parity = parity.compare(source.task, reference, parity.onnx_runner(fp32_session, outputs), batches)
        if fp32_parity["max_abs_diff"] > parity.FP32_TOLERANCE:
            raise ExportError(
                f"the fp32 ONNX graph differs from PyTorch by {fp32_parity['max_abs_diff']:.2e} "
                f"(allowed {parity.FP32_TOLERANCE:.0e}); the export is not trustworthy"
            )
        final, final_session, final_parity, quantization = graph, fp32_session, fp32_parity, None
        if precision != "fp32":
            final = work / f"{precision}.onnx"
            if precision == "int8":
                step("calibrate")
                feeds, calibration_record = calibration_inputs(source, *calibration_data)
            step("convert")
            if precision == "int8":
                from training.export.static_int8 import quantize_int8_static

                quantization = {**quantize_int8_static(graph, final, feeds, work), "calibration": calibration_record}
            elif precision == "int8-dynamic":
                quantization = quantize_int8_dynamic(graph, final)
            else:
                convert_fp16(graph, final)
            step("check variant")
            final_session = create_session(final, ["CPUExecutionProvider"])
            final_parity = parity.compare(source.task, reference, parity.onnx_runner(final_session, outputs), batches)
        # Each input alone against the same input padded inside its batch: 0 for fp32 and static int8
        # on the CPUs measured; dynamic int8 moves with the batch.
        final_parity["alone_vs_batch_max_abs_diff"] = parity.alone_vs_batch(
            parity.onnx_runner(final_session, outputs), batches
        )

        metrics = None
        if eval_file is not None:
            step("evaluate")
            from training.export.evaluation import evaluate

            metrics = evaluate(
                source, Path(eval_file), parity.onnx_runner(final_session, outputs), reference, eval_limit
            )

        step("write")
        staging = work / "bundle"
        staging.mkdir()
        shutil.copyfile(final, staging / "model.onnx")
        source.tokenizer.backend.save(str(staging / "tokenizer.json"))
        parity_record = {
            "reference": "pytorch fp32",
            "inputs": _describe_inputs(batches),
            "tolerance": parity.FP32_TOLERANCE if precision == "fp32" else None,
            **final_parity,
        }
        if precision != "fp32":
            parity_record["fp32_graph_max_abs_diff"] = fp32_parity["max_abs_diff"]
        manifest = _manifest(
            source, name, precision, quantization, optimize, fusions, opset, parity_record, metrics, staging
        )
        Manifest.from_json(manifest)  # the schema the service reads: a bundle that fails it is never written
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _move_into_place(staging, out_dir)
    return out_dir


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExportError(f"{out_dir} is not empty; pass --overwrite to replace the bundle there")
        if not (out_dir / MANIFEST).exists():
            raise ExportError(f"{out_dir} is not empty and holds no {MANIFEST}: refusing to overwrite it")


def _default_name(out_dir: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", out_dir.resolve().name).strip("-._")
    return name or "model"


def _describe_inputs(batches: list[dict]) -> str:
    shapes = [f"{b['input_ids'].shape[0]}x{b['input_ids'].shape[1]}" for b in batches]
    return (
        f"random ids with padding ({', '.join(shapes[:-1])}) and {shapes[-1]} real sentences; "
        "token-level outputs compared at real tokens"
    )


def _versions(opset: int) -> dict:
    import onnx
    import onnxruntime
    import torch

    try:
        from importlib.metadata import version

        bertkit = version("bertkit")
    except Exception:  # not installed: running from a checkout
        bertkit = "0.1.0+checkout"
    return {
        "bertkit": bertkit,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": opset,
    }


def _manifest(
    source: ModelSource,
    name: str,
    precision: str,
    quantization: dict | None,
    optimized: bool,
    fusions: dict | None,
    opset: int,
    parity_record: dict,
    metrics: dict | None,
    staging: Path,
) -> dict:
    tok = source.tokenizer
    bundle_precision, batch_invariant = PRECISIONS[precision]
    files = {
        filename: {"sha256": sha256_file(staging / filename), "bytes": (staging / filename).stat().st_size}
        for filename in ("model.onnx", "tokenizer.json")
    }
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "task": source.task,
        "labels": source.labels,
        "problem_type": source.problem_type,
        "max_seq_len": source.max_seq_len,
        "tokenizer": {
            "file": "tokenizer.json",
            "lowercase": tok.lowercase,
            "vocab_size": tok.vocab_size,
            "pad_id": tok.pad_id,
            "cls_id": tok.cls_id,
            "sep_id": tok.sep_id,
            "mask_id": tok.mask_id,
            "unk_id": tok.unk_id,
        },
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES[source.task]),
        "precision": bundle_precision,
        "batch_invariant": batch_invariant,
        "quantization": quantization,  # int8: how (static: with the calibration file, sha256 and sample size)
        "optimized": optimized,
        "fusions": fusions,
        "model_config": source.hf_config,
        "task_config": source.task_info or None,
        "source": str(source.directory.resolve()),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": _versions(opset),
        "files": files,
        "parity": parity_record,
        "metrics": metrics,
    }


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Replace the bundle files in `out_dir` (created if needed) with the staged ones."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in (MANIFEST, "model.onnx", "tokenizer.json"):
        (out_dir / old).unlink(missing_ok=True)  # the manifest first: a half-replaced bundle is never valid
    for filename in ("model.onnx", "tokenizer.json", MANIFEST):  # the manifest last
        shutil.move(str(staging / filename), str(out_dir / filename))

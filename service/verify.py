"""`bert verify BUNDLE_DIR`: is this bundle whole and usable? torch-free.

Checks, in order: bundle.json is valid and of a known format_version; every file matches its
sha256 (a tampered or truncated file is named); the graph loads with the available execution
providers; its inputs and outputs are what the task needs; the tokenizer agrees with the
manifest and the graph (special ids, vocabulary size); the labels match the graph's output
width; one example runs and gives finite outputs of the right shape.

    bert verify bundles/sst2
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from core.args import parse_dataclass, run_cli
from service.bundle import (
    INPUT_NAMES,
    Bundle,
    BundleError,
    load_bundle,
    read_manifest,
    verify_files,
)

EXAMPLE_TEXT = "Paris is the capital of France."
EXAMPLE_QUESTION = "What is the capital of France?"


@dataclass
class VerifySettings:
    bundle_dir: str = field(metadata={"help": "bundle directory (model.onnx, tokenizer.json, bundle.json)"})
    providers: list[str] | None = field(
        default=None, metadata={"help": "execution providers to load the graph with (default: all available)"}
    )


def verify_bundle(path, providers: list[str] | None = None) -> list[str]:
    """Run every check; returns one line per passed check, raises BundleError at the first failure."""
    report = []
    manifest = read_manifest(path)
    report.append(f"manifest: format_version {manifest['format_version']}, {manifest['task']}, {manifest['precision']}")
    verify_files(path, manifest)
    report.append(f"checksums: {len(manifest['files'])} files match ({', '.join(manifest['files'])})")
    bundle = load_bundle(path, providers=providers, verify_checksums=False)
    report.append(f"graph loads with {', '.join(bundle.providers)}")
    report.append(_check_inputs(bundle))
    report.append(_check_tokenizer(bundle))
    report.append(_check_example(bundle))
    return report


def _model_file(bundle: Bundle) -> str:
    return str(bundle.path / "model.onnx")


def _check_inputs(bundle: Bundle) -> str:
    inputs = {i.name: i for i in bundle.session.get_inputs()}
    unknown = sorted(set(inputs) - set(INPUT_NAMES))
    if unknown or "input_ids" not in inputs:
        raise BundleError(f"{_model_file(bundle)} has inputs {sorted(inputs)}; expected {list(INPUT_NAMES)}")
    for name, info in inputs.items():
        if info.type != "tensor(int64)" or len(info.shape) != 2:
            raise BundleError(f"{_model_file(bundle)}: input {name} is {info.type} {info.shape}, not int64 (B, T)")
    return f"inputs: {', '.join(inputs)} int64 (batch, sequence); outputs: {', '.join(bundle.outputs)}"


def _check_tokenizer(bundle: Bundle) -> str:
    tok, spec = bundle.tokenizer, bundle.manifest["tokenizer"]
    tokenizer_file = bundle.path / spec["file"]
    for key in ("pad_id", "cls_id", "sep_id", "mask_id", "unk_id"):
        if key in spec and spec[key] != getattr(tok, key):
            raise BundleError(f"{tokenizer_file}: {key} is {getattr(tok, key)} but bundle.json says {spec[key]}")
    if "lowercase" in spec and spec["lowercase"] != tok.lowercase:
        raise BundleError(f"{tokenizer_file}: lowercase is {tok.lowercase} but bundle.json says {spec['lowercase']}")
    vocab_rows = (bundle.manifest.get("model_config") or {}).get("vocab_size")
    if isinstance(vocab_rows, int) and tok.vocab_size > vocab_rows:
        raise BundleError(
            f"{tokenizer_file} has {tok.vocab_size} tokens but the graph's embedding table only {vocab_rows}"
        )
    return f"tokenizer: {tok.vocab_size} tokens, lowercase={tok.lowercase}, special ids match"


def _expected_width(bundle: Bundle) -> int | None:
    """The last-axis width the task's main output must have, if the manifest fixes it."""
    if bundle.task in ("sequence-classification", "token-classification"):
        return len(bundle.labels or [])
    if bundle.task == "fill-mask":
        return (bundle.manifest.get("model_config") or {}).get("vocab_size") or bundle.tokenizer.vocab_size
    if bundle.task == "embedding":
        return (bundle.manifest.get("model_config") or {}).get("hidden_size")
    return None


def _check_example(bundle: Bundle) -> str:
    tok = bundle.tokenizer
    if bundle.task == "question-answering":
        enc = tok.encode(EXAMPLE_QUESTION, EXAMPLE_TEXT, max_length=bundle.max_seq_len)
    else:
        enc = tok.encode(EXAMPLE_TEXT, max_length=bundle.max_seq_len)
    feeds = {
        "input_ids": np.array([enc.ids], dtype=np.int64),
        "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
        "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
    }
    try:
        outputs = bundle.run(feeds)
    except BundleError:
        raise
    except Exception as err:  # onnxruntime's own error types
        raise BundleError(f"{_model_file(bundle)} fails on an example: {str(err).strip().splitlines()[0]}") from err
    T = len(enc.ids)
    token_level = bundle.task in ("token-classification", "question-answering", "fill-mask")
    width = _expected_width(bundle)
    for name, value in outputs.items():
        if value.shape[0] != 1 or (token_level and (value.ndim < 2 or value.shape[1] != T)):
            raise BundleError(f"{_model_file(bundle)}: output {name} has shape {value.shape} for a 1x{T} input")
        if not np.isfinite(value).all():
            raise BundleError(f"{_model_file(bundle)}: output {name} holds NaN or infinity on an example")
    main = outputs[bundle.outputs[0]]
    if width is not None and bundle.task != "question-answering" and main.shape[-1] != width:
        what = "labels in bundle.json" if bundle.labels else "expected"
        raise BundleError(
            f"{_model_file(bundle)}: output {bundle.outputs[0]} has width {main.shape[-1]}, {width} {what}"
        )
    return (
        f"example: {T} tokens -> "
        + ", ".join(f"{k} {tuple(v.shape)}" for k, v in outputs.items())
        + _gist(bundle, outputs)
    )


def _gist(bundle: Bundle, outputs: dict[str, np.ndarray]) -> str:
    if bundle.task == "sequence-classification" and bundle.labels:
        return f" (predicts {bundle.labels[int(outputs['logits'][0].argmax())]!r})"
    return ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "bert verify"

    def run() -> int:
        settings = parse_dataclass(VerifySettings, argv, prog, __doc__, positional=("bundle_dir",))
        for line in verify_bundle(settings.bundle_dir, settings.providers):
            print(f"ok  {line}")
        print(f"{settings.bundle_dir}: bundle is valid")
        return 0

    return run_cli(run, prog)

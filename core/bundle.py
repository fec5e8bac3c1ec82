"""Load an exported bundle (model.onnx + tokenizer.json + bundle.json) without torch.

`load_bundle` reads and validates `bundle.json` (see docs/bundle-format.md), checks the sha256
of every file it lists, loads the tokenizer and opens an onnxruntime session. Every problem
raises `BundleError` with a message naming the file or the manifest field at fault.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.tokenizer import BertTokenizer, load_tokenizer

FORMAT_VERSION = 1  # the newest bundle.json format_version this code understands
MANIFEST = "bundle.json"
TASKS = ("sequence-classification", "token-classification", "question-answering", "fill-mask", "embedding")
PRECISIONS = ("fp32", "int8", "fp16")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# task -> graph outputs, in order
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "sequence-classification": ("logits",),
    "token-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
    "fill-mask": ("logits",),
    "embedding": ("embeddings",),
}
LABELLED_TASKS = ("sequence-classification", "token-classification")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CHUNK = 1 << 20


class BundleError(ValueError):
    """A bundle that cannot be used: the message names the file or the bundle.json field."""


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]
    tokenizer: BertTokenizer
    session: Any  # onnxruntime.InferenceSession
    name: str
    task: str
    labels: list[str] | None
    max_seq_len: int
    precision: str
    providers: list[str]  # execution providers the session actually uses, in priority order
    problem_type: str | None = None
    outputs: list[str] = field(default_factory=list)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on int64 (B, T) `input_ids`, `attention_mask` and `token_type_ids`.

        A missing `attention_mask` means no padding; a missing `token_type_ids` means all zeros.
        """
        if "input_ids" not in feeds:
            raise ValueError("feeds must contain input_ids")
        input_ids = np.asarray(feeds["input_ids"], dtype=np.int64)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, sequence), got shape {input_ids.shape}")
        if input_ids.shape[1] > self.max_seq_len:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds the bundle's max_seq_len {self.max_seq_len}"
            )
        arrays = {"input_ids": input_ids}
        for name in ("attention_mask", "token_type_ids"):
            value = feeds.get(name)
            if value is None:
                value = np.ones_like(input_ids) if name == "attention_mask" else np.zeros_like(input_ids)
            value = np.asarray(value, dtype=np.int64)
            if value.shape != input_ids.shape:
                raise ValueError(f"{name} has shape {value.shape}, input_ids {input_ids.shape}")
            arrays[name] = value
        graph_inputs = [i.name for i in self.session.get_inputs()]
        results = self.session.run(self.outputs, {name: arrays[name] for name in graph_inputs})
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(self.outputs, results)}


# --- manifest -------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and validate `bundle.json` in the bundle directory `path`."""
    directory = Path(path)
    if not directory.is_dir():
        raise BundleError(f"{directory} is not a bundle directory")
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        raise BundleError(f"{manifest_path} is missing: not a bundle (run `bert export` to make one)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{manifest_path} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object")
    validate_manifest(manifest, where=str(manifest_path))
    return manifest


def _field(manifest: dict, key: str, types: type | tuple, where: str) -> Any:
    if key not in manifest:
        raise BundleError(f"{where}: field {key!r} is missing")
    value = manifest[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise BundleError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _as_tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def validate_manifest(manifest: dict[str, Any], where: str = MANIFEST) -> None:
    """Check the fields the service relies on; raise BundleError naming the first bad one."""
    version = _field(manifest, "format_version", int, where)
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{where}: format_version {version} is newer than this bertkit understands ({FORMAT_VERSION}); "
            "upgrade bertkit or re-export the bundle"
        )
    if version < 1:
        raise BundleError(f"{where}: format_version {version} is not valid")
    name = _field(manifest, "name", str, where)
    if not NAME_PATTERN.match(name):
        raise BundleError(f"{where}: field 'name' {name!r} may hold only letters, digits, '-', '_' and '.'")
    task = _field(manifest, "task", str, where)
    if task not in TASKS:
        raise BundleError(f"{where}: field 'task' is {task!r}; expected one of {', '.join(TASKS)}")
    labels = manifest.get("labels")
    if task in LABELLED_TASKS:
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise BundleError(f"{where}: field 'labels' must be a non-empty list of strings for task {task}")
        if len(set(labels)) != len(labels):
            raise BundleError(f"{where}: field 'labels' has duplicate names")
    elif labels is not None and not isinstance(labels, list):
        raise BundleError(f"{where}: field 'labels' must be a list or null")
    max_seq_len = _field(manifest, "max_seq_len", int, where)
    if max_seq_len < 3:
        raise BundleError(f"{where}: field 'max_seq_len' must be at least 3, got {max_seq_len}")
    precision = _field(manifest, "precision", str, where)
    if precision not in PRECISIONS:
        raise BundleError(f"{where}: field 'precision' is {precision!r}; expected one of {', '.join(PRECISIONS)}")
    tokenizer = _field(manifest, "tokenizer", dict, where)
    if not isinstance(tokenizer.get("file"), str):
        raise BundleError(f"{where}: field 'tokenizer.file' is missing")
    outputs = _field(manifest, "outputs", list, where)
    if tuple(outputs) != OUTPUT_NAMES[task]:
        raise BundleError(f"{where}: field 'outputs' is {outputs}; task {task} needs {list(OUTPUT_NAMES[task])}")
    inputs = _field(manifest, "inputs", list, where)
    if not set(inputs) <= set(INPUT_NAMES) or "input_ids" not in inputs:
        raise BundleError(f"{where}: field 'inputs' is {inputs}; expected a subset of {list(INPUT_NAMES)}")
    files = _field(manifest, "files", dict, where)
    for required in ("model.onnx", tokenizer["file"]):
        if required not in files:
            raise BundleError(f"{where}: field 'files' does not list {required}")
    for filename, entry in files.items():
        if Path(filename).name != filename or filename == MANIFEST:
            raise BundleError(f"{where}: field 'files' has a bad file name {filename!r}")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not isinstance(entry.get("bytes"), int)
        ):
            raise BundleError(f"{where}: field 'files.{filename}' needs 'sha256' (str) and 'bytes' (int)")


def verify_files(path: str | Path, manifest: dict[str, Any]) -> None:
    """Check that every file listed in the manifest exists with the recorded size and sha256."""
    directory = Path(path)
    for filename, entry in manifest["files"].items():
        file_path = directory / filename
        if not file_path.is_file():
            raise BundleError(f"{file_path} is missing (listed in {MANIFEST})")
        size = file_path.stat().st_size
        if size != entry["bytes"]:
            kind = "truncated" if size < entry["bytes"] else "changed"
            raise BundleError(f"{file_path} is {kind}: {size} bytes, {MANIFEST} says {entry['bytes']}")
        if sha256_file(file_path) != entry["sha256"]:
            raise BundleError(f"{file_path} has been modified: its sha256 does not match {MANIFEST}")


# --- loading --------------------------------------------------------------------------------

# Preferred order when the caller does not choose: GPU first, CPU last.
DEFAULT_PROVIDER_ORDER = ("CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(requested: list[str] | None) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested is None:
        chosen = [p for p in DEFAULT_PROVIDER_ORDER if p in available]
        return chosen or list(available)
    unknown = [p for p in requested if p not in available]
    if unknown:
        raise ValueError(f"execution provider(s) {', '.join(unknown)} not available; available: {', '.join(available)}")
    if not requested:
        raise ValueError("providers must name at least one execution provider")
    return list(requested)


def create_session(model_path: Path, providers: list[str], intra_op_threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads is not None:
        if intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be at least 1, got {intra_op_threads}")
        options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no warning spam about unused initializers
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BundleError(f"{model_path} cannot be loaded by onnxruntime: {first_line}") from err


def load_bundle(
    path: str | Path,
    providers: list[str] | None = None,
    intra_op_threads: int | None = None,
    verify_checksums: bool = True,
) -> Bundle:
    """Validate and open a bundle directory. `providers=None` picks CUDA if present, else CPU."""
    directory = Path(path)
    manifest = read_manifest(directory)
    if verify_checksums:
        verify_files(directory, manifest)
    tokenizer_path = directory / manifest["tokenizer"]["file"]
    try:
        tokenizer = load_tokenizer(tokenizer_path)
    except (OSError, ValueError) as err:
        raise BundleError(f"{tokenizer_path} cannot be loaded: {err}") from err
    chosen = choose_providers(providers)
    session = create_session(directory / "model.onnx", chosen, intra_op_threads)
    graph_outputs = [o.name for o in session.get_outputs()]
    if graph_outputs != list(manifest["outputs"]):
        raise BundleError(
            f"{directory / 'model.onnx'} has outputs {graph_outputs} but {MANIFEST} says {manifest['outputs']}"
        )
    return Bundle(
        path=directory,
        manifest=manifest,
        tokenizer=tokenizer,
        session=session,
        name=manifest["name"],
        task=manifest["task"],
        labels=manifest.get("labels"),
        max_seq_len=manifest["max_seq_len"],
        precision=manifest["precision"],
        providers=list(session.get_providers()),
        problem_type=manifest.get("problem_type"),
        outputs=list(manifest["outputs"]),
    )

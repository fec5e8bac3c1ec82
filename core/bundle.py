"""The bundle format: model.onnx + tokenizer.json + bundle.json, read without torch.

`Manifest` is bundle.json as one typed schema (docs/bundle-format.md): `Manifest.from_json`
validates it and names the first bad field. `load_bundle` reads the manifest, checks the sha256
of every file it lists, loads the tokenizer and opens one onnxruntime session; `check_bundle`
then runs the checks that need the open session (graph inputs, tokenizer against the manifest,
one example). Each is done once per bundle: `bert verify` and the service's start-up both call
`load_bundle` and then `check_bundle` on the same object. Every problem raises `BundleError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.checksums import sha256_file
from core.providers import choose_providers, create_session
from model.tokenizer import BertTokenizer, load_tokenizer

FORMAT_VERSION = 1  # the newest bundle.json format_version this code understands
MANIFEST = "bundle.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
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
TOKEN_LEVEL_TASKS = ("token-classification", "question-answering", "fill-mask")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
EXAMPLE_TEXT = "Paris is the capital of France."
EXAMPLE_QUESTION = "What is the capital of France?"


class BundleError(ValueError):
    """A bundle that cannot be used: the message names the file or the bundle.json field."""


def is_bundle(directory: str | Path) -> bool:
    return (Path(directory) / MANIFEST).is_file()


# --- the manifest ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class TokenizerSpec:
    file: str
    lowercase: bool | None = None
    vocab_size: int | None = None
    pad_id: int | None = None
    cls_id: int | None = None
    sep_id: int | None = None
    mask_id: int | None = None
    unk_id: int | None = None


@dataclass(frozen=True)
class Manifest:
    """bundle.json: the fields the service relies on, typed; everything else stays in `raw`."""

    format_version: int
    name: str
    task: str
    labels: tuple[str, ...] | None
    max_seq_len: int
    precision: str
    tokenizer: TokenizerSpec
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    files: dict[str, FileEntry]
    problem_type: str | None = None
    # True when each input's outputs do not depend on the other inputs of its batch. Dynamic int8
    # (one activation scale per tensor, over the whole batch) is not; a bundle without the field is
    # taken as dynamic when it is int8 (every int8 bundle before the field was).
    batch_invariant: bool = True
    task_config: dict[str, Any] = field(default_factory=dict)  # the fine-tuning task.json (strides, ...)
    model_config: dict[str, Any] = field(default_factory=dict)  # the Hugging Face config.json
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # bundle.json as read

    @classmethod
    def from_json(cls, data: Any, where: str = MANIFEST) -> Manifest:
        """Validate bundle.json's object; raise BundleError naming the first bad field."""
        if not isinstance(data, dict):
            raise BundleError(f"{where} must hold a JSON object")
        version = _field(data, "format_version", int, where)
        if version > FORMAT_VERSION:
            raise BundleError(
                f"{where}: format_version {version} is newer than this bertkit understands ({FORMAT_VERSION}); "
                "upgrade bertkit or re-export the bundle"
            )
        if version < 1:
            raise BundleError(f"{where}: format_version {version} is not valid")
        name = _field(data, "name", str, where)
        if not NAME_PATTERN.match(name):
            raise BundleError(f"{where}: field 'name' {name!r} may hold only letters, digits, '-', '_' and '.'")
        task = _field(data, "task", str, where)
        if task not in TASKS:
            raise BundleError(f"{where}: field 'task' is {task!r}; expected one of {', '.join(TASKS)}")
        labels = data.get("labels")
        if task in LABELLED_TASKS:
            if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
                raise BundleError(f"{where}: field 'labels' must be a non-empty list of strings for task {task}")
            if len(set(labels)) != len(labels):
                raise BundleError(f"{where}: field 'labels' has duplicate names")
        elif labels is not None and not isinstance(labels, list):
            raise BundleError(f"{where}: field 'labels' must be a list or null")
        max_seq_len = _field(data, "max_seq_len", int, where)
        if max_seq_len < 3:
            raise BundleError(f"{where}: field 'max_seq_len' must be at least 3, got {max_seq_len}")
        precision = _field(data, "precision", str, where)
        if precision not in PRECISIONS:
            raise BundleError(f"{where}: field 'precision' is {precision!r}; expected one of {', '.join(PRECISIONS)}")
        tokenizer = _tokenizer_spec(_field(data, "tokenizer", dict, where), where)
        outputs = _field(data, "outputs", list, where)
        if tuple(outputs) != OUTPUT_NAMES[task]:
            raise BundleError(f"{where}: field 'outputs' is {outputs}; task {task} needs {list(OUTPUT_NAMES[task])}")
        inputs = _field(data, "inputs", list, where)
        if not set(inputs) <= set(INPUT_NAMES) or "input_ids" not in inputs:
            raise BundleError(f"{where}: field 'inputs' is {inputs}; expected a subset of {list(INPUT_NAMES)}")
        files = _files(_field(data, "files", dict, where), (MODEL_FILE, tokenizer.file), where)
        invariant = data.get("batch_invariant", precision != "int8")
        if not isinstance(invariant, bool):
            raise BundleError(f"{where}: field 'batch_invariant' must be true or false")
        return cls(
            format_version=version,
            name=name,
            task=task,
            labels=tuple(labels) if labels else None,
            max_seq_len=max_seq_len,
            precision=precision,
            tokenizer=tokenizer,
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            files=files,
            problem_type=data.get("problem_type"),
            batch_invariant=invariant,
            task_config=dict(data.get("task_config") or {}),
            model_config=dict(data.get("model_config") or {}),
            raw=data,
        )


def _field(data: dict, key: str, types: type | tuple, where: str) -> Any:
    if key not in data:
        raise BundleError(f"{where}: field {key!r} is missing")
    value = data[key]
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in allowed):
        raise BundleError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _tokenizer_spec(spec: dict, where: str) -> TokenizerSpec:
    if not isinstance(spec.get("file"), str):
        raise BundleError(f"{where}: field 'tokenizer.file' is missing")
    known = {k: spec[k] for k in TokenizerSpec.__dataclass_fields__ if k in spec}
    for key, value in known.items():
        expected = str if key == "file" else bool if key == "lowercase" else int
        if value is not None and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
            raise BundleError(f"{where}: field 'tokenizer.{key}' has the wrong type ({type(value).__name__})")
    return TokenizerSpec(**known)


def _files(entries: dict, required: tuple[str, ...], where: str) -> dict[str, FileEntry]:
    for name in required:
        if name not in entries:
            raise BundleError(f"{where}: field 'files' does not list {name}")
    files = {}
    for filename, entry in entries.items():
        if Path(filename).name != filename or filename == MANIFEST:
            raise BundleError(f"{where}: field 'files' has a bad file name {filename!r}")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not isinstance(entry.get("bytes"), int)
        ):
            raise BundleError(f"{where}: field 'files.{filename}' needs 'sha256' (str) and 'bytes' (int)")
        files[filename] = FileEntry(entry["sha256"], entry["bytes"])
    return files


def read_manifest(path: str | Path) -> Manifest:
    """Read and validate `bundle.json` in the bundle directory `path`."""
    directory = Path(path)
    if not directory.is_dir():
        raise BundleError(f"{directory} is not a bundle directory")
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        raise BundleError(f"{manifest_path} is missing: not a bundle (run `bert export` to make one)")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{manifest_path} is not valid JSON: {err}") from err
    return Manifest.from_json(data, where=str(manifest_path))


def verify_files(path: str | Path, manifest: Manifest) -> None:
    """Check that every file listed in the manifest exists with the recorded size and sha256."""
    directory = Path(path)
    for filename, entry in manifest.files.items():
        file_path = directory / filename
        if not file_path.is_file():
            raise BundleError(f"{file_path} is missing (listed in {MANIFEST})")
        size = file_path.stat().st_size
        if size != entry.bytes:
            kind = "truncated" if size < entry.bytes else "changed"
            raise BundleError(f"{file_path} is {kind}: {size} bytes, {MANIFEST} says {entry.bytes}")
        if sha256_file(file_path) != entry.sha256:
            raise BundleError(f"{file_path} has been modified: its sha256 does not match {MANIFEST}")


# --- the loaded bundle ----------------------------------------------------------------------


@dataclass
class Bundle:
    path: Path
    manifest: Manifest
    tokenizer: BertTokenizer
    session: Any  # onnxruntime.InferenceSession
    providers: list[str]  # execution providers the session actually uses, in priority order

    name = property(lambda self: self.manifest.name)
    task = property(lambda self: self.manifest.task)
    labels = property(lambda self: list(self.manifest.labels) if self.manifest.labels else None)
    max_seq_len = property(lambda self: self.manifest.max_seq_len)
    precision = property(lambda self: self.manifest.precision)
    problem_type = property(lambda self: self.manifest.problem_type)
    outputs = property(lambda self: list(self.manifest.outputs))

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

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
    tokenizer_path = directory / manifest.tokenizer.file
    try:
        tokenizer = load_tokenizer(tokenizer_path)
    except (OSError, ValueError) as err:
        raise BundleError(f"{tokenizer_path} cannot be loaded: {err}") from err
    try:
        session = create_session(directory / MODEL_FILE, choose_providers(providers), intra_op_threads)
    except RuntimeError as err:
        raise BundleError(str(err)) from err
    graph_outputs = [o.name for o in session.get_outputs()]
    if graph_outputs != list(manifest.outputs):
        raise BundleError(
            f"{directory / MODEL_FILE} has outputs {graph_outputs} but {MANIFEST} says {list(manifest.outputs)}"
        )
    return Bundle(directory, manifest, tokenizer, session, list(session.get_providers()))


# --- the checks that need the open session --------------------------------------------------


def check_bundle(bundle: Bundle) -> list[str]:
    """Graph inputs, tokenizer and one example; one line per passed check, BundleError at the first failure."""
    return [_check_inputs(bundle), _check_tokenizer(bundle), _check_example(bundle)]


def _check_inputs(bundle: Bundle) -> str:
    inputs = {i.name: i for i in bundle.session.get_inputs()}
    unknown = sorted(set(inputs) - set(INPUT_NAMES))
    if unknown or "input_ids" not in inputs:
        raise BundleError(f"{bundle.model_file} has inputs {sorted(inputs)}; expected {list(INPUT_NAMES)}")
    for name, info in inputs.items():
        if info.type != "tensor(int64)" or len(info.shape) != 2:
            raise BundleError(f"{bundle.model_file}: input {name} is {info.type} {info.shape}, not int64 (B, T)")
    return f"inputs: {', '.join(inputs)} int64 (batch, sequence); outputs: {', '.join(bundle.outputs)}"


def _check_tokenizer(bundle: Bundle) -> str:
    tok, spec = bundle.tokenizer, bundle.manifest.tokenizer
    tokenizer_file = bundle.path / spec.file
    for key in ("pad_id", "cls_id", "sep_id", "mask_id", "unk_id"):
        recorded = getattr(spec, key)
        if recorded is not None and recorded != getattr(tok, key):
            raise BundleError(f"{tokenizer_file}: {key} is {getattr(tok, key)} but {MANIFEST} says {recorded}")
    if spec.lowercase is not None and spec.lowercase != tok.lowercase:
        raise BundleError(f"{tokenizer_file}: lowercase is {tok.lowercase} but {MANIFEST} says {spec.lowercase}")
    vocab_rows = bundle.manifest.model_config.get("vocab_size")
    if isinstance(vocab_rows, int) and tok.vocab_size > vocab_rows:
        raise BundleError(
            f"{tokenizer_file} has {tok.vocab_size} tokens but the graph's embedding table only {vocab_rows}"
        )
    return f"tokenizer: {tok.vocab_size} tokens, lowercase={tok.lowercase}, special ids match"


def _expected_width(bundle: Bundle) -> int | None:
    """The last-axis width the task's main output must have, if the manifest fixes it."""
    if bundle.task in LABELLED_TASKS:
        return len(bundle.labels or [])
    if bundle.task == "fill-mask":
        return bundle.manifest.model_config.get("vocab_size") or bundle.tokenizer.vocab_size
    if bundle.task == "embedding":
        return bundle.manifest.model_config.get("hidden_size")
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
    except Exception as err:  # onnxruntime's own error types
        raise BundleError(f"{bundle.model_file} fails on an example: {str(err).strip().splitlines()[0]}") from err
    T = len(enc.ids)
    token_level = bundle.task in TOKEN_LEVEL_TASKS
    width = _expected_width(bundle)
    for name, value in outputs.items():
        if value.shape[0] != 1 or (token_level and (value.ndim < 2 or value.shape[1] != T)):
            raise BundleError(f"{bundle.model_file}: output {name} has shape {value.shape} for a 1x{T} input")
        if not np.isfinite(value).all():
            raise BundleError(f"{bundle.model_file}: output {name} holds NaN or infinity on an example")
    main = outputs[bundle.outputs[0]]
    if width is not None and bundle.task != "question-answering" and main.shape[-1] != width:
        what = f"labels in {MANIFEST}" if bundle.labels else "expected"
        raise BundleError(f"{bundle.model_file}: output {bundle.outputs[0]} has width {main.shape[-1]}, {width} {what}")
    gist = ""
    if bundle.task == "sequence-classification" and bundle.labels:
        gist = f" (predicts {bundle.labels[int(outputs['logits'][0].argmax())]!r})"
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in outputs.items())
    return f"example: {T} tokens -> {shapes}{gist}"

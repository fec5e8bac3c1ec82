"""onnxruntime backend of the batcher: device choice with CPU fallback, variant choice, IO binding on CUDA.

`open_model(path, ...)` picks the device (core.providers: CUDA when onnxruntime-gpu sees a GPU,
else CPU), the bundle variant that suits it (fp16 on CUDA, int8 on CPU, then fp32) and loads it;
a CUDA provider that is missing or fails to start falls back to CPU with one warning line.
`OnnxBackend` pads a batch of token sequences, runs the session and splits the outputs per row
(core.batches, the padding and splitting `bert evaluate` uses too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.batches import ModelInput, pad_inputs, split_outputs
from core.bundle import MANIFEST, TOKEN_LEVEL_TASKS, BundleError, is_bundle, read_manifest
from core.providers import CPU, CUDA, available_providers, choose_device, session_providers

log = logging.getLogger(__name__)

# Variant preference per device when a directory holds several precisions of one model.
PRECISION_PREFERENCE = {"cuda": ("fp16", "fp32", "int8"), "cpu": ("int8", "fp32", "fp16")}


def _precision_of(bundle_dir: Path) -> str | None:
    try:
        return read_manifest(bundle_dir).precision
    except BundleError:
        return None


def resolve_variant(path: Path, device: str, precision: str = "auto") -> Path:
    """`path` itself when it is a bundle, else the sub-directory bundle whose precision suits `device`."""
    path = Path(path)
    if is_bundle(path):
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"bundle directory {path} does not exist")
    variants: dict[str, Path] = {}
    for sub in sorted(p for p in path.iterdir() if is_bundle(p)):
        variants.setdefault(_precision_of(sub) or sub.name, sub)
    if not variants:
        raise FileNotFoundError(f"{path} holds no {MANIFEST} and no bundle sub-directories")
    wanted = PRECISION_PREFERENCE[device] if precision == "auto" else (precision,)
    for name in wanted:
        if name in variants:
            return variants[name]
    raise FileNotFoundError(f"{path} has no {'/'.join(wanted)} variant; it holds {sorted(variants)}")


@dataclass
class OpenedModel:
    bundle: Any
    device: str  # "cuda" | "cpu"
    path: Path
    fallback_reason: str | None = None


def open_model(
    path: Path,
    provider: str = "auto",
    precision: str = "auto",
    intra_op_threads: int | None = None,
    loader: Callable[..., Any] | None = None,
    available: list[str] | None = None,
) -> OpenedModel:
    """Load one bundle on the best device; CUDA trouble falls back to CPU with one warning line."""
    if loader is None:
        from core.bundle import load_bundle as loader
    available = available_providers() if available is None else available
    device, reason = choose_device(provider, available)
    if provider == "cuda" and reason:
        log.warning("provider=cuda requested but %s", reason)
    if device == "cuda":
        variant = resolve_variant(path, "cuda", precision)
        try:
            bundle = loader(variant, providers=session_providers("cuda"), intra_op_threads=intra_op_threads)
            actual = list(getattr(bundle, "providers", []) or [])
            if actual and actual[0] == CUDA:
                log.info("bundle %s: %s precision on %s", variant, getattr(bundle, "precision", "?"), CUDA)
                return OpenedModel(bundle, "cuda", variant)
            reason = f"the session started on {actual or 'no provider'} instead of CUDA"
        except Exception as err:  # a broken CUDA install must not stop a CPU-capable server
            reason = f"CUDA failed to initialise: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        log.warning("bundle %s: falling back to CPU: %s", path, reason)
    variant = resolve_variant(path, "cpu", precision)
    bundle = loader(variant, providers=session_providers("cpu"), intra_op_threads=intra_op_threads)
    why = f" ({reason})" if reason and device == "cpu" and provider == "auto" else ""
    log.info("bundle %s: %s precision on %s%s", variant, getattr(bundle, "precision", "?"), CPU, why)
    return OpenedModel(bundle, "cpu", variant, reason)


class OnnxBackend:
    """`run(batch)` for the batcher: pad, run the bundle's session, split outputs per row."""

    def __init__(self, bundle: Any, device: str = "cpu"):
        self.bundle = bundle
        self.device = device
        self.pad_id = int(getattr(bundle.tokenizer, "pad_id", 0))
        self.token_level = bundle.task in TOKEN_LEVEL_TASKS
        session = getattr(bundle, "session", None)
        self._session = session if device == "cuda" and session is not None else None
        if self._session is not None:
            self.input_names = [i.name for i in session.get_inputs()]
            self.output_names = [o.name for o in session.get_outputs()]

    def run(self, batch: list[ModelInput]) -> list[dict[str, np.ndarray]]:
        feeds = pad_inputs(batch, self.pad_id)
        outputs = self._run_iobinding(feeds) if self._session is not None else self.bundle.run(feeds)
        return split_outputs(outputs, [len(x) for x in batch], self.token_level)

    def _run_iobinding(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """CUDA: inputs copied to the device once, outputs allocated there by onnxruntime, then fetched."""
        binding = self._session.io_binding()
        for name in self.input_names:
            binding.bind_cpu_input(name, feeds[name])
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        self._session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu()))


def warmup_batches(
    max_seq_len: int, max_batch_size: int, max_batch_tokens: int, cls_id: int, sep_id: int, filler_id: int, device: str
) -> list[list[ModelInput]]:
    """Batches run before /ready: one small batch on CPU; on CUDA the common shapes, so kernels are chosen."""

    def seq(length: int) -> ModelInput:
        length = max(2, min(length, max_seq_len))
        return ModelInput([cls_id] + [filler_id] * (length - 2) + [sep_id])

    if device != "cuda":
        return [[seq(16), seq(8)]]
    batches = []
    for length in sorted({min(32, max_seq_len), min(128, max_seq_len), max_seq_len}):
        for size in sorted({1, min(8, max_batch_size), max_batch_size}):
            size = max(1, min(size, max_batch_tokens // max(length, 1)))
            batches.append([seq(length) for _ in range(size)])
    return batches

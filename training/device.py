"""Pick the device and numeric precision for training, with a logged CPU fallback.

`--device auto` takes CUDA when it is present *and* initialises, else the CPU; `--device cuda`
on a machine without a usable GPU is a user error. `--precision auto` takes bf16 where the
hardware multiplies bf16 natively (CUDA with bf16 support, CPUs with AVX512-BF16 or AMX) and
fp32 elsewhere: on an AVX2-only CPU oneDNN emulates bf16 matmuls at a fraction of fp32 speed.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass

import torch

from core.providers import DEVICES  # auto | cpu | cuda: one vocabulary for training and serving

log = logging.getLogger("bertkit.device")

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device  # where the model and batches live
    kind: str  # "cpu" or "cuda"
    name: str  # human-readable hardware name
    reason: str  # why this device was chosen (logged and stored in run.json)

    def to_json(self) -> dict:
        out = asdict(self)
        out["device"] = str(self.device)
        return out


def cuda_usable() -> tuple[bool, str]:
    """(usable, why not): CUDA can be listed as available yet fail to initialise (driver mismatch, busy GPU)."""
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False (no GPU, no driver, or a CPU-only torch build)"
    try:
        torch.cuda.init()
        torch.zeros(1, device="cuda")
    except Exception as err:  # any driver/runtime failure means "not usable"
        return False, f"CUDA failed to initialise: {err}"
    return True, ""


def select_device(requested: str = "auto", local_rank: int = 0) -> DeviceChoice:
    """Resolve `auto|cpu|cuda` to a concrete device; under torchrun each rank takes GPU `local_rank`."""
    if requested not in DEVICES:
        raise ValueError(f"--device must be one of {DEVICES}, not {requested!r}")
    if requested == "cpu":
        return DeviceChoice(torch.device("cpu"), "cpu", _cpu_name(), "requested with --device cpu")
    usable, why_not = cuda_usable()
    if usable:
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        reason = "requested with --device cuda" if requested == "cuda" else "auto: CUDA is available"
        return DeviceChoice(torch.device("cuda", index), "cuda", torch.cuda.get_device_name(index), reason)
    if requested == "cuda":
        raise ValueError(f"--device cuda was asked for but CUDA is not usable: {why_not}; use --device cpu or auto")
    log.warning("no usable GPU, training on the CPU: %s", why_not)
    return DeviceChoice(torch.device("cpu"), "cpu", _cpu_name(), f"auto: falling back to the CPU ({why_not})")


def _cpu_name() -> str:
    capability = torch.backends.cpu.get_cpu_capability()
    return f"CPU ({capability}, {torch.get_num_threads()} threads)"


def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str, kind: str) -> str:
    """`auto|fp32|bf16|fp16` -> the precision to train in on a device of this kind."""
    if requested not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, not {requested!r}")
    if requested == "fp16" and kind != "cuda":
        raise ValueError("--precision fp16 needs a CUDA device (its gradient scaler is CUDA-only); use bf16 or fp32")
    if requested == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bf16; use --precision fp16 or fp32")
    if requested != "auto":
        return requested
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(kind: str, precision: str):
    """The autocast context for a forward pass; fp32 is a no-op."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=kind, dtype=dtype)


def grad_scaler(kind: str, precision: str) -> torch.amp.GradScaler:
    """A loss scaler for fp16 (on CUDA); disabled, i.e. a pass-through, otherwise."""
    return torch.amp.GradScaler(kind, enabled=precision == "fp16")

"""onnxruntime execution providers and sessions: the one place that chooses a device and opens a graph.

`choose_device` turns the service's `auto | cpu | cuda` setting into a device (and says why CUDA is
not used); `session_providers` gives that device's provider list, CPU last as the fallback;
`choose_providers` checks an explicit provider list against what onnxruntime offers; `create_session`
opens a graph with the settings every caller shares (all graph optimisations, one inter-op thread).
"""

from __future__ import annotations

from pathlib import Path

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")


def available_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - onnxruntime is a serve dependency
        return []
    return list(onnxruntime.get_available_providers())


def choose_device(requested: str, available: list[str] | None = None) -> tuple[str, str | None]:
    """("cuda" | "cpu", why CUDA is not used or None). `requested` is auto | cpu | cuda."""
    if requested not in DEVICES:
        raise ValueError(f"provider must be auto, cpu or cuda; got {requested!r}")
    if requested == "cpu":
        return "cpu", None
    if CUDA in (available_providers() if available is None else available):
        return "cuda", None
    return "cpu", "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu on a machine with a GPU)"


def session_providers(device: str) -> list[str]:
    return [CUDA, CPU] if device == "cuda" else [CPU]


def choose_providers(requested: list[str] | None) -> list[str]:
    """`requested` checked against onnxruntime's providers; None = CUDA when present, else CPU."""
    available = available_providers()
    if requested is None:
        return session_providers(choose_device("auto", available)[0])
    if not requested:
        raise ValueError("providers must name at least one execution provider")
    unknown = [p for p in requested if p not in available]
    if unknown:
        raise ValueError(f"execution provider(s) {', '.join(unknown)} not available; available: {', '.join(available)}")
    return list(requested)


def create_session(model_path: Path, providers: list[str], intra_op_threads: int | None = None):
    """An onnxruntime session; RuntimeError with onnxruntime's first line when the graph cannot load."""
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
        raise RuntimeError(f"{model_path} cannot be loaded by onnxruntime: {first_line}") from err

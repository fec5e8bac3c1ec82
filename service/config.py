"""Service settings: one class read from `BERTKIT_*` environment variables (or a `.env` file).

Example: `BERTKIT_BUNDLES=bundles/sst2,bundles/conll BERTKIT_MAX_BATCH_TOKENS=8192 uvicorn service.main:app`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_list(value):
    """Accept a JSON list or a comma-separated string (`a,b,c`) for list settings."""
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            import json

            return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BERTKIT_", env_file=".env", extra="ignore")

    # --- what to serve -----------------------------------------------------------------------
    bundles: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Bundle directories to serve (comma-separated in the environment). A directory that holds "
        "several precision variants of one model (sub-directories with a bundle.json each) is resolved to the "
        "variant that suits the execution provider.",
    )
    provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Execution provider. auto = CUDA when onnxruntime-gpu sees a GPU, else CPU. A CUDA provider "
        "that fails to start falls back to CPU with one log line.",
    )
    precision: Literal["auto", "fp32", "int8", "fp16"] = Field(
        "auto",
        description="Which variant to pick from a multi-variant directory: auto = fp16 on CUDA, int8 on CPU "
        "(then fp32 when the preferred one is missing).",
    )
    backend_workers: int | None = Field(
        None,
        ge=1,
        description="Batches of one model run at the same time, each on its own thread (one onnxruntime session, "
        "concurrent runs). On a CPU two single-threaded runs keep two cores busy without the per-operator "
        "hand-offs of one run split over two threads, and one batch is padded and post-processed while the other "
        "runs. Default: 2 on CPU, 1 on CUDA.",
    )
    intra_op_threads: int | None = Field(
        None,
        ge=1,
        description="onnxruntime intra-op threads per run. More threads cut the latency of one big batch but "
        "compete with tokenization and the event loop for cores; default = (all cores but one) / backend_workers, "
        "at least 1.",
    )
    tokenizer_threads: int = Field(
        2, ge=1, description="Threads that tokenize requests off the event loop (Rust tokenizers release the GIL)."
    )

    # --- model store: models loaded on first use, new versions swapped in without a restart ---
    model_store: Path | None = Field(
        None,
        description="A directory of models, `NAME/VERSION/` (the highest VERSION by natural sort: 1 < 2 < 10) or "
        "`NAME/` (one unversioned bundle). Each loads on its first request and a newer version replaces it on "
        "`POST /v1/models/NAME/reload` or the next poll. Bundles from `bundles` stay loaded besides.",
    )
    max_loaded_models: int | None = Field(
        None,
        ge=1,
        description="Most model-store models loaded at once; loading one more unloads the least recently used. "
        "Fewer = less memory, but a request for an unloaded model waits for its load (and warm-up). None = no limit.",
    )
    max_loaded_model_bytes: int | None = Field(
        None,
        ge=1,
        description="Memory budget of the model-store models, estimated as the sum of their model.onnx sizes; "
        "the least recently used are unloaded until the rest fit (one model alone always loads). None = no limit.",
    )
    model_store_poll_s: float = Field(
        0.0,
        ge=0,
        description="Every this many seconds, look for new versions in the model store and swap them in (a "
        "directory listing and a stat per file; a version is only loaded when it changed). 0 = off: only "
        "`POST /v1/models/NAME/reload` swaps.",
    )

    # --- batching: each knob trades latency for throughput -------------------------------------
    max_batch_tokens: int = Field(
        16384,
        ge=1,
        description="Token budget of one batch, counted as the backend pays for it: longest sequence x batch "
        "size, padding included. Larger = fewer, bigger matmuls (throughput) but longer per-batch latency and "
        "more memory. Must be at least the longest bundle's max_seq_len or long inputs run alone.",
    )
    max_batch_size: int = Field(
        64,
        ge=1,
        description="Most sequences in one batch. 1 turns batching off (lowest single-request latency at idle, "
        "far lower throughput under load).",
    )
    max_wait_ms: float | None = Field(
        None,
        ge=0,
        description="While the backend is busy, seal the next batch after this long (or as soon as it is full) "
        "so it is ready the moment the backend frees. Never delays a request when the backend is idle. "
        "None = keep topping the next batch up until the backend frees (fullest batches); small values = "
        "earlier sealing, smaller batches.",
    )
    sort_window: int = Field(
        256,
        ge=1,
        description="How many of the oldest queued sequences are sorted by length when a batch is formed. Larger = "
        "less padding, but newer short requests may overtake older long ones within the window (the oldest "
        "entry always goes in the next batch, so nothing starves).",
    )
    batch_overhead_tokens: int | None = Field(
        None,
        ge=0,
        description="The fixed cost of running one batch, in tokens of work. A batch only takes a sequence that "
        "lowers its cost per real token, so larger values = fuller batches with more padding (good when a run's "
        "fixed cost dominates, e.g. GPUs); smaller = tighter length groups, less padding (CPUs, where a "
        "MiniLM batch costs ~2 tokens of work plus ~0.2 ms per padded token, so padding is pure loss). "
        "Default: 16 on CPU, 128 on CUDA.",
    )
    max_queue_requests: int = Field(
        4096,
        ge=1,
        description="Most sequences waiting per model; beyond it requests get 429 + Retry-After. Larger absorbs "
        "bursts but lets latency grow without bound under overload.",
    )
    max_queue_tokens: int = Field(
        1_048_576,
        ge=1,
        description="Most tokens waiting per model (unpadded); the same trade-off as max_queue_requests, counted "
        "in work rather than requests.",
    )
    max_queue_ms: float | None = Field(
        1000.0,
        gt=0,
        description="Longest queueing a request is admitted to: before tokenizing a request, the work queued ahead "
        "of it (padded tokens plus each batch's overhead, as batches count it) is divided by the measured "
        "throughput, and over this it gets 429 + Retry-After at once. Smaller = lower, steadier latency of "
        "accepted requests and earlier 429s that let a load balancer retry elsewhere, but a burst the queue "
        "could have absorbed is partly refused; larger = fewer 429s, longer waits. A request's own inputs do "
        "not count against it, so large requests are not starved by small ones. None = only the "
        "max_queue_requests / max_queue_tokens caps.",
    )
    early_retry_hold_ms: float = Field(
        1000.0,
        ge=0,
        description="A connection that sends a request to an overloaded model before the Retry-After of its last "
        "429 has passed gets its next 429 only when that Retry-After ends, held at most this long. A client that "
        "ignores Retry-After (wrk, a retry loop without back-off) otherwise turns refusals into a busy loop that "
        "takes CPU from inference; a client that honours it never waits. Only refusals are held: an early request "
        "the model has room for is admitted at once. Connections are told apart by client address and port, so "
        "behind a proxy that multiplexes clients over few connections, set 0 (never hold).",
    )

    loop_lag_factor: float = Field(
        2.0,
        ge=0,
        description="Event-loop lags a request is expected to wait on top of the model's queue: admission refuses "
        "when the queue wait plus this many times the measured event-loop lag (how late a 10 ms timer fires, "
        "smoothed over ~0.5 s) is over max_queue_ms, and Retry-After counts it too. Under thousands of "
        "connections a request waits for the loop before it is read and again before its answer is written; "
        "without this the p99 of accepted requests is max_queue_ms plus those waits. Only counted while work "
        "is queued ahead (a request to an idle model is always admitted). 0 = count the model queue only.",
    )

    # --- request limits ------------------------------------------------------------------------
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Largest request body; larger bodies get 413.")
    max_inputs_per_request: int = Field(256, ge=1, description="Most inputs in one request; more get 413.")
    default_timeout_ms: int | None = Field(
        30_000,
        ge=1,
        description="Deadline of a request that sets none (`timeout_ms` in the body or `X-Request-Timeout` "
        "header); past it the request gets 504 and its queued work is dropped. None = no deadline.",
    )
    max_timeout_ms: int = Field(300_000, ge=1, description="Largest deadline a client may ask for.")

    # --- operations ----------------------------------------------------------------------------
    api_key: SecretStr | None = Field(
        None, description="When set, /v1/* requires `Authorization: Bearer <key>` (compared in constant time)."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (comma-separated); `*` allows any."
    )
    warmup: bool = Field(True, description="Run warm-up batches before /ready turns true.")
    verify_bundles: bool = Field(True, description="Refuse a bundle that fails `bert verify` at start.")
    drain_timeout_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish before exit."
    )
    keep_alive_timeout_s: int = Field(
        75,
        ge=1,
        description="How long `bert serve` keeps an idle keep-alive connection open (uvicorn's timeout_keep_alive). "
        "The server should be the last to close an idle connection: a client or proxy that reuses one just as the "
        "server closes it gets a reset (httpx ReadError, a proxy's 502), so this exceeds the idle timeouts in front "
        "of it (httpx 5 s, nginx upstream keepalive 60 s, AWS ALB 60 s). Longer = more idle connections held open "
        "(a file descriptor and a few KB each); uvicorn's own 5 s reset about 1 request in 1,300 of a saturating "
        "256-connection burst.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    opentelemetry: bool = Field(
        False,
        description="FastAPI's built-in OpenTelemetry instrumentation (spans, metrics and logs sent to the "
        "OpenTelemetry providers the process configures; FastAPI >= 0.165). Off by default: its check for "
        "providers costs CPU on every request, and /metrics already serves Prometheus metrics.",
    )

    @field_validator("bundles", "cors_origins", mode="before")
    @classmethod
    def _lists(cls, value):
        return _split_list(value)

    @model_validator(mode="after")
    def _check(self) -> ServiceSettings:
        if self.default_timeout_ms is not None and self.default_timeout_ms > self.max_timeout_ms:
            raise ValueError("default_timeout_ms must not exceed max_timeout_ms")
        return self

"""`bert pretrain`'s settings: one dataclass, from which the command line is generated."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from training.device import DEVICES, PRECISIONS


@dataclass
class PretrainSettings:
    data: str = field(
        metadata={"help": "prepared training data (`bert data pretraining`); the objective it was built for is trained"}
    )
    out: str = field(metadata={"help": "run directory: checkpoints, metrics.jsonl, run.json, final model"})
    model_config: str | None = field(
        default=None,
        metadata={"help": "preset (tiny, mini, small, medium, base, large) or a config.json path; default mini"},
    )
    init: str | None = field(
        default=None,
        metadata={
            "help": "start from this checkpoint directory (ours or Hugging Face); missing MLM/NSP heads get BERT's "
            "initialisation from --seed, the MLM decoder tied to the word embeddings"
        },
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "prepared held-out directory for periodic evaluation"}
    )
    max_steps: int = field(default=1000, metadata={"help": "optimizer steps in the whole run"})
    batch_size: int = field(default=32, metadata={"help": "sequences per micro-batch per process"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches accumulated per optimizer step"})
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate"})
    warmup: float = field(default=0.01, metadata={"help": "warmup steps; a value below 1 is a fraction of --max-steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases or LayerNorm)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "clip the gradient norm to this; 0 disables clipping"})
    precision: str = field(
        default="auto",
        metadata={"help": "auto = bf16 where the hardware has native bf16, else fp32; fp16 is CUDA-only",
                  "choices": PRECISIONS},
    )  # fmt: skip
    device: str = field(
        default="auto", metadata={"help": "auto takes CUDA when usable, else the CPU", "choices": DEVICES}
    )
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (slow start, faster steps)"})
    seed: int = field(default=0, metadata={"help": "seed of the weight init, dropout and the data order"})
    log_every: int = field(default=10, metadata={"help": "write a train record to metrics.jsonl every N steps"})
    eval_every: int = field(default=500, metadata={"help": "evaluate on --eval-data every N steps (and at the end)"})
    eval_batches: int = field(
        default=50, metadata={"help": "batches of --batch-size per evaluation; 0 = the whole set"}
    )
    save_every: int = field(default=1000, metadata={"help": "write a checkpoint every N steps (and at the end)"})
    keep: int = field(default=3, metadata={"help": "checkpoints kept (the newest)"})
    prefetch: int = field(
        default=4, metadata={"help": "optimizer steps of batches prepared ahead in a background thread"}
    )
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in --out"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


def validate(s: PretrainSettings) -> None:
    for name in ("max_steps", "batch_size", "grad_accum", "log_every", "eval_every", "save_every", "keep"):
        if getattr(s, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(s, name)}")
    if s.lr <= 0 or s.warmup < 0 or s.weight_decay < 0 or s.max_grad_norm < 0:
        raise ValueError("--lr must be positive; --warmup, --weight-decay and --max-grad-norm non-negative")
    if s.init and s.model_config:
        raise ValueError("pass either --init (continue from a checkpoint) or --model-config (start fresh), not both")
    for name in ("data", "eval_data", "init"):
        value = getattr(s, name)
        if value and not Path(value).is_dir():
            raise FileNotFoundError(f"--{name.replace('_', '-')} {value} is not a directory")

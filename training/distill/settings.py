"""Settings of `bert distill`: every `bert finetune` option (same name, same default), `--teacher`
in place of `--model`, and the student, loss, cache and resume options."""

from __future__ import annotations

from dataclasses import dataclass, field

from training.finetune.settings import FinetuneSettings, _f

STUDENT_PRESETS = ("tiny", "mini", "small")


def parse_layer_map(text: str | None) -> list[int] | None:
    """'0,2,4' -> [0, 2, 4]; None stays None."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--layer-map {text!r} is not a comma-separated list of layer numbers") from None


@dataclass(kw_only=True)
class DistillSettings(FinetuneSettings):
    teacher: str = field(metadata={"help": "the fine-tuned teacher: a `bert finetune` output directory"})
    model: str = field(default="", metadata={"cli": False, "help": "set to --teacher (finetune's --model)"})
    # --- the student ---
    student_layers: int | None = _f(
        None, "student = the teacher's width with this many of its layers (copied; see --layer-map)"
    )
    layer_map: str | None = _f(
        None,
        "with --student-layers: the teacher layers to copy, 0-based, comma-separated "
        "(default: evenly spaced ending at the top layer, 6 -> 3 takes 1,3,5)",
    )
    student_config: str | None = _f(
        None,
        "student shape: tiny (2x128), mini (4x256), small (4x512) or an HF config.json; vocabulary, "
        "positions and labels are always the teacher's",
    )
    student_init: str | None = _f(
        None, "with --student-config: start from this HF BERT checkpoint (same vocabulary) instead of random"
    )
    # --- the losses ---
    temperature: float = _f(2.0, "softmax temperature of the soft targets; the KD loss is scaled by T^2")
    alpha: float = _f(0.5, "loss = alpha * KD + (1 - alpha) * hard-label loss")
    hidden_weight: float = _f(
        0.0,
        "weight of the MSE between student and (mapped) teacher hidden states, TinyBERT style; "
        "runs the teacher on the fly (hidden states are not cached)",
    )
    attention_weight: float = _f(
        0.0, "weight of the MSE between attention maps of mapped layers; runs the teacher on the fly"
    )
    unlabeled: str | None = _f(
        None, "classify: extra texts, one a line, labelled by the teacher and trained on with the KD loss only"
    )
    # --- teacher outputs cache and resume ---
    cache_dir: str | None = _f(None, "where teacher outputs are cached (default: OUT/teacher-cache)")
    cache: bool = _f(True, "cache the teacher's outputs on disk; --no-cache runs the teacher in every training batch")
    save_every: int = _f(200, "write a resumable checkpoint under OUT/checkpoints every this many steps; 0 = never")
    resume: bool = _f(False, "continue from the latest checkpoint under OUT/checkpoints")

    def __post_init__(self) -> None:
        self.model = self.teacher
        super().__post_init__()
        if (self.student_layers is None) == (self.student_config is None):
            raise ValueError("give one of --student-layers N or --student-config tiny|mini|small|FILE")
        if self.student_layers is not None and self.student_layers < 1:
            raise ValueError("--student-layers must be at least 1")
        if self.layer_map is not None and self.student_layers is None:
            raise ValueError("--layer-map goes with --student-layers")
        if self.student_init is not None and self.student_config is None:
            raise ValueError("--student-init goes with --student-config")
        parse_layer_map(self.layer_map)
        if self.temperature <= 0:
            raise ValueError("--temperature must be positive")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("--alpha must be between 0 and 1")
        if self.hidden_weight < 0 or self.attention_weight < 0:
            raise ValueError("--hidden-weight and --attention-weight must not be negative")
        if self.unlabeled and self.task != "classify":
            raise ValueError(f"--unlabeled works for classify only, not {self.task}")
        if self.save_every < 0:
            raise ValueError("--save-every must not be negative")

    @property
    def needs_teacher_internals(self) -> bool:
        """Intermediate-layer losses need the teacher's hidden states: it runs in every batch."""
        return self.hidden_weight > 0 or self.attention_weight > 0

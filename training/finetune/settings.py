"""Settings of `bert finetune`: one dataclass; the CLI is generated from it (core/args.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.providers import DEVICES

TASKS = ("classify", "ner", "qa")
DEFAULT_MAX_SEQ_LEN = {"classify": 128, "ner": 128, "qa": 384}
DEFAULT_STRIDE = {"ner": 32, "qa": 128}
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


def _f(default, help: str, **meta):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class FinetuneSettings:
    task: str = field(metadata={"help": "classify | ner | qa", "choices": TASKS})
    model: str = field(metadata={"help": "HF BERT directory, our fine-tuned model or a pretraining run directory"})
    train: str = field(metadata={"help": "training file: CSV/TSV/JSONL (classify), CoNLL/JSONL (ner), SQuAD JSON (qa)"})
    out: str = field(metadata={"help": "output directory: HF-layout model + tokenizer + task.json + metrics.json"})
    eval: str | None = _f(None, "evaluation file (same format); evaluated after each epoch, best epoch kept")
    # --- optimisation ---
    epochs: int = _f(3, "passes over the training data")
    lr: float = _f(5e-5, "peak learning rate of AdamW")
    batch_size: int = _f(32, "examples (windows) per optimiser step, before gradient accumulation")
    grad_accum: int = _f(1, "micro-batches accumulated per optimiser step (effective batch = batch_size * this)")
    warmup: float = _f(0.1, "linear warm-up: a fraction of all steps if < 1, else a number of steps")
    weight_decay: float = _f(0.01, "AdamW weight decay (never on biases and LayerNorm weights)")
    max_grad_norm: float = _f(1.0, "clip the gradient norm to this; 0 = no clipping")
    seed: int = _f(42, "seed for initialisation, shuffling and dropout")
    precision: str = _f("fp32", "fp32, or bf16 autocast (CPU or GPU)", choices=("fp32", "bf16"))
    early_stopping: int = _f(0, "stop after this many epochs without a better eval metric; 0 = never")
    group_by_length: bool = _f(
        False,
        "batch examples of similar length (a little faster; batches of alike examples can cost accuracy, "
        "about 1.5 entity-F1 points on CoNLL-2003 in one epoch)",
    )
    eval_batch_size: int = _f(64, "examples per batch at evaluation")
    device: str = _f("auto", "auto takes CUDA when available, else the CPU", choices=DEVICES)
    threads: int | None = _f(None, "CPU threads for torch (default: torch's choice)")
    # --- data ---
    max_seq_len: int | None = _f(None, "tokens per sequence incl. specials (default: 128, qa 384)")
    labels: list[str] | None = _f(None, "label names in output order (default: sorted from the training file)")
    strict: bool = _f(False, "fail on the first unusable example instead of skipping and reporting it")
    problem_type: str = _f("single_label_classification", "classify: label type", choices=PROBLEM_TYPES)
    text_column: str | None = _f(None, "classify: text column (default: sentence, text, text_a, ...)")
    text_pair_column: str | None = _f(None, "classify: second text column for pairs (default: sentence2, text_b, ...)")
    label_column: str = _f("label", "classify: label column")
    label_separator: str = _f(",", "classify, multi-label CSV/TSV: separator between labels in a cell")
    tag_column: int = _f(-1, "ner, CoNLL: column of the tag (0-based; -1 = last)")
    scheme: str = _f(
        "auto", "ner: tagging scheme of the files, rewritten to IOB2", choices=("auto", "iob1", "iob2", "bioes")
    )
    label_all_subtokens: bool = _f(False, "ner: train on every sub-token, not just a word's first")
    doc_stride: int | None = _f(None, "tokens shared by consecutive windows of a long input (default: ner 32, qa 128)")
    max_query_len: int = _f(64, "qa: question tokens kept")
    n_best: int = _f(20, "qa: start/end candidates per window")
    max_answer_len: int = _f(30, "qa: longest answer in tokens")
    null_threshold: float = _f(0.0, "qa, SQuAD v2.0: answer nothing when null score - best span score > this")

    def __post_init__(self) -> None:
        if self.max_seq_len is None:
            self.max_seq_len = DEFAULT_MAX_SEQ_LEN[self.task]
        if self.doc_stride is None:
            self.doc_stride = DEFAULT_STRIDE.get(self.task, 0)
        for name in ("epochs", "batch_size", "grad_accum", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.lr <= 0:
            raise ValueError("--lr must be positive")
        if not 3 <= self.max_seq_len <= 512:
            raise ValueError(f"--max-seq-len must be between 3 and 512, not {self.max_seq_len}")


def make_task(settings: FinetuneSettings):
    """The task object (reader, features, scoring) for these settings."""
    from training.tasks.classification import ClassificationTask
    from training.tasks.ner import NerTask
    from training.tasks.qa import QaTask

    labels = list(settings.labels or [])
    if settings.task == "classify":
        return ClassificationTask(
            labels=labels,
            problem_type=settings.problem_type,
            max_seq_len=settings.max_seq_len,
            text_column=settings.text_column,
            text_pair_column=settings.text_pair_column,
            label_column=settings.label_column,
            label_separator=settings.label_separator,
        )
    if settings.task == "ner":
        return NerTask(
            labels=labels,
            max_seq_len=settings.max_seq_len,
            stride=settings.doc_stride,
            label_all_subtokens=settings.label_all_subtokens,
            tag_column=settings.tag_column,
            scheme=settings.scheme,
        )
    return QaTask(
        max_seq_len=settings.max_seq_len,
        doc_stride=settings.doc_stride,
        max_query_len=settings.max_query_len,
        n_best=settings.n_best,
        max_answer_len=settings.max_answer_len,
        null_threshold=settings.null_threshold,
    )

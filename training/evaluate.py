"""`bert evaluate classify|ner|qa --model DIR_OR_BUNDLE --data FILE [--out metrics.json]`.

Scores a fine-tuned model directory (torch) or an exported ONNX bundle (onnxruntime) on one
file with the same readers, features, post-processing and metrics as `bert finetune`, so the
two can be compared on the same data:

    bert evaluate ner --model runs/conll --data conll2003/valid.txt --out fp32.json
    bert evaluate ner --model bundles/conll-int8 --data conll2003/valid.txt --out int8.json
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.args import CliError, parse_dataclass, run_cli
from core.providers import DEVICES

PROG = "bert evaluate"
HEADS = {"classify": "sequence-classification", "ner": "token-classification", "qa": "question-answering"}


@dataclass
class EvaluateSettings:
    task: str = field(metadata={"help": "classify | ner | qa", "choices": tuple(HEADS)})
    model: str = field(metadata={"help": "fine-tuned model directory (bert finetune --out) or exported bundle"})
    data: str = field(metadata={"help": "file to score, in the format the task reads"})
    out: str | None = field(default=None, metadata={"help": "write the metrics here as JSON"})
    predictions: str | None = field(
        default=None,
        metadata={"help": "write each example's prediction here as JSONL (label, word tags or answer), in file order"},
    )
    batch_size: int = field(default=64, metadata={"help": "examples per batch"})
    device: str = field(
        default="auto",
        metadata={"help": "torch models: auto takes CUDA when available, else the CPU", "choices": DEVICES},
    )
    strict: bool = field(default=False, metadata={"help": "fail on the first unusable example"})
    text_column: str | None = field(default=None, metadata={"help": "classify: text column (default: as trained)"})
    text_pair_column: str | None = field(default=None, metadata={"help": "classify: second text column"})
    label_column: str | None = field(default=None, metadata={"help": "classify: label column (default: as trained)"})
    tag_column: int | None = field(default=None, metadata={"help": "ner: CoNLL tag column (default: as trained)"})
    scheme: str | None = field(
        default=None, metadata={"help": "ner: auto|iob1|iob2|bioes", "choices": ("auto", "iob1", "iob2", "bioes")}
    )
    null_threshold: float | None = field(default=None, metadata={"help": "qa v2.0: null-answer threshold"})
    max_answer_len: int | None = field(default=None, metadata={"help": "qa: longest answer in tokens"})


def _task_from_info(info: dict, settings: EvaluateSettings):
    from core.inference.ner import default_stride
    from core.inference.qa import QaWindows
    from training.tasks.classification import ClassificationTask
    from training.tasks.ner import NerTask
    from training.tasks.qa import QaTask

    head = info.get("task")
    if head != HEADS[settings.task]:
        raise CliError(f"{settings.model} is a {head} model, not for `{settings.task}`")
    max_len = int(info.get("max_seq_len") or 512)
    if head == "sequence-classification":
        return ClassificationTask(
            labels=list(info.get("labels") or []),
            problem_type=info.get("problem_type") or "single_label_classification",
            max_seq_len=max_len,
            text_column=settings.text_column or info.get("text_column"),
            text_pair_column=settings.text_pair_column or info.get("text_pair_column"),
            label_column=settings.label_column or info.get("label_column") or "label",
        )
    if head == "token-classification":
        return NerTask(
            labels=list(info.get("labels") or []),
            max_seq_len=max_len,
            stride=int(info.get("doc_stride") or default_stride(max_len)),  # the service's default too
            tag_column=settings.tag_column if settings.tag_column is not None else int(info.get("tag_column", -1)),
            scheme=settings.scheme or info.get("scheme") or "auto",
        )
    windows = QaWindows.from_task_config(max_len, info)  # as the service cuts the model's inputs
    return QaTask(
        max_seq_len=max_len,
        doc_stride=windows.doc_stride,
        max_query_len=windows.max_query_len,
        n_best=int(info.get("n_best") or 20),
        max_answer_len=settings.max_answer_len or int(info.get("max_answer_len") or 30),
        null_threshold=settings.null_threshold
        if settings.null_threshold is not None
        else info.get("null_threshold", 0.0),
    )


def _model_info(directory: Path) -> dict:
    """task.json, or (for a model fine-tuned elsewhere) what config.json says."""
    task_file = directory / "task.json"
    if task_file.exists():
        return json.loads(task_file.read_text(encoding="utf-8"))
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    arch = (config.get("architectures") or [""])[0]
    head = {
        "BertForSequenceClassification": "sequence-classification",
        "BertForTokenClassification": "token-classification",
        "BertForQuestionAnswering": "question-answering",
    }.get(arch)
    if head is None:
        raise CliError(f"{directory} has no task.json and its config.json names no task head ({arch!r})")
    id2label = config.get("id2label") or {}
    return {
        "task": head,
        "labels": [id2label[k] for k in sorted(id2label, key=int)],
        "problem_type": config.get("problem_type"),
        "max_seq_len": config.get("max_position_embeddings", 512),
    }


def load_backend(settings: EvaluateSettings):
    """(task, tokenizer, backend, kind) for a bundle directory or a model directory."""
    from core.bundle import is_bundle, load_bundle
    from training.finetune.predictor import TorchBackend

    path = Path(settings.model)
    if not path.exists():
        raise FileNotFoundError(f"model {path} does not exist")
    if is_bundle(path):
        bundle = load_bundle(path)
        # task.json settings (doc_stride, text columns, tag scheme...) travel under task_config;
        # the manifest's own fields (task, labels, max_seq_len) win where both have a value.
        info = {**bundle.manifest.task_config, **bundle.manifest.raw}
        task = _task_from_info(info, settings)
        return task, bundle.tokenizer, bundle, f"bundle ({bundle.precision})"
    import torch

    from model import load_pretrained
    from model.tokenizer import load_tokenizer
    from training.finetune.model_dir import resolve_model_dir

    directory = resolve_model_dir(path)
    task = _task_from_info(_model_info(directory), settings)
    model = load_pretrained(directory, head=task.head)
    labels = list(model.config.labels)
    if task.head != "question-answering" and not task.labels:
        task.labels = labels
    device = settings.device if settings.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    return task, load_tokenizer(directory), TorchBackend(model, device), "torch"


def evaluate(settings: EvaluateSettings) -> dict:
    from core.bundle import TOKEN_LEVEL_TASKS
    from training.finetune.predictor import predict_features

    task, tokenizer, backend, kind = load_backend(settings)
    examples, problems = task.read(settings.data, for_training=False)
    if hasattr(task, "drop_unknown_labels"):
        examples = task.drop_unknown_labels(examples, problems)
    problems.raise_if(settings.strict)
    problems.report(len(examples))
    if not examples:
        raise ValueError(f"{settings.data}: no usable examples ({len(problems)} skipped)")
    features = task.features(examples, tokenizer)
    started = time.perf_counter()
    token_level = task.head in TOKEN_LEVEL_TASKS
    outputs = predict_features(backend, features, tokenizer.pad_id, token_level, settings.batch_size)
    seconds = time.perf_counter() - started
    metrics = task.score(examples, features, outputs)
    if settings.predictions:
        write_predictions(Path(settings.predictions), task, examples, features, outputs)
    metrics.update(
        {
            "model": str(settings.model),
            "runtime": kind,
            "data": str(settings.data),
            "skipped": len(problems),
            "predict_seconds": seconds,
            "main_metric": task.main_metric,
        }
    )
    if settings.out:
        out = Path(settings.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        if metrics.get("confusion_matrix") is not None:
            from training.metrics.classification import plot_confusion_matrix

            plot_confusion_matrix(metrics["confusion_matrix"], task.labels, out.with_suffix(".png"))
    return metrics


def write_predictions(path: Path, task, examples, features, outputs) -> None:
    """One JSON line per example: {"prediction": ...}, plus "id" for QA (what the service answers for it)."""
    predicted = task.predictions(examples, features, outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i, example in enumerate(examples):
            if isinstance(predicted, dict):  # QA: answers by question id
                row = {"id": example.id, "prediction": predicted[example.id]}
            else:
                row = {"index": i, "prediction": predicted[i]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    def run() -> int:
        settings = parse_dataclass(
            EvaluateSettings, argv, PROG, description=__doc__.splitlines()[0], positional=("task",)
        )
        metrics = evaluate(settings)
        shown = [
            k
            for k in (
                "accuracy",
                "macro_f1",
                "f1",
                "mcc",
                "precision",
                "recall",
                "exact_match",
                "micro_f1",
                "pearson",
                "mse",
            )
            if k in metrics
        ]
        print(
            f"{settings.model} ({metrics['runtime']}) on {settings.data}: "
            + ", ".join(f"{k} {metrics[k]:.4f}" for k in shown)
        )
        return 0

    return run_cli(run, PROG)


if __name__ == "__main__":
    sys.exit(main())

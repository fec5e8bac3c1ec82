"""What a model directory holds: its task, labels, sequence limit and tokenizer.

A fine-tuned directory says so in `task.json`; any other Hugging Face BERT directory is read
from `config.json`'s `architectures`: a classification/NER/QA head exports as that task,
BertForPreTraining / BertForMaskedLM as fill-mask, BertModel as mean-pooled embeddings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.config import BertConfig
from model.tokenizer import BertTokenizer, load_tokenizer

# task name -> head passed to model.load_pretrained
TASK_HEADS: dict[str, str | None] = {
    "sequence-classification": "sequence-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
    "fill-mask": "pretraining",
    "embedding": None,
}
# spellings accepted in task.json (the fine-tune CLI's names and HF pipeline names)
TASK_ALIASES: dict[str, str] = {
    "classify": "sequence-classification",
    "classification": "sequence-classification",
    "text-classification": "sequence-classification",
    "ner": "token-classification",
    "token-classification": "token-classification",
    "qa": "question-answering",
    "question-answering": "question-answering",
    "sequence-classification": "sequence-classification",
    "fill-mask": "fill-mask",
    "mlm": "fill-mask",
    "pretraining": "fill-mask",
    "embedding": "embedding",
    "embeddings": "embedding",
    "feature-extraction": "embedding",
}
ARCHITECTURE_TASKS: dict[str, str] = {
    "BertForSequenceClassification": "sequence-classification",
    "BertForTokenClassification": "token-classification",
    "BertForQuestionAnswering": "question-answering",
    "BertForPreTraining": "fill-mask",
    "BertForMaskedLM": "fill-mask",
    "BertModel": "embedding",
}


class SourceError(ValueError):
    """The model directory cannot be exported; the message says which file and why."""


@dataclass
class ModelSource:
    directory: Path
    task: str  # one of TASK_HEADS
    labels: list[str] | None  # class / tag names in output order; None for QA, fill-mask, embedding
    problem_type: str | None
    max_seq_len: int
    config: BertConfig
    hf_config: dict[str, Any]  # config.json as written
    tokenizer: BertTokenizer
    task_info: dict[str, Any]  # task.json, or {} when the task was inferred

    @property
    def head(self) -> str | None:
        return TASK_HEADS[self.task]


def read_source(model_dir: str | Path, max_seq_len: int | None = None) -> ModelSource:
    from training.finetune.model_dir import resolve_model_dir, resolve_tokenizer_dir

    given = Path(model_dir)
    if not given.is_dir():
        raise SourceError(f"{given} is not a directory")
    try:  # a run directory (checkpoints below it) resolves to its final / best / latest model
        directory = resolve_model_dir(given)
        tokenizer_dir = resolve_tokenizer_dir(directory, given)
    except FileNotFoundError as err:
        raise SourceError(str(err)) from err
    config_path = directory / "config.json"
    try:
        hf_config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SourceError(f"{config_path} is not valid JSON: {err}") from err
    config = BertConfig.from_hf_dict(hf_config)
    task_info = _read_task_json(directory)
    task = _task(directory, hf_config, task_info)
    labels = _labels(task, task_info, config, directory)
    problem_type = None
    if task == "sequence-classification":
        problem_type = task_info.get("problem_type") or config.problem_type or "single_label_classification"
        if problem_type == "regression" and labels is None:
            labels = ["score"]
    try:
        tokenizer = load_tokenizer(tokenizer_dir)
    except (OSError, ValueError) as err:
        raise SourceError(f"cannot load the tokenizer in {tokenizer_dir}: {err}") from err
    limit = _max_seq_len(tokenizer_dir, task_info, config, max_seq_len)
    return ModelSource(directory, task, labels, problem_type, limit, config, hf_config, tokenizer, task_info)


def _read_task_json(directory: Path) -> dict[str, Any]:
    path = directory / "task.json"
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SourceError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(info, dict):
        raise SourceError(f"{path} must hold a JSON object")
    return info


def _task(directory: Path, hf_config: dict, task_info: dict) -> str:
    if "task" in task_info:
        name = str(task_info["task"])
        if name not in TASK_ALIASES:
            raise SourceError(f"{directory / 'task.json'}: unknown task {name!r}; expected one of {sorted(TASK_HEADS)}")
        return TASK_ALIASES[name]
    architectures = hf_config.get("architectures") or ["BertModel"]
    for arch in architectures:
        if arch in ARCHITECTURE_TASKS:
            return ARCHITECTURE_TASKS[arch]
    raise SourceError(
        f"{directory / 'config.json'}: architectures {architectures} are not supported; "
        f"expected one of {sorted(ARCHITECTURE_TASKS)} (or add a task.json)"
    )


def _labels(task: str, task_info: dict, config: BertConfig, directory: Path) -> list[str] | None:
    if task not in ("sequence-classification", "token-classification"):
        return None
    labels = task_info.get("labels") or list(config.labels)
    if not labels:
        return None  # decided from the weights once the model is loaded
    if not all(isinstance(x, str) for x in labels) or len(set(labels)) != len(labels):
        raise SourceError(f"{directory}: labels must be distinct strings, got {labels}")
    return list(labels)


def _max_seq_len(directory: Path, task_info: dict, config: BertConfig, requested: int | None) -> int:
    limit = config.max_position_embeddings
    if requested is not None:
        if not 3 <= requested <= limit:
            raise SourceError(f"max_seq_len must be between 3 and max_position_embeddings ({limit}); got {requested}")
        return requested
    if isinstance(task_info.get("max_seq_len"), int):
        return min(task_info["max_seq_len"], limit)
    tokenizer_config = directory / "tokenizer_config.json"
    if tokenizer_config.exists():
        try:
            value = json.loads(tokenizer_config.read_text(encoding="utf-8")).get("model_max_length")
        except (OSError, json.JSONDecodeError):
            value = None
        if isinstance(value, int) and 3 <= value:
            return min(value, limit)
    return limit

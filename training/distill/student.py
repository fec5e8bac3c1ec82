"""The student: a copy of some of the teacher's layers, or a smaller configuration.

`--student-layers N` keeps the teacher's width and copies its embeddings, N of its layers (see
`default_layer_map`), its pooler and its task head. `--student-config` builds a narrower model
(a preset or an HF config.json) with the teacher's vocabulary, positions and labels, initialised
randomly or from `--student-init`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from torch import nn

from model import BertConfig, build_model, load_pretrained
from model.tokenizer import load_tokenizer
from training.finetune.model_dir import resolve_model_dir, resolve_tokenizer_dir

PRESET_SHAPES = {"tiny": "tiny", "mini": "mini", "small": "small"}  # names of model/config.py presets
_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")


def default_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spaced teacher layers ending at the top one: 6 -> 3 takes [1, 3, 5], 6 -> 2 takes [2, 5]."""
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def check_layer_map(layer_map: list[int], teacher_layers: int, student_layers: int) -> None:
    if len(layer_map) != student_layers:
        raise ValueError(f"--layer-map names {len(layer_map)} layers but the student has {student_layers}")
    outside = [i for i in layer_map if not 0 <= i < teacher_layers]
    if outside:
        raise ValueError(
            f"--layer-map: layer {outside[0]} is out of range; the teacher has layers 0..{teacher_layers - 1}"
        )


def student_from_teacher(teacher: nn.Module, layer_map: list[int]) -> nn.Module:
    """The teacher's width with `layer_map`'s layers copied; embeddings, pooler and head copied too."""
    config = teacher.config.replace(num_hidden_layers=len(layer_map))
    student = build_model(config, teacher.head_name, getattr(teacher, "num_labels", None))
    source = teacher.state_dict()
    copied = {}
    for name in student.state_dict():
        match = re.match(r"^bert\.layers\.(\d+)\.(.*)$", name)
        teacher_name = f"bert.layers.{layer_map[int(match.group(1))]}.{match.group(2)}" if match else name
        copied[name] = source[teacher_name].detach().clone()
    student.load_state_dict(copied)
    return student


def student_config(spec: str, teacher_config: BertConfig) -> BertConfig:
    """A preset name or an HF config.json, with the teacher's vocabulary, positions, segments and labels."""
    if spec in PRESET_SHAPES:
        config = BertConfig.preset(PRESET_SHAPES[spec])
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"--student-config {spec}: neither tiny, mini, small nor a config.json file")
        config = BertConfig.from_json_file(path)
    return config.replace(
        vocab_size=teacher_config.vocab_size,
        max_position_embeddings=teacher_config.max_position_embeddings,
        type_vocab_size=teacher_config.type_vocab_size,
        pad_token_id=teacher_config.pad_token_id,
        labels=teacher_config.labels,
        problem_type=teacher_config.problem_type,
    )


def student_from_config(teacher: nn.Module, spec: str, init_dir: str | None, teacher_tokenizer) -> nn.Module:
    """A `spec`-shaped student, BERT-initialised (seeded by the caller) or loaded from `init_dir`."""
    config = student_config(spec, teacher.config)
    num_labels = getattr(teacher, "num_labels", None)
    if init_dir is None:
        return build_model(config, teacher.head_name, num_labels)
    directory = resolve_model_dir(init_dir)
    check_init_checkpoint(directory, init_dir, teacher.config, teacher_tokenizer)
    # every field overridden: the checkpoint's weights must fit the --student-config shape exactly
    return load_pretrained(
        directory,
        head=teacher.head_name,
        num_labels=num_labels,
        allow_new_heads=True,
        config_overrides=dataclasses.asdict(config),
    )


def check_init_checkpoint(directory: Path, given: str, teacher_config: BertConfig, teacher_tokenizer) -> None:
    """Refuse a --student-init whose vocabulary or (fine-tuned) label set differs from the teacher's."""
    config = BertConfig.from_json_file(directory / "config.json")
    if config.vocab_size != teacher_config.vocab_size:
        raise ValueError(
            f"--student-init {given}: vocabulary of {config.vocab_size} tokens, the teacher's has "
            f"{teacher_config.vocab_size}; the student must share the teacher's vocabulary"
        )
    tokenizer = load_tokenizer(resolve_tokenizer_dir(directory, given))
    if tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        raise ValueError(f"--student-init {given}: its vocabulary file differs from the teacher's")
    labels = list(config.labels)
    task_file = directory / "task.json"
    if task_file.exists():
        labels = json.loads(task_file.read_text(encoding="utf-8")).get("labels") or labels
    fine_tuned = task_file.exists() or any(not _DEFAULT_LABEL.match(name) for name in labels)
    if fine_tuned and labels and labels != list(teacher_config.labels):
        raise ValueError(
            f"--student-init {given} is fine-tuned on labels {labels}, the teacher on {list(teacher_config.labels)}"
        )


def describe_student(student: nn.Module) -> dict:
    config = student.config
    return {
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "parameters": sum(p.numel() for p in student.parameters()),
    }


def hidden_projections(student_config: BertConfig, teacher_config: BertConfig, count: int) -> nn.ModuleList:
    """One Linear student_width -> teacher_width per mapped layer (TinyBERT); identities when widths match."""
    if student_config.hidden_size == teacher_config.hidden_size:
        return nn.ModuleList(nn.Identity() for _ in range(count))
    projections = nn.ModuleList(nn.Linear(student_config.hidden_size, teacher_config.hidden_size) for _ in range(count))
    for projection in projections:
        nn.init.normal_(projection.weight, std=teacher_config.initializer_range)
        nn.init.zeros_(projection.bias)
    return projections

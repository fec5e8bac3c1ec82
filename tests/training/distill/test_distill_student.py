"""A student made from the teacher copies exactly the chosen layers, the embeddings, pooler and head."""

from __future__ import annotations

import pytest
import torch

from model import build_model
from training.distill.student import check_layer_map, default_layer_map, student_config, student_from_teacher


def test_default_layer_map_is_evenly_spaced_and_ends_at_the_top():
    assert default_layer_map(6, 3) == [1, 3, 5]
    assert default_layer_map(6, 2) == [2, 5]
    assert default_layer_map(12, 4) == [2, 5, 8, 11]
    assert default_layer_map(4, 4) == [0, 1, 2, 3]


@pytest.mark.parametrize("head", ["sequence-classification", "token-classification", "question-answering"])
@pytest.mark.parametrize("layer_map", [default_layer_map(6, 3), [0, 2, 4], [5]])
def test_student_copies_the_mapped_layers_and_everything_else(tiny_config, head, layer_map):
    torch.manual_seed(0)
    teacher = build_model(tiny_config.replace(num_hidden_layers=6, labels=("a", "b", "c")), head, 3)
    student = student_from_teacher(teacher, layer_map)
    assert student.config.num_hidden_layers == len(layer_map) and student.config.labels == ("a", "b", "c")
    source = teacher.state_dict()
    copied = student.state_dict()
    for name, tensor in copied.items():
        if name.startswith("bert.layers."):
            index, rest = name.removeprefix("bert.layers.").split(".", 1)
            name = f"bert.layers.{layer_map[int(index)]}.{rest}"
        assert torch.equal(tensor, source[name]), name
    heads = [n for n in copied if not n.startswith("bert.layers.")]
    assert any(n.startswith("bert.embeddings.") for n in heads)
    assert any(n.startswith(("classifier.", "qa_outputs.")) for n in heads)
    if head == "sequence-classification":
        assert any(n.startswith("bert.pooler.") for n in heads)
    # copies, not shared tensors: training the student leaves the teacher alone
    assert all(t.data_ptr() != source[n].data_ptr() for n, t in copied.items() if n in source)


def test_layer_map_checks():
    check_layer_map([0, 2], 4, 2)
    with pytest.raises(ValueError, match="out of range"):
        check_layer_map([0, 4], 4, 2)
    with pytest.raises(ValueError, match="names 3 layers but the student has 2"):
        check_layer_map([0, 1, 2], 4, 2)


def test_student_config_presets_keep_the_teachers_vocabulary_and_labels(tiny_config):
    teacher = tiny_config.replace(labels=("x", "y"), problem_type="single_label_classification")
    for name, shape in {"tiny": (2, 128, 2, 512), "mini": (4, 256, 4, 1024), "small": (4, 512, 8, 2048)}.items():
        config = student_config(name, teacher)
        assert (
            config.num_hidden_layers,
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
        ) == shape
        assert config.vocab_size == teacher.vocab_size and config.labels == ("x", "y")
        assert config.max_position_embeddings == teacher.max_position_embeddings

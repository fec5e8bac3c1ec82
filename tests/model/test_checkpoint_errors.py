"""A checkpoint that does not fit fails with a message that names the tensor."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from model import build_model, load_pretrained, save_pretrained
from model.checkpoint import CheckpointError


@pytest.fixture
def saved(tmp_path, tiny_config):
    model = build_model(tiny_config, "sequence-classification", 3)
    save_pretrained(model, tmp_path)
    return tmp_path


def rewrite(directory, change):
    tensors = load_file(str(directory / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(directory / "model.safetensors"))


def test_missing_tensor_is_named(saved):
    rewrite(saved, lambda t: t.pop("bert.encoder.layer.1.attention.self.key.weight"))
    with pytest.raises(
        CheckpointError, match=r"missing tensors: bert\.encoder\.layer\.1\.attention\.self\.key\.weight"
    ):
        load_pretrained(saved, head="sequence-classification")


def test_wrong_shape_is_named(saved):
    def shrink(t):
        t["bert.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(7, 128)

    rewrite(saved, shrink)
    with pytest.raises(CheckpointError, match=r"intermediate\.dense\.weight: checkpoint \(7, 128\) vs model"):
        load_pretrained(saved, head="sequence-classification")


def test_wrong_vocab_size_is_explained(saved):
    config = json.loads((saved / "config.json").read_text())
    config["vocab_size"] = 120
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"word_embeddings\.weight.*vocab_size"):
        load_pretrained(saved, head="sequence-classification")


def test_unexpected_encoder_tensor_is_named(saved):
    rewrite(saved, lambda t: t.__setitem__("bert.encoder.layer.9.output.dense.weight", torch.zeros(2, 2)))
    with pytest.raises(CheckpointError, match=r"unexpected tensors: bert\.encoder\.layer\.9"):
        load_pretrained(saved, head="sequence-classification")


def test_truncated_weights_file(saved):
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_pretrained(saved, head="sequence-classification")


def test_missing_head_needs_permission(minilm_dir):
    with pytest.raises(CheckpointError, match="allow_new_heads=True"):
        load_pretrained(minilm_dir, head="pretraining")
    model = load_pretrained(minilm_dir, head="pretraining", allow_new_heads=True)
    assert model.mlm.decoder_weight is model.bert.embeddings.word_embeddings.weight


def test_new_num_labels_replaces_the_classifier_only_when_allowed(saved):
    with pytest.raises(CheckpointError, match=r"classifier\.weight"):
        load_pretrained(saved, head="sequence-classification", num_labels=5)
    model = load_pretrained(saved, head="sequence-classification", num_labels=5, allow_new_heads=True)
    assert model.classifier.out_features == 5


def test_not_a_model_directory(tmp_path):
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_pretrained(tmp_path)

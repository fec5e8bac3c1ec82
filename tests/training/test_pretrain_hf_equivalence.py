"""A pretraining step computes what transformers' BertForPreTraining computes on the same weights and batch.

MLM projected at the masked positions only (training/pretrain_step.py) against transformers' full
projection with -100 labels; NSP on the pooled [CLS]. Dropout off, padded batch. Each objective's
loss: mlm+nsp and mlm+sop against BertForPreTraining with `next_sentence_label` (the NSP or the
order labels: the same head and cross-entropy), mlm against BertForMaskedLM (MLM loss alone).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import BertConfig, build_model, save_pretrained
from tests.helpers.gradients import assert_same_gradients
from tests.helpers.tolerances import network_tolerance
from training.pretrain_batches import to_tensors
from training.pretrain_step import batch_loss, pretraining_sums

transformers = pytest.importorskip("transformers")


def masked_batch(vocab_size: int, lengths=(20, 13, 7, 20)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    B, T = len(lengths), max(lengths)
    ids = np.zeros((B, T), dtype=np.int64)
    labels = np.full((B, T), -100, dtype=np.int64)
    mask = np.zeros((B, T), dtype=np.int64)
    types = np.zeros((B, T), dtype=np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(5, vocab_size, n)
        mask[i, :n] = 1
        types[i, n // 2 : n] = 1
        picked = rng.choice(np.arange(1, n - 1), size=max(1, n // 6), replace=False)
        labels[i, picked] = ids[i, picked]
        ids[i, picked[: len(picked) // 2 + 1]] = 4  # some become [MASK], the rest keep their id
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": mask,
        "mlm_labels": labels,
        "nsp_labels": np.array([0, 1, 1, 0]),
    }


def test_pretraining_loss_and_gradients_match_transformers(tmp_path):
    torch.manual_seed(0)
    config = BertConfig.preset("tiny", vocab_size=211, max_position_embeddings=64)
    ours = build_model(config, "pretraining").eval()  # eval: dropout off, gradients still flow
    save_pretrained(ours, tmp_path)
    theirs = transformers.BertForPreTraining.from_pretrained(tmp_path).eval()
    batch = masked_batch(config.vocab_size)
    tensors = to_tensors(batch, pin=False)
    sums = pretraining_sums(ours, tensors, "cpu", "fp32")
    loss = sums["mlm_loss"] / tensors["mlm_targets"].numel() + sums["nsp_loss"] / tensors["nsp_labels"].numel()
    loss.backward()
    hf = theirs(
        input_ids=tensors["input_ids"],
        attention_mask=tensors["attention_mask"],
        token_type_ids=tensors["token_type_ids"],
        labels=torch.from_numpy(batch["mlm_labels"]),
        next_sentence_label=tensors["nsp_labels"],
    )
    hf.loss.backward()
    # the encoder's layers and the loss over the vocabulary, each rounded by two implementations
    tolerance = network_tolerance(config.num_hidden_layers + 1, config.intermediate_size, hf.loss.item())
    assert abs(loss.item() - hf.loss.item()) <= tolerance
    assert_same_gradients(ours, theirs)  # word embeddings: tied with the MLM decoder on both sides


@pytest.mark.parametrize("objective", ["mlm+nsp", "mlm+sop", "mlm"])
def test_each_objective_loss_matches_transformers(tmp_path, objective):
    torch.manual_seed(1)
    config = BertConfig.preset("tiny", vocab_size=211, max_position_embeddings=64)
    ours = build_model(config, "pretraining").eval()
    save_pretrained(ours, tmp_path)
    batch = masked_batch(config.vocab_size)
    if objective == "mlm+sop":
        batch["nsp_labels"] = np.array([1, 0, 1, 1])  # 1 = the two segments are swapped
    if objective == "mlm":
        del batch["nsp_labels"]  # MLM-only data has no pair labels
    tensors = to_tensors(batch, pin=False)
    assert ("nsp_labels" in tensors) == (objective != "mlm")
    with torch.no_grad():
        sums = pretraining_sums(ours, tensors, "cpu", "fp32")
        loss = batch_loss(sums, tensors["mlm_targets"].numel(), len(batch["input_ids"])).item()
        inputs = {k: tensors[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        labels = torch.from_numpy(batch["mlm_labels"])
        if objective == "mlm":
            theirs = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
            expected = theirs(**inputs, labels=labels).loss.item()
        else:
            theirs = transformers.BertForPreTraining.from_pretrained(tmp_path).eval()
            expected = theirs(**inputs, labels=labels, next_sentence_label=tensors["nsp_labels"]).loss.item()
    assert ("nsp_loss" in sums) == (objective != "mlm")
    # the encoder's layers and the loss over the vocabulary, each rounded by two implementations
    assert abs(loss - expected) <= network_tolerance(config.num_hidden_layers + 1, config.intermediate_size, expected)

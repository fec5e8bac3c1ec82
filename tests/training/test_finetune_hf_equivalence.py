"""A fine-tuning step computes what transformers computes: same loss and gradients on the same weights.

Dropout off (eval mode) and no padding, so both sides see exactly the same computation: the
task losses (training/finetune/losses.py) against transformers' built-in head losses.
"""

from __future__ import annotations

import pytest
import torch

from model import BertConfig, load_pretrained
from tests.helpers.gradients import assert_same_gradients
from tests.helpers.tolerances import network_tolerance
from training.finetune.losses import task_loss

transformers = pytest.importorskip("transformers")

HF_CLASSES = {
    "sequence-classification": "BertForSequenceClassification",
    "token-classification": "BertForTokenClassification",
    "question-answering": "BertForQuestionAnswering",
}
B, T, LABELS = 4, 24, 3


def unpadded_batch(vocab_size: int, head: str):
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(5, vocab_size, (B, T), generator=g)
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, T // 2 :] = 1
    inputs = {"input_ids": ids, "attention_mask": torch.ones(B, T, dtype=torch.long), "token_type_ids": types}
    if head == "sequence-classification":
        targets = {"labels": torch.randint(0, LABELS, (B,), generator=g)}
    elif head == "token-classification":
        labels = torch.randint(0, LABELS, (B, T), generator=g)
        labels[:, ::3] = -100  # continuation sub-tokens and special tokens are ignored
        targets = {"labels": labels}
    else:
        targets = {
            "start_positions": torch.tensor([0, 3, 13, 20]),  # 0: answer outside the window -> [CLS]
            "end_positions": torch.tensor([0, 5, 13, 23]),
        }
    return inputs, targets


def paired_models(tmp_path, head: str):
    config = BertConfig.preset("tiny", vocab_size=211, max_position_embeddings=64)
    hf_config = transformers.BertConfig.from_dict(config.to_hf_dict())
    hf_config.num_labels = LABELS if head != "question-answering" else 2
    torch.manual_seed(0)
    theirs = getattr(transformers, HF_CLASSES[head])(hf_config)
    theirs.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path, head=head)
    return ours.eval(), theirs.eval()  # eval: dropout off, gradients still flow


@pytest.mark.parametrize("head", list(HF_CLASSES))
def test_loss_and_gradients_match_transformers(tmp_path, head):
    ours, theirs = paired_models(tmp_path, head)
    inputs, targets = unpadded_batch(ours.config.vocab_size, head)
    loss = task_loss(head, None, ours(**inputs), targets, inputs["attention_mask"])
    loss.backward()
    hf_loss = theirs(**inputs, **targets).loss
    hf_loss.backward()
    # the encoder's layers and the head's loss, each rounded by two implementations
    layers, width = ours.config.num_hidden_layers + 1, ours.config.intermediate_size
    assert abs(loss.item() - hf_loss.item()) <= network_tolerance(layers, width, hf_loss.item())
    assert_same_gradients(ours, theirs)


def test_qa_loss_ignores_padding_that_transformers_counts(tmp_path):
    """With padding, ours keeps the softmax on real tokens: lower than the Trainer's padded loss."""
    ours, _ = paired_models(tmp_path, "question-answering")
    inputs, targets = unpadded_batch(ours.config.vocab_size, "question-answering")
    padded = {k: torch.cat([v, torch.zeros(B, 8, dtype=v.dtype)], dim=1) for k, v in inputs.items()}
    with torch.no_grad():
        plain = task_loss("question-answering", None, ours(**inputs), targets, inputs["attention_mask"])
        masked = task_loss("question-answering", None, ours(**padded), targets, padded["attention_mask"])
        unmasked = task_loss("question-answering", None, ours(**padded), targets, None)
    # padding changes nothing once masked, up to the rounding of other matmul shapes in every layer
    layers, width = ours.config.num_hidden_layers + 1, ours.config.intermediate_size
    assert torch.allclose(plain, masked, rtol=0, atol=network_tolerance(layers, width, plain.item()))
    assert unmasked > masked  # left in, the 8 padded positions take a share of the softmax

"""Parity with `transformers` on the same weights: fp32, padded batches, every head."""

from __future__ import annotations

import pytest
import torch

from model import BertConfig, build_model, load_pretrained, save_pretrained
from tests.helpers.tolerances import network_tolerance

transformers = pytest.importorskip("transformers")

HF_CLASSES = {
    None: "BertModel",
    "pretraining": "BertForPreTraining",
    "sequence-classification": "BertForSequenceClassification",
    "token-classification": "BertForTokenClassification",
    "question-answering": "BertForQuestionAnswering",
}
CONFIGS = {
    "tiny": BertConfig.preset("tiny", vocab_size=211, max_position_embeddings=64),
    "odd": BertConfig(
        vocab_size=97,
        hidden_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=200,
        max_position_embeddings=40,
        type_vocab_size=3,
        layer_norm_eps=1e-6,
    ),
}


def padded_batch(vocab_size: int, lengths=(17, 9, 3, 12), seed=0):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(5, vocab_size, (len(lengths), T), generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    types = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
        types[i, n // 2 : n] = 1
    return ids, mask, types


def our_outputs(model, head, batch):
    with torch.no_grad():
        out = model(*batch)
    if head is None:
        return {"hidden": out.last_hidden_state, "pooled": out.pooler_output}
    if head == "pretraining":
        return {"mlm": out.mlm_logits, "nsp": out.nsp_logits}
    if head == "question-answering":
        return {"start": out.start_logits, "end": out.end_logits}
    return {"logits": out.logits}


def hf_outputs(model, head, batch):
    ids, mask, types = batch
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    if head is None:
        return {"hidden": out.last_hidden_state, "pooled": out.pooler_output}
    if head == "pretraining":
        return {"mlm": out.prediction_logits, "nsp": out.seq_relationship_logits}
    if head == "question-answering":
        return {"start": out.start_logits, "end": out.end_logits}
    return {"logits": out.logits}


def assert_close(ours: dict, theirs: dict, mask: torch.Tensor, config: BertConfig):
    for key, a in ours.items():
        b = theirs[key]
        assert a.shape == b.shape, key
        if a.dim() >= 2 and a.shape[:2] == mask.shape:  # per-token output: compare real tokens only
            a, b = a[mask.bool()], b[mask.bool()]
        diff = (a - b).abs().max().item()
        # the same fp32 network in two implementations: rounding differs in every layer
        tolerance = network_tolerance(config.num_hidden_layers, config.intermediate_size, b.abs().max().item())
        assert diff <= tolerance, f"{key}: max abs diff {diff:.3g}, allowed {tolerance:.3g}"


@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("head", list(HF_CLASSES))
def test_ours_saved_then_loaded_by_transformers(tmp_path, config_name, head):
    """Our random weights -> save_pretrained -> transformers.from_pretrained: same outputs."""
    torch.manual_seed(0)
    config = CONFIGS[config_name]
    num_labels = 5 if head in ("sequence-classification", "token-classification") else None
    ours = build_model(config, head, num_labels).eval()
    save_pretrained(ours, tmp_path)
    cls = getattr(transformers, HF_CLASSES[head])
    theirs, info = cls.from_pretrained(tmp_path, output_loading_info=True, attn_implementation="sdpa")
    theirs.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    if head == "pretraining":
        assert theirs.cls.predictions.decoder.weight is theirs.bert.embeddings.word_embeddings.weight
    batch = padded_batch(config.vocab_size)
    assert_close(our_outputs(ours, head, batch), hf_outputs(theirs, head, batch), batch[1], config)


@pytest.mark.parametrize("head", list(HF_CLASSES))
def test_transformers_saved_then_loaded_by_us(tmp_path, head):
    """transformers random weights -> save_pretrained -> our load_pretrained: same outputs."""
    torch.manual_seed(1)
    config = CONFIGS["odd"]
    hf_config = transformers.BertConfig.from_dict(config.to_hf_dict())
    if head in ("sequence-classification", "token-classification"):
        hf_config.num_labels = 3
    theirs = getattr(transformers, HF_CLASSES[head])(hf_config).eval()
    theirs.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path, head=head).eval()
    if head == "pretraining":
        assert ours.mlm.decoder_weight is ours.bert.embeddings.word_embeddings.weight
    batch = padded_batch(config.vocab_size, seed=3)
    assert_close(our_outputs(ours, head, batch), hf_outputs(theirs, head, batch), batch[1], config)
    # and back again: our save loads in transformers with identical outputs
    save_pretrained(ours, tmp_path / "again")
    again = getattr(transformers, HF_CLASSES[head]).from_pretrained(tmp_path / "again").eval()
    assert_close(hf_outputs(again, head, batch), hf_outputs(theirs, head, batch), batch[1], config)


def test_pytorch_bin_checkpoints_load(tmp_path):
    torch.manual_seed(2)
    config = CONFIGS["tiny"]
    theirs = transformers.BertForSequenceClassification(
        transformers.BertConfig.from_dict({**config.to_hf_dict(), "num_labels": 2})
    ).eval()
    theirs.config.save_pretrained(tmp_path)
    torch.save(theirs.state_dict(), tmp_path / "pytorch_model.bin")  # the pre-safetensors layout
    ours = load_pretrained(tmp_path, head="sequence-classification").eval()
    batch = padded_batch(config.vocab_size)
    ours_out = our_outputs(ours, "sequence-classification", batch)
    assert_close(ours_out, hf_outputs(theirs, "x", batch), batch[1], config)


def test_real_minilm_weights_match_transformers(minilm_dir, sentences):
    tok = transformers.BertTokenizer.from_pretrained(str(minilm_dir))
    batch = tok(sentences, padding=True, return_tensors="pt")
    assert len(set(batch["attention_mask"].sum(1).tolist())) > 2, "want sentences of different lengths"
    theirs = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation="sdpa").eval()
    ours = load_pretrained(minilm_dir).eval()
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert_close(our_outputs(ours, None, args), hf_outputs(theirs, None, args), batch["attention_mask"], ours.config)


@pytest.mark.parametrize("head", ["sequence-classification", "token-classification", "question-answering"])
def test_real_minilm_heads_match_transformers(tmp_path, minilm_dir, sentences, head):
    """New heads on the real encoder: ours saved, theirs loaded, same logits on real text."""
    torch.manual_seed(4)
    ours = load_pretrained(minilm_dir, head=head, num_labels=4, allow_new_heads=True).eval()
    save_pretrained(ours, tmp_path)
    theirs = getattr(transformers, HF_CLASSES[head]).from_pretrained(tmp_path).eval()
    tok = transformers.BertTokenizer.from_pretrained(str(minilm_dir))
    batch = tok(sentences, padding=True, return_tensors="pt")
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert_close(our_outputs(ours, head, args), hf_outputs(theirs, head, args), batch["attention_mask"], ours.config)

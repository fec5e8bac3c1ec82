import json

import pytest

from model import PRESETS, BertConfig


def test_presets_have_documented_shapes():
    assert PRESETS["tiny"] == (2, 128, 2)
    assert PRESETS["base"] == (12, 768, 12)
    cfg = BertConfig.preset("mini")
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (4, 256, 4, 1024)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        BertConfig.preset("gigantic")


def test_heads_must_divide_hidden():
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        BertConfig(hidden_size=100, num_attention_heads=3)


def test_hf_round_trip_keeps_labels(minilm_dir):
    hf = json.loads((minilm_dir / "config.json").read_text())
    cfg = BertConfig.from_hf_dict(hf)
    assert cfg.hidden_size == 384 and cfg.num_hidden_layers == 6
    labelled = cfg.replace(labels=("neg", "pos"), problem_type="single_label_classification")
    out = labelled.to_hf_dict("BertForSequenceClassification")
    assert out["id2label"] == {"0": "neg", "1": "pos"} and out["label2id"] == {"neg": 0, "pos": 1}
    assert BertConfig.from_hf_dict(out) == labelled


def test_transformers_reads_our_config(tiny_config):
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertConfig.from_dict(tiny_config.to_hf_dict())
    assert hf.hidden_size == tiny_config.hidden_size
    assert hf.num_hidden_layers == tiny_config.num_hidden_layers


def test_non_bert_config_is_refused():
    with pytest.raises(ValueError, match="model_type"):
        BertConfig.from_hf_dict({"model_type": "roberta"})

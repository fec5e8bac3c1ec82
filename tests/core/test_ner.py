"""NER aggregation matches the Hugging Face token-classification pipeline; windows merge without cuts."""

from __future__ import annotations

import numpy as np
import pytest

from core.inference.ner import Token, aggregate, merge_windows, window_spans
from tests.helpers.tolerances import sum_tolerance

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
TEXTS = [
    "John Smith said the quick brown fox jumps over the lazy dog in Paris.",
    "Mary lives in Berlin , Germany and likes the café près de la gare.",
    "北京 和 上海 是 大 城 , John smith-jones working at google!",
    "unbelievably boringest stories, really",
]


@pytest.fixture(scope="module")
def hf_setup(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from model.tokenizer import BertTokenizer
    from tests.helpers.bundles import tiny_vocab

    vocab = tiny_vocab()
    directory = tmp_path_factory.mktemp("hf-ner")
    ours = BertTokenizer.from_vocab(vocab, lowercase=True)
    ours.save(directory)
    hf_tok = transformers.BertTokenizerFast.from_pretrained(str(directory))
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)},
    )  # fmt: skip
    torch.manual_seed(3)
    model = transformers.BertForTokenClassification(config).eval()
    with torch.no_grad():  # sharpen the random head so that labels vary along the text
        model.classifier.weight.mul_(40)
    return torch, transformers, ours, hf_tok, model


def _our_entities(torch, ours, model, text, strategy):
    enc = ours.encode(text)
    with torch.no_grad():
        logits = model(torch.tensor([enc.ids])).logits[0].numpy()
    content = [i for i, special in enumerate(enc.special_tokens_mask) if not special]
    tokens = [Token(*enc.offsets[i], enc.word_ids[i], enc.tokens[i], enc.ids[i] == ours.unk_id) for i in content]
    return aggregate(text, tokens, logits[content], LABELS, strategy)


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_matches_hugging_face_pipeline(hf_setup, strategy):
    torch, transformers, ours, hf_tok, model = hf_setup
    pipe = transformers.pipeline("token-classification", model=model, tokenizer=hf_tok, aggregation_strategy=strategy)
    compared = 0
    for text in TEXTS:
        expected = pipe(text)
        got = _our_entities(torch, ours, model, text, strategy)
        assert len(got) == len(expected), (text, got, expected)
        for g, e in zip(got, expected):
            assert g["entity_group"] == e.get("entity_group", e.get("entity"))
            assert (g["start"], g["end"]) == (e["start"], e["end"])
            # an fp32 softmax over the labels: the exps' sum rounds len - 1 times, the division once
            assert g["score"] == pytest.approx(float(e["score"]), abs=sum_tolerance(len(LABELS) + 1, 1.0))
            assert g["word"] == text[g["start"] : g["end"]]
            if strategy == "none":
                assert g["index"] == e["index"]
            compared += 1
    assert compared > 5


def test_ignore_labels_and_empty_input():
    tokens = [Token(0, 4, 0), Token(5, 10, 1)]
    logits = np.array([[0, 9, 0], [9, 0, 0]], dtype=np.float32)  # PER, O
    labels = ["O", "B-PER", "I-PER"]
    assert [e["entity_group"] for e in aggregate("John likes", tokens, logits, labels)] == ["PER"]
    assert aggregate("John likes", tokens, logits, labels, ignore_labels=["PER"])[0]["entity_group"] == "O"
    assert aggregate("", [], np.zeros((0, 3)), labels) == []
    with pytest.raises(ValueError):
        aggregate("x", tokens, logits, labels, strategy="mean")


def test_window_spans_cover_everything_with_overlap():
    assert window_spans(5, 10, 2) == [(0, 5)]
    spans = window_spans(25, 10, 4)
    assert spans[0] == (0, 10) and spans[-1][1] == 25
    for (_, e0), (s1, _) in zip(spans, spans[1:]):
        assert e0 - s1 == 4


def test_merge_takes_each_token_from_its_most_central_window():
    n, spans = 25, window_spans(25, 10, 4)
    truth = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    # each window sees the truth, corrupted near its cut edges
    windows = []
    for s, e in spans:
        logits = truth[s:e].copy()
        if s > 0:
            logits[0] += 100
        if e < n:
            logits[-1] += 100
        windows.append(logits)
    np.testing.assert_array_equal(merge_windows(n, spans, windows), truth)

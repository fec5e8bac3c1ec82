"""The ASCII fast path (`model.wordpiece_fast`) gives exactly the reference BertTokenizer's ids.

Checked on generated ASCII text (control characters, long words, digits, punctuation runs,
special tokens written out) with the uncased bert-base vocabulary and a small cased one that
produces many [UNK]s, and on mixed batches where non-ASCII texts take the exact path.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

from model.tokenizer import SPECIAL_TOKENS, BertTokenizer, load_tokenizer
from model.wordpiece_fast import AsciiWordPiece, IdsEncoder

legacy = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy")

CONTROLS = "".join(map(chr, [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]))


def generated_ascii_texts(count: int, seed: int) -> list[str]:
    """Random ASCII: words in both cases, digits, punctuation runs, every kind of whitespace and
    control character, words of 99-150 characters, special tokens written out."""
    rng = random.Random(seed)
    words = ["the", "The", "THE", "running", "Unbelievable", "tokenization", "cats", "x", "A1b2", "3.14"]
    words += ["[MASK]", "[mask]", "[CLS]", "x[SEP]y", "[UNK]"]
    texts = []
    for _ in range(count):
        pieces = []
        for _ in range(rng.randint(0, 14)):
            kind = rng.random()
            if kind < 0.35:
                piece = rng.choice(words)
            elif kind < 0.5:
                piece = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(rng.randint(1, 12)))
            elif kind < 0.65:
                piece = "".join(rng.choice(string.punctuation) for _ in range(rng.randint(1, 5)))
            elif kind < 0.75:
                piece = "".join(rng.choice(CONTROLS + " \t\n\r") for _ in range(rng.randint(1, 3)))
            elif kind < 0.8:
                piece = rng.choice(string.ascii_letters) * rng.choice([99, 100, 101, 150])
            elif kind < 0.85:
                piece = "a" * 60 + rng.choice(CONTROLS) + "b" * 60  # 120 characters until controls go
            else:
                piece = "".join(rng.choice(string.printable + CONTROLS) for _ in range(rng.randint(1, 20)))
            pieces.append(piece)
            pieces.append(rng.choice(["", " ", "  ", "\t", "\n", "\r\n", "\x0b", "\x1c"]))
        texts.append("".join(pieces))
    return texts + ["", " ", "\x00", "\t\n", "a" * 100, "a" * 101, "!" * 30]


def reference_ids(reference, texts: list[str]) -> list[list[int]]:
    return [reference.convert_tokens_to_ids(reference.tokenize(t)) for t in texts]


def encoder_ids(encoder, texts: list[str]) -> list[list[int]]:
    ids, lengths = encoder.encode_batch(texts)
    assert ids.dtype == np.int64 and lengths.dtype == np.int64 and len(lengths) == len(texts)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    assert bounds[-1] == len(ids)
    return [ids[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]


@pytest.fixture(scope="module")
def uncased(minilm_dir):
    """(our tokenizer from vocab.txt, the reference) for bert-base-uncased."""
    vocab = minilm_dir / "vocab.txt"
    return load_tokenizer(vocab), legacy.BertTokenizerLegacy(str(vocab), do_lower_case=True)


@pytest.fixture(scope="module")
def cased(tmp_path_factory):
    """(ours loaded from its saved tokenizer.json, the reference) for a small cased vocabulary.

    It has no digits and few letters, so many words become [UNK].
    """
    tokens = [*SPECIAL_TOKENS, *string.punctuation, "The", "the", "Un", "##believ", "##able", "RUN", "##ning"]
    tokens += [*"abcdefghijklmABCDEFGHIJ", *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyzABC"), "tokenization"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    directory = tmp_path_factory.mktemp("cased")
    BertTokenizer.from_vocab(vocab, lowercase=False).save(directory)
    reference = legacy.BertTokenizerLegacy(str(directory / "vocab.txt"), do_lower_case=False)
    return load_tokenizer(directory), reference


@pytest.mark.parametrize("which", ["uncased", "cased"])
def test_fast_path_matches_the_reference_on_generated_ascii(which, request):
    ours, reference = request.getfixturevalue(which)
    encoder = IdsEncoder(ours)
    assert encoder.fast is not None and ours.lowercase == (which == "uncased")
    texts = generated_ascii_texts(300, seed=1 if which == "uncased" else 2)
    expected = reference_ids(reference, texts)
    assert encoder_ids(encoder, texts) == expected
    # The ASCII path alone (no fallback for written-out special tokens) on the texts without them.
    plain = [t for t in texts if "[" not in t]
    assert encoder_ids(encoder.fast, plain) == reference_ids(reference, plain)
    if which == "cased":
        assert sum(ids.count(ours.unk_id) for ids in expected) > 100  # the [UNK] rules are exercised


def test_fast_path_is_used_for_every_form_of_a_bert_vocabulary(minilm_dir, tmp_path):
    for path in (minilm_dir, minilm_dir / "vocab.txt", minilm_dir / "tokenizer.json"):
        assert IdsEncoder(load_tokenizer(path)).fast is not None, path
    load_tokenizer(minilm_dir).save(tmp_path)
    assert IdsEncoder(load_tokenizer(tmp_path / "tokenizer.json")).fast is not None


def test_mixed_batches_keep_order_and_match_the_exact_tokenizer(uncased):
    ours, _ = uncased
    texts = [
        "Plain ASCII, with punctuation!",
        "Héllo Wörld, naïve café",
        "",
        "中文字符测试，你好！",
        "text with [MASK] and [sep] written out",
        "ctrl\x00chars\x07here\x1b[0m",
        "emoji 😀 and ＦＵＬＬ ｗｉｄｔｈ",
        "   ",
        "supercalifragilisticexpialidocious" * 3,
    ] * 3
    expected = [ours.encode(t).ids[1:-1] for t in texts]
    encoder = IdsEncoder(ours)
    assert encoder_ids(encoder, texts) == expected
    assert encoder_ids(encoder, []) == []
    assert encoder_ids(encoder, texts[1:2]) == expected[1:2]  # no ASCII text at all


def test_caches_stay_exact_when_they_are_reset(uncased):
    ours, reference = uncased
    small = AsciiWordPiece(ours.get_vocab(), lowercase=True, unk_id=ours.unk_id, cache_limit=40)
    texts = [t for t in generated_ascii_texts(200, seed=3) if "[" not in t]
    expected = reference_ids(reference, texts)
    got = [ids for k in range(0, len(texts), 16) for ids in encoder_ids(small, texts[k : k + 16])]
    assert got == expected
    assert len(small.words) <= 40


def test_other_tokenizers_take_the_exact_path(tmp_path):
    """A tokenizer.json with another pipeline (lowercase, `\\w+|[^\\w\\s]+` split) is never fast-pathed."""
    vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, "hello", "!!", "!", "world", "##s"])}
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.save(str(tmp_path / "tokenizer.json"))
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    assert spec["normalizer"]["type"] == "Lowercase"
    ours = load_tokenizer(Path(tmp_path / "tokenizer.json"))
    encoder = IdsEncoder(ours)
    assert encoder.fast is None
    texts = ["Hello!! worlds", "hello ! !!"]
    assert encoder_ids(encoder, texts) == [ours.backend.encode(t, add_special_tokens=False).ids for t in texts]
    assert encoder_ids(encoder, texts)[0] == [vocab["hello"], vocab["!!"], vocab["world"], vocab["##s"]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(max_codepoint=127), max_size=40), min_size=1, max_size=4))
def test_fast_path_property_any_ascii(uncased, texts):
    ours, reference = uncased
    encoder = _shared_encoder(ours)
    assert encoder_ids(encoder, texts) == reference_ids(reference, texts)


_ENCODERS: dict[int, IdsEncoder] = {}


def _shared_encoder(tokenizer: BertTokenizer) -> IdsEncoder:
    """One encoder for all examples, so its caches are reused across them (as in real use)."""
    if id(tokenizer) not in _ENCODERS:
        _ENCODERS[id(tokenizer)] = IdsEncoder(tokenizer)
    return _ENCODERS[id(tokenizer)]


def test_added_tokens_matched_after_normalisation_take_the_exact_path(uncased, tmp_path):
    """A user-added (normalized) token also matches where the text has controls or \\t \\n \\r inside it."""
    from tokenizers import AddedToken

    ours, _ = uncased
    ours = load_tokenizer(ours.save(tmp_path / "tok") / "tokenizer.json")
    ours.backend.add_tokens([AddedToken("hello world", normalized=True), AddedToken("qzx", normalized=True)])
    encoder = IdsEncoder(ours)
    assert encoder.fast is not None
    texts = ["hello\tworld", "say hello\nworld", "hello\x00 world", "HELLO  WORLD", "q\x00zx", "Q\x07ZX end", "plain"]
    expected = [ours.backend.encode(t, add_special_tokens=False).ids for t in texts]
    assert sum(len(ids) == 1 and ids[0] >= 30522 for ids in expected) >= 3  # the added tokens do match
    assert encoder_ids(encoder, texts) == expected
    assert [encoder_ids(encoder, [t])[0] for t in texts] == expected

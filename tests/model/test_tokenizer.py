"""Tokenizer parity with the reference (slow, pure-Python) BertTokenizer on ids and offsets.

Offsets are checked the only way the reference allows (it has no offsets): every non-special
token's span in the original string, normalised as the reference normalises a word (control
characters dropped, NFC, lowercase, accents stripped), reproduces the token without its `##`;
an [UNK] token's span is one whole word that the reference also turns into [UNK].
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from model.tokenizer import BertTokenizer, load_tokenizer

legacy = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy")

FIXTURE = [
    "The quick brown fox jumps over the lazy dog.",
    "Don't stop-believing: it's 3.14159, (approx.) $100 & 50% off!!",
    "中文字符测试，你好！北京欢迎你。",
    "Mixed 中文 and English, 日本語のテキスト and 한국어 텍스트.",
    "Héllo Wörld, naïve café, façade, Ångström, Øre, Ærø, ﬁnancial, straße",
    "e\u0301cole, n\u0303, A\u030a, combining x\u0300\u0301y",
    "ＦＵＬＬ　ｗｉｄｔｈ　ＡＢＣ１２３！？",
    "ctrl\x00chars\x07here\x1b[0m\u200bzero\ufeffwidth\x85nel\u2028ls\u2029ps\ufffdrep",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u3000ideographic space",
    "emoji 😀🎉 👍🏽 family 👨‍👩‍👧 flags 🇫🇷 ❤️",
    "a" * 150,
    "supercalifragilisticexpialidocious" * 3,
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "ΣΑΣ ΟΔΟΣ. ΑΣ'Α ΑΣ'",
    "İstanbul ǅemal ẞ",
    "text with [MASK] and [SEP] and [CLS]inside and [mask] lowercase",
    "العربية مرحبا בעברית",
    "",
    "   ",
]


@pytest.fixture(scope="module")
def vocab_file(minilm_dir) -> Path:
    return minilm_dir / "vocab.txt"


@pytest.fixture(scope="module")
def reference(vocab_file):
    return legacy.BertTokenizerLegacy(str(vocab_file), do_lower_case=True)


@pytest.fixture(scope="module")
def ours(vocab_file):
    return load_tokenizer(vocab_file)


def normalise_like_reference(span: str) -> str:
    basic = legacy.BasicTokenizer(do_lower_case=True)
    text = unicodedata.normalize("NFC", basic._clean_text(span)).lower()
    return basic._run_strip_accents(text).replace("ς", "σ").strip()


@pytest.mark.parametrize("text", FIXTURE)
def test_ids_match_reference(text, reference, ours):
    assert ours.encode(text).ids == reference(text)["input_ids"]


@pytest.mark.parametrize("text", FIXTURE)
def test_offsets_reproduce_tokens(text, reference, ours):
    encoding = ours.encode(text)
    # One character can become several pieces (a Hangul syllable decomposes into jamo), so
    # consecutive tokens with the same span are checked together.
    groups: list[tuple[tuple[int, int], list[str]]] = []
    for token, span, special in zip(encoding.tokens, encoding.offsets, encoding.special_tokens_mask):
        if special:
            assert span == (0, 0)
        elif groups and groups[-1][0] == span:
            groups[-1][1].append(token)
        else:
            groups.append((span, [token]))
    previous_end = 0
    for (start, end), tokens in groups:
        assert previous_end <= start < end <= len(text)
        previous_end = end
        span = text[start:end]
        if tokens == ["[UNK]"]:
            assert reference.tokenize(span) == ["[UNK]"]
        elif tokens[0] in ("[MASK]", "[SEP]", "[CLS]", "[PAD]"):
            assert tokens == [span]
        else:
            pieces = "".join(t.removeprefix("##") for t in tokens)
            assert normalise_like_reference(span) == pieces.replace("ς", "σ"), (tokens, span)


def test_pairs_and_truncation_match_reference(reference, ours):
    a, b = FIXTURE[1], FIXTURE[4]
    assert ours.encode(a, b).ids == reference(a, b)["input_ids"]
    assert ours.encode(a, b).type_ids == reference(a, b, return_token_type_ids=True)["token_type_ids"]
    for max_length in (8, 17, 30):
        got = ours.encode(a, b, max_length=max_length).ids
        assert got == reference(a, b, max_length=max_length, truncation="longest_first")["input_ids"]
    encoding = ours.encode(a, b)
    for (_start, end), sequence in zip(encoding.offsets, encoding.sequence_ids):
        if sequence is not None:
            assert end <= len(a if sequence == 0 else b)


def test_offsets_are_characters_for_chinese_and_accents(ours):
    text = "café 北京"
    encoding = ours.encode(text)
    spans = [text[s:e] for (s, e), m in zip(encoding.offsets, encoding.special_tokens_mask) if not m]
    assert spans == ["café", "北", "京"]
    assert encoding.word_ids[1:-1] == [0, 1, 2]


def test_windows_cover_the_text_with_stride(ours):
    text = " ".join(f"word{i}" for i in range(60))
    windows = ours.encode_windows("question?", text, max_length=32, stride=8)
    assert len(windows) > 2 and all(len(w) <= 32 for w in windows)
    assert all(w.ids[:4] == windows[0].ids[:4] for w in windows)  # the question is kept whole
    first_tail = [o for o, s in zip(windows[0].offsets, windows[0].sequence_ids) if s == 1][-8:]
    second_head = [o for o, s in zip(windows[1].offsets, windows[1].sequence_ids) if s == 1][:8]
    assert first_tail == second_head


def test_vocab_txt_tokenizer_json_and_directory_load_the_same(tmp_path, vocab_file, minilm_dir, ours):
    from_json = load_tokenizer(minilm_dir / "tokenizer.json")  # Hugging Face file, rebuilt
    saved = ours.save(tmp_path / "tok")
    from_saved_json = load_tokenizer(saved / "tokenizer.json")
    from_saved_vocab = load_tokenizer(saved / "vocab.txt")
    from_dir = load_tokenizer(saved)
    for text in FIXTURE:
        expected = ours.encode(text)
        for tok in (from_json, from_saved_json, from_saved_vocab, from_dir):
            got = tok.encode(text)
            assert (got.ids, got.offsets) == (expected.ids, expected.offsets)
    assert (saved / "vocab.txt").read_text(encoding="utf-8") == vocab_file.read_text(encoding="utf-8")


def test_cased_tokenizer_keeps_case_and_accents(tmp_path):
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Café", "café", "cafe", "ς"])}
    cased = BertTokenizer.from_vocab(vocab, lowercase=False)
    assert cased.encode("Café cafe\u0301").tokens[1:-1] == ["Café", "café"]  # NFC joins e + accent
    cased.save(tmp_path / "cased")
    assert json.loads((tmp_path / "cased" / "tokenizer_config.json").read_text())["do_lower_case"] is False
    assert load_tokenizer(tmp_path / "cased").lowercase is False
    assert load_tokenizer(tmp_path / "cased" / "vocab.txt").encode("Café").tokens[1] == "Café"


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no \\[CLS\\] or \\[SEP\\] or \\[MASK\\] token"):
        load_tokenizer(tmp_path / "vocab.txt")


@pytest.mark.parametrize("lowercase", [True, False])
def test_combining_marks_and_sigma_fuzz_match_reference(vocab_file, lowercase):
    """Random stacks of combining marks on Latin, Greek, Hangul, Bengali and kana bases."""
    import random

    reference = legacy.BertTokenizerLegacy(str(vocab_file), do_lower_case=lowercase)
    ours = load_tokenizer(vocab_file, lowercase=lowercase)
    rng = random.Random(0)
    marks = [chr(c) for c in range(0x300, 0x370)] + [chr(c) for c in (0x9BE, 0x9D7, 0x345, 0x3099, 0x20D2, 0x488)]
    bases = [*"aeiAEIΣσΑΩιΙ", "İ", "ı", "ß", "ǅ", "ᄀ", "가", "\u09c7", "か", "ｶ", "Å", "Ω", "K", "ﬁ", "ΐ", ".", "'"]
    texts = []
    for _ in range(1500):
        word = "".join(
            rng.choice(bases) + "".join(rng.choices(marks, k=rng.randint(0, 3))) for _ in range(rng.randint(1, 6))
        )
        texts.append(word + rng.choice([" ", ". ", "x "]) + "".join(rng.choices(bases, k=3)))
    for text, encoding in zip(texts, ours.encode_batch(texts)):
        assert encoding.ids == reference(text)["input_ids"], text


def test_non_standard_hf_tokenizer_json_is_kept_as_it_is(tmp_path, minilm_dir):
    """A tokenizer.json with a custom pre-tokenizer (here: digits split one by one) is not rebuilt."""
    from tokenizers import Tokenizer

    spec = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [{"type": "BertPreTokenizer"}, {"type": "Digits", "individual_digits": True}],
    }
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    text = "year 12345 was"
    reference = Tokenizer.from_file(str(path))
    reference.no_padding()  # the MiniLM file pads to 128
    expected = reference.encode(text).ids
    got = load_tokenizer(path).encode(text).ids
    assert got == expected
    assert got != load_tokenizer(minilm_dir / "tokenizer.json").encode(text).ids  # the split matters here

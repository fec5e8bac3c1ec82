"""Properties of built pretraining instances: layout, NSP and masking rates, determinism, whole words."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

from model.tokenizer import SPECIAL_TOKENS, BertTokenizer, load_tokenizer
from tests.helpers.tolerances import FP64_EPS, binomial_tolerance
from tests.training import data_testkit
from tests.training.data_testkit import make_corpus
from training.pretraining_blocks import BlockReader
from training.pretraining_build import build_pretraining_data
from training.pretraining_data import open_pretraining_data
from training.pretraining_instances import ShardPlan, _create_pairs, _truncate_pair
from training.pretraining_masking import IGNORE_INDEX, mask_batch

MAX_LEN = 32
corpus_file = data_testkit.corpus_file  # fixtures
tiny_tokenizer_dir = data_testkit.tiny_tokenizer_dir


def build(corpus: Path, tok: Path, out: Path, **kwargs) -> dict:
    kwargs.setdefault("max_seq_len", MAX_LEN)
    kwargs.setdefault("max_predictions", 5)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("log", lambda message: None)
    return build_pretraining_data([corpus], tok, out, **kwargs)


def all_instances(data, epoch: int = 0) -> dict[str, np.ndarray]:
    return data.get_batch(np.arange(len(data)), epoch)


def originals(batch: dict[str, np.ndarray]) -> np.ndarray:
    """Unmasked ids: the label where a position is predicted, else the input."""
    return np.where(batch["mlm_labels"] != IGNORE_INDEX, batch["mlm_labels"], batch["input_ids"])


@pytest.fixture
def static_data(tmp_path, corpus_file, tiny_tokenizer_dir):
    manifest = build(corpus_file, tiny_tokenizer_dir, tmp_path / "static", dupe_factor=3, part_tokens=500)
    return manifest, open_pretraining_data(tmp_path / "static")


def test_layout_of_every_instance(static_data, tiny_tokenizer_dir):
    manifest, data = static_data
    tok = load_tokenizer(tiny_tokenizer_dir)
    assert len(data) == manifest["counts"]["instances"] > 50
    assert len(manifest["shards"]) > 3  # several parts and rounds
    batch = all_instances(data)
    ids = originals(batch)
    B, T = ids.shape
    assert T <= MAX_LEN
    lengths = batch["attention_mask"].sum(1)
    for i in range(B):
        n = lengths[i]
        seps = np.nonzero(ids[i, :n] == tok.sep_id)[0]
        assert ids[i, 0] == tok.cls_id and len(seps) == 2 and seps[1] == n - 1
        a, b = seps[0] - 1, n - seps[0] - 2
        assert a >= 1 and b >= 1  # both segments non-empty
        assert (batch["token_type_ids"][i, : seps[0] + 1] == 0).all() and (
            batch["token_type_ids"][i, seps[0] + 1 : n] == 1
        ).all()
        assert (ids[i, n:] == tok.pad_id).all() and (batch["token_type_ids"][i, n:] == 0).all()
        assert tok.cls_id not in ids[i, 1:n]
        specials = [0, seps[0], n - 1]
        assert (batch["mlm_labels"][i, specials] == IGNORE_INDEX).all()
    for key in ("input_ids", "token_type_ids", "attention_mask", "mlm_labels", "nsp_labels"):
        assert batch[key].dtype == np.int64


def test_random_next_fraction_slightly_above_half(tmp_path, tiny_tokenizer_dir):
    corpus = make_corpus(tmp_path / "c.txt", documents=120, sentences=(2, 14), seed=3)
    manifest = build(corpus, tiny_tokenizer_dir, tmp_path / "out", dupe_factor=4)
    fraction = manifest["counts"]["random_next_fraction"]
    assert 0.5 <= fraction <= 0.62, fraction
    data = open_pretraining_data(tmp_path / "out")
    # the manifest rounds to 6 decimals; the mean of 0/1 labels rounds once
    assert all_instances(data)["nsp_labels"].mean() == pytest.approx(fraction, abs=0.5e-6 + FP64_EPS)


@pytest.mark.parametrize("dynamic", [False, True])
def test_masking_rates(tmp_path, tiny_tokenizer_dir, dynamic):
    corpus = make_corpus(tmp_path / "c.txt", documents=150, seed=5)
    settings = {"dynamic_masking": True} if dynamic else {"dupe_factor": 2}
    build(corpus, tiny_tokenizer_dir, tmp_path / "out", max_seq_len=64, max_predictions=64, **settings)
    data = open_pretraining_data(tmp_path / "out")
    batch = all_instances(data, epoch=1)
    lengths = batch["attention_mask"].sum(1)
    predicted = batch["mlm_labels"] != IGNORE_INDEX
    expected = np.maximum(1, np.rint(lengths * 0.15))
    assert (predicted.sum(1) == expected).all()  # no cap hit with max_predictions 64
    # rint moves each sequence's count by at most half a token from 15% of its length
    assert predicted.sum() / lengths.sum() == pytest.approx(0.15, abs=0.5 / lengths.mean())
    mask_id = load_tokenizer(tiny_tokenizer_dir).mask_id
    inputs, labels = batch["input_ids"][predicted], batch["mlm_labels"][predicted]
    as_mask = np.mean(inputs == mask_id)
    kept = np.mean(inputs == labels)
    n = predicted.sum()  # each masked token draws [MASK] / itself / a random token independently
    assert as_mask == pytest.approx(0.8, abs=binomial_tolerance(0.8, n))
    assert kept == pytest.approx(0.1 + 0.1 / data.vocab_size, abs=binomial_tolerance(0.1, n))
    assert 1 - as_mask - kept == pytest.approx(0.1, abs=binomial_tolerance(0.1, n))


def test_same_seed_gives_byte_identical_output_whatever_the_workers(tmp_path, corpus_file, tiny_tokenizer_dir):
    one = build(corpus_file, tiny_tokenizer_dir, tmp_path / "one", dupe_factor=2, part_tokens=400, workers=1)
    two = build(corpus_file, tiny_tokenizer_dir, tmp_path / "two", dupe_factor=2, part_tokens=400, workers=2)
    other = build(corpus_file, tiny_tokenizer_dir, tmp_path / "other", dupe_factor=2, part_tokens=400, seed=7)
    assert one == two
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert any(str(f).endswith("input_ids.npy") for f in files)
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    a = (tmp_path / "one" / one["shards"][0]["name"] / "input_ids.npy").read_bytes()
    b = (tmp_path / "other" / other["shards"][0]["name"] / "input_ids.npy").read_bytes()
    assert a != b


def test_blocks_are_cut_the_same_whatever_the_workers(tmp_path, corpus_file, tiny_tokenizer_dir, monkeypatch):
    """Many small tokenization batches and small blocks: the batches still in flight at the end of the
    corpus are cut into blocks like all the others (they once all went into the last block with workers)."""
    monkeypatch.setattr(BlockReader, "batch_sentences", 20)
    names = {}
    for workers in (1, 2):
        manifest = build(
            corpus_file, tiny_tokenizer_dir, tmp_path / f"w{workers}", dupe_factor=1, block_tokens=300, workers=workers
        )
        names[workers] = [s["name"] for s in manifest["shards"]], manifest["counts"]["instances"]
    assert len({name.split("-")[1] for name in names[1][0]}) > 3  # several blocks
    assert names[1] == names[2]


def test_rerun_resumes_and_keeps_output(tmp_path, corpus_file, tiny_tokenizer_dir):
    out = tmp_path / "out"
    first = build(corpus_file, tiny_tokenizer_dir, out, dupe_factor=2, part_tokens=400)
    shard = out / first["shards"][0]["name"] / "input_ids.npy"
    stamp = shard.stat().st_mtime_ns
    assert build(corpus_file, tiny_tokenizer_dir, out, dupe_factor=2, part_tokens=400) == first
    assert shard.stat().st_mtime_ns == stamp  # not rewritten
    with pytest.raises(ValueError, match="other settings"):
        build(corpus_file, tiny_tokenizer_dir, out, dupe_factor=3, part_tokens=400)
    assert build(corpus_file, tiny_tokenizer_dir, out, dupe_factor=3, part_tokens=400, overwrite=True)


@pytest.mark.parametrize("dynamic", [False, True])
def test_whole_word_mask_never_splits_a_word(tmp_path, tiny_tokenizer_dir, dynamic):
    corpus = make_corpus(tmp_path / "c.txt", documents=80, seed=11)
    settings = {"dynamic_masking": True} if dynamic else {"dupe_factor": 2}
    build(corpus, tiny_tokenizer_dir, tmp_path / "out", masking="whole-word", **settings)
    data = open_pretraining_data(tmp_path / "out")
    tok = load_tokenizer(tiny_tokenizer_dir)
    continuation = np.array([tok.id_to_token(i).startswith("##") for i in range(tok.vocab_size)])
    batch = all_instances(data)
    ids, predicted = originals(batch), batch["mlm_labels"] != IGNORE_INDEX
    multi_piece_masked = 0
    for i in range(len(ids)):
        n = batch["attention_mask"][i].sum()
        special = (ids[i, :n] == tok.cls_id) | (ids[i, :n] == tok.sep_id)
        for t in range(1, n):
            if continuation[ids[i, t]] and not special[t - 1]:
                assert predicted[i, t] == predicted[i, t - 1], (i, t)
                multi_piece_masked += int(predicted[i, t])
    assert multi_piece_masked > 20


def test_dynamic_masks_depend_on_epoch_and_index_only(tmp_path, corpus_file, tiny_tokenizer_dir):
    build(corpus_file, tiny_tokenizer_dir, tmp_path / "out", dynamic_masking=True)
    data = open_pretraining_data(tmp_path / "out")
    assert data.manifest["dynamic_masking"] and data.manifest["counts"]["masked_tokens"] == 0
    full = data.get_batch(np.arange(10), epoch=3)
    alone = data.get_batch(np.array([7]), epoch=3)
    n = alone["input_ids"].shape[1]
    for key in ("input_ids", "mlm_labels", "token_type_ids"):
        assert (full[key][7, :n] == alone[key][0]).all()
    assert (data.get_batch(np.arange(10), epoch=3)["input_ids"] == full["input_ids"]).all()
    other_epoch = data.get_batch(np.arange(10), epoch=4)
    assert (other_epoch["mlm_labels"] != full["mlm_labels"]).any()
    assert (originals(other_epoch) == originals(full)).all()


def test_static_masks_ignore_epoch(static_data):
    _, data = static_data
    a, b = data.get_batch([0, 5, 9], epoch=0), data.get_batch([0, 5, 9], epoch=7)
    assert all((a[k] == b[k]).all() for k in a)


def test_long_sentences_single_document_and_short_targets(tmp_path, tiny_tokenizer_dir):
    corpus = make_corpus(tmp_path / "c.txt", documents=1, sentences=(30, 30), long_every=3)
    messages = []
    manifest = build(
        corpus, tiny_tokenizer_dir, tmp_path / "out", dupe_factor=2, short_seq_prob=0.5, log=messages.append
    )
    assert any("single document" in m for m in messages)
    data = open_pretraining_data(tmp_path / "out")
    batch = all_instances(data)
    assert batch["input_ids"].shape[1] <= MAX_LEN and manifest["counts"]["instances"] > 10
    assert batch["nsp_labels"].sum() > 0  # "random" B comes from the same document, as in the original


def test_bad_inputs_give_clear_errors(tmp_path, tiny_tokenizer_dir, corpus_file):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no text"):
        build(empty, tiny_tokenizer_dir, tmp_path / "a")
    binary = tmp_path / "data.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="not a text file"):
        build(binary, tiny_tokenizer_dir, tmp_path / "b")
    with pytest.raises(ValueError, match="max_seq_len"):
        build(corpus_file, tiny_tokenizer_dir, tmp_path / "c", max_seq_len=4)
    with pytest.raises(FileNotFoundError):
        build(tmp_path / "missing.txt", tiny_tokenizer_dir, tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="manifest"):
        open_pretraining_data(tmp_path)
    messages = []
    manifest = build_pretraining_data(
        [empty, corpus_file],
        tiny_tokenizer_dir,
        tmp_path / "e",
        max_seq_len=MAX_LEN,
        progress=False,
        log=messages.append,
    )
    assert manifest["counts"]["instances"] > 0 and any("holds no text" in m for m in messages)


def test_truncate_pair_matches_the_original_loop():
    """Same final lengths as the original's token-by-token loop, for every length combination."""
    rng = random.Random(0)
    for la in range(1, 30):
        for lb in range(1, 30):
            for budget in (2, 5, 17):
                a, b = list(range(la)), list(range(lb))
                while len(a) + len(b) > budget:
                    (a if len(a) > len(b) else b).pop()
                sa, ea, sb, eb = _truncate_pair(100, 100 + la, 500, 500 + lb, budget, rng)
                assert (ea - sa, eb - sb) == (len(a), len(b))
                assert 100 <= sa and ea <= 100 + la and 500 <= sb and eb <= 500 + lb


def reference_instances(documents, plan, rng):
    """The original `create_instances_from_document` on token lists, drawing from `rng` in the same
    order as `_create_pairs` (randint written as lo + int(random() * span); truncation shared)."""
    out = []
    max_tokens = plan.max_seq_len - 3
    for index, document in enumerate(documents):
        target = max_tokens
        if rng.random() < plan.short_seq_prob:
            target = 2 + int(rng.random() * (max_tokens - 1))
        chunk, length, i = [], 0, 0
        while i < len(document):
            chunk.append(document[i])
            length += len(document[i])
            if i == len(document) - 1 or length >= target:
                a_end = 1 + int(rng.random() * (len(chunk) - 1)) if len(chunk) >= 2 else 1
                tokens_a = [t for s in chunk[:a_end] for t in s]
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random = 1
                    for _ in range(10):
                        other = int(rng.random() * len(documents))
                        if other != index:
                            break
                    tokens_b = []
                    start = int(rng.random() * len(documents[other]))
                    for sentence in documents[other][start:]:
                        tokens_b += sentence
                        if len(tokens_b) >= target - len(tokens_a):
                            break
                    i -= len(chunk) - a_end
                else:
                    is_random = 0
                    tokens_b = [t for s in chunk[a_end:] for t in s]
                sa, ea, sb, eb = _truncate_pair(0, len(tokens_a), 0, len(tokens_b), max_tokens, rng)
                out.append((tokens_a[sa:ea], tokens_b[sb:eb], is_random))
                chunk, length = [], 0
            i += 1
    return out


def test_pairs_follow_the_original_algorithm():
    rng = random.Random(1)
    documents = [
        [list(range(rng.randint(1, 20))) for _ in range(rng.randint(1, 15))] for _ in range(60)
    ]  # token values are irrelevant; make them unique per position for the comparison
    flat, sent_starts, doc_starts = [], [0], [0]
    for document in documents:
        for sentence in document:
            flat += [len(flat) + k for k in range(len(sentence))]
            sent_starts.append(len(flat))
        doc_starts.append(len(sent_starts) - 1)
    unique_docs, k = [], 0
    for document in documents:
        unique_docs.append([])
        for sentence in document:
            unique_docs[-1].append(flat[k : k + len(sentence)])
            k += len(sentence)
    plan = ShardPlan(24, 4, 0.3, False, "token", 0, 100, 2, 3, 4, "uint16")
    got = _create_pairs(np.arange(len(documents)), np.array(sent_starts), np.array(doc_starts), plan, random.Random(9))
    want = reference_instances(unique_docs, plan, random.Random(9))
    assert len(got[0]) == len(want) > 60
    for i, (a, b, is_random) in enumerate(want):
        assert flat[got[0][i] : got[1][i]] == a
        assert flat[got[2][i] : got[3][i]] == b
        assert got[4][i] == is_random


def test_mask_batch_counts_and_caps():
    lengths = np.array([5, 10, 40, 200])
    T = 200
    ids = np.full((4, T), 9)
    pos = np.arange(T)[None, :]
    candidates = (pos > 0) & (pos < (lengths - 1)[:, None])
    keys = np.arange(4, dtype=np.uint64)
    _, labels = mask_batch(ids, lengths, candidates, None, keys, max_predictions=20, vocab_size=50, mask_id=4)
    assert (labels != IGNORE_INDEX).sum(1).tolist() == [1, 2, 6, 20]
    assert not (labels[~candidates] != IGNORE_INDEX).any()


# --- Chinese whole-word masking with jieba ---------------------------------------------------------

# Two- and three-character words whose characters appear in no other word, so a token's word is
# known from its character; jieba keeps each of them whole (checked below).
CHINESE_WORDS = ["葡萄", "咖啡", "沙发", "玻璃", "蝴蝶", "蜻蜓", "琵琶", "鹦鹉", "骆驼", "蚂蚁", "蝙蝠", "乒乓",
                 "巧克力", "马拉松", "蜘蛛", "垃圾", "尴尬", "忐忑"]  # fmt: skip


@pytest.fixture
def chinese_corpus(tmp_path) -> tuple[Path, Path]:
    """(corpus file, tokenizer dir): documents of sentences made of CHINESE_WORDS and a few English words."""
    rng = random.Random(5)
    lines = []
    for _ in range(70):
        for _ in range(rng.randint(2, 8)):
            words = [rng.choice(CHINESE_WORDS) for _ in range(rng.randint(2, 9))]
            if rng.random() < 0.3:
                words.insert(rng.randrange(len(words)), f" {rng.choice(data_testkit.MULTI_PIECE)} ")
            lines.append("".join(words) + "。")
        lines.append("")
    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    chars = sorted({c for w in CHINESE_WORDS for c in w})
    tokens = [*SPECIAL_TOKENS, "。", *chars, *data_testkit.WORDS, *data_testkit.PIECES]
    tokens += [c for c in "abcdefghijklmnopqrstuvwxyz"] + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    tok_dir = tmp_path / "zh-tokenizer"
    BertTokenizer.from_vocab({t: i for i, t in enumerate(dict.fromkeys(tokens))}).save(tok_dir)
    return corpus, tok_dir


def split_words(data, tok_dir: Path) -> tuple[int, int]:
    """(word occurrences whose tokens are partly masked, occurrences of 2+ tokens fully masked).

    A word occurrence is a run of tokens: the characters of one CHINESE_WORDS entry in order, or
    an English word and its `##` pieces; special tokens end a run (truncation may cut a word).
    """
    tok = load_tokenizer(tok_dir)
    char_of_word = {c: (w, j) for w in CHINESE_WORDS for j, c in enumerate(w)}
    assert len(char_of_word) == sum(map(len, CHINESE_WORDS))  # every character in one word only
    batch = all_instances(data)
    ids, predicted = originals(batch), batch["mlm_labels"] != IGNORE_INDEX
    split = whole = 0
    for i in range(len(ids)):
        n = int(batch["attention_mask"][i].sum())
        tokens = [tok.id_to_token(int(t)) for t in ids[i, :n]]
        groups: list[list[int]] = []
        for t, token in enumerate(tokens):
            prev = tokens[t - 1] if t else "[CLS]"
            if token in ("[CLS]", "[SEP]"):
                continue
            if token in char_of_word:
                word, j = char_of_word[token]
                continues = j > 0 and char_of_word.get(prev) == (word, j - 1)
            else:
                continues = token.startswith("##") and prev not in ("[CLS]", "[SEP]")
            if continues:
                groups[-1].append(t)
            else:
                groups.append([t])
        for group in groups:
            masked = predicted[i, group]
            split += int(masked.any() and not masked.all())
            whole += int(len(group) > 1 and masked.all())
    return split, whole


@pytest.mark.parametrize("dynamic", [False, True])
def test_whole_word_mask_with_jieba_never_splits_a_chinese_word(tmp_path, chinese_corpus, dynamic):
    jieba = pytest.importorskip("jieba")
    corpus, tok_dir = chinese_corpus
    for line in corpus.read_text(encoding="utf-8").splitlines():
        words = [w for w in jieba.cut(line.replace(" ", "")) if w not in "。"]
        assert all(w in CHINESE_WORDS or w.isascii() for w in words), words  # jieba keeps our words whole
    settings = {"dynamic_masking": True} if dynamic else {"dupe_factor": 2}
    build(corpus, tok_dir, tmp_path / "jieba", masking="whole-word", chinese_segmenter="jieba", **settings)
    split, whole = split_words(open_pretraining_data(tmp_path / "jieba"), tok_dir)
    assert split == 0 and whole > 30
    # The check has teeth: without the segmenter every Chinese character is a word of its own.
    build(corpus, tok_dir, tmp_path / "chars", masking="whole-word", **settings)
    split, _ = split_words(open_pretraining_data(tmp_path / "chars"), tok_dir)
    assert split > 10


def test_chinese_segmenter_errors_are_one_line(tmp_path, corpus_file, tiny_tokenizer_dir, monkeypatch, capsys):
    from training.pretraining_data_cli import main

    argv = ["pretraining", "--input", str(corpus_file), "--tokenizer", str(tiny_tokenizer_dir), "--no-progress"]
    monkeypatch.setitem(sys.modules, "jieba", None)  # as if jieba were not installed
    code = main([*argv, "--out", str(tmp_path / "a"), "--masking", "whole-word", "--chinese-segmenter", "jieba"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install jieba" in err and "Traceback" not in err and len(err.splitlines()) == 1
    code = main([*argv, "--out", str(tmp_path / "b"), "--chinese-segmenter", "jieba"])
    err = capsys.readouterr().err
    assert code == 2 and "--masking whole-word" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and one error line
        main([*argv, "--out", str(tmp_path / "c"), "--masking", "whole-word", "--chinese-segmenter", "thulac"])
    assert exit_info.value.code == 2 and "invalid choice: 'thulac'" in capsys.readouterr().err


def test_the_old_whole_word_mask_flag_still_builds_whole_word_data(tmp_path, corpus_file, tiny_tokenizer_dir, capsys):
    from training.pretraining_data_cli import main

    argv = ["pretraining", "--input", str(corpus_file), "--tokenizer", str(tiny_tokenizer_dir), "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "old"), "--whole-word-mask"]) == 0
    assert "now --masking whole-word" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "new"), "--masking", "whole-word"]) == 0
    assert open_pretraining_data(tmp_path / "old").masking == "whole-word"
    old, new = (all_instances(open_pretraining_data(tmp_path / name)) for name in ("old", "new"))
    assert old.keys() == new.keys() and all(np.array_equal(old[k], new[k]) for k in old)

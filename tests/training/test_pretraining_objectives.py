"""Pretraining data for each objective (mlm+nsp, mlm, mlm+sop) and masking (token, whole-word, span).

The default (mlm+nsp, token masking) is pinned byte for byte; `mlm` packs whole texts into one
segment without pair labels; `mlm+sop` shows two consecutive spans in or out of order; whole-word
and span masking never mask part of a word, and keep the 15% budget and the 80/10/10 rule per unit.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pytest

from model.tokenizer import load_tokenizer
from tests.helpers.tolerances import binomial_tolerance
from tests.training import data_testkit
from tests.training.data_testkit import MULTI_PIECE, WORDS
from training.pretraining_build import build_pretraining_data
from training.pretraining_data import open_pretraining_data
from training.pretraining_instances import ShardPlan, _create_sop_pairs
from training.pretraining_masking import (
    _SPAN_LENGTH_CDF,
    IGNORE_INDEX,
    SPAN_MAX_WORDS,
    SPAN_P,
    _select_spans,
    mask_batch,
)

corpus_file = data_testkit.corpus_file  # fixtures
tiny_tokenizer_dir = data_testkit.tiny_tokenizer_dir

# sha256 of the .npy files of the default objective's output (mlm+nsp, token masking), taken with
# the code before objectives and masking options were added: the default is unchanged byte for byte.
DEFAULT_OUTPUT_SHA256 = {
    "static": "3a510fb53323949220f46ee6de988eedbbf89689c691e0a1dd0fb638d0c644c7",
    "dynamic": "5eb332ddc9dc59163c2a4dcf72acafb1a370276e22847c4a028e6d164ab2ca99",
}


def build(corpus: Path, tok: Path, out: Path, **kwargs) -> dict:
    kwargs.setdefault("max_seq_len", 32)
    kwargs.setdefault("max_predictions", 5)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("log", lambda message: None)
    return build_pretraining_data([corpus], tok, out, **kwargs)


def npy_sha256(directory: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(directory.rglob("*.npy")):
        digest.update(f.relative_to(directory).as_posix().encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def one_text_per_line(path: Path, texts: int = 300, seed: int = 0, words=(1, 8)) -> Path:
    """A task's unlabelled texts, one per line; every 25th is one bare word (one token, no full stop)."""
    rng = random.Random(seed)
    lines = []
    for i in range(texts):
        if i % 25 == 24:
            lines.append(rng.choice(WORDS))
        else:
            lines.append(
                " ".join(rng.choice(WORDS + MULTI_PIECE) for _ in range(rng.randint(*words))).capitalize() + "."
            )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def originals(batch: dict[str, np.ndarray]) -> np.ndarray:
    return np.where(batch["mlm_labels"] != IGNORE_INDEX, batch["mlm_labels"], batch["input_ids"])


def line_ids(path: Path, tok_dir: Path) -> list[tuple[int, ...]]:
    tok = load_tokenizer(tok_dir)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [tuple(tok.backend.encode(line, add_special_tokens=False).ids) for line in lines]


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_default_objective_output_is_unchanged(tmp_path, corpus_file, tiny_tokenizer_dir, kind):
    settings = {"dupe_factor": 2} if kind == "static" else {"dynamic_masking": True}
    manifest = build(corpus_file, tiny_tokenizer_dir, tmp_path / kind, part_tokens=500, **settings)
    assert manifest["objective"] == "mlm+nsp" and manifest["masking"] == "token"
    assert npy_sha256(tmp_path / kind) == DEFAULT_OUTPUT_SHA256[kind]


@pytest.mark.parametrize("dynamic", [False, True])
def test_mlm_packs_whole_texts_into_one_segment_without_pair_labels(tmp_path, tiny_tokenizer_dir, dynamic):
    texts = one_text_per_line(tmp_path / "texts.txt")
    settings = {"dynamic_masking": True} if dynamic else {"dupe_factor": 1}
    manifest = build(texts, tiny_tokenizer_dir, tmp_path / "out", input_format="lines", objective="mlm", **settings)
    data = open_pretraining_data(tmp_path / "out")
    assert manifest["objective"] == data.objective == "mlm"
    assert "random_next" not in manifest["counts"] and manifest["counts"]["documents"] == 300
    assert not list((tmp_path / "out").rglob("nsp_labels.npy"))
    batch = data.get_batch(np.arange(len(data)))
    assert "nsp_labels" not in batch and not batch["token_type_ids"].any()
    tok = load_tokenizer(tiny_tokenizer_dir)
    ids = originals(batch)
    budget = 32 - 2
    texts_seen, used = [], []
    for i in range(len(ids)):
        n = int(batch["attention_mask"][i].sum())
        assert ids[i, 0] == tok.cls_id and ids[i, n - 1] == tok.sep_id and n <= 32
        inner = ids[i, 1 : n - 1].tolist()
        seps = [k for k, t in enumerate(inner) if t == tok.sep_id]
        assert not (batch["mlm_labels"][i, 1 : n - 1][seps] != IGNORE_INDEX).any()  # a separator is never masked
        pieces = np.split(np.array(inner), seps)
        texts_seen += [tuple(p[p != tok.sep_id].tolist()) for p in pieces]
        used.append((n - 2, len(pieces[0])))
    # every text exactly once, whole (none is longer than a sequence)
    assert sorted(texts_seen) == sorted(line_ids(texts, tiny_tokenizer_dir))
    # greedy packing: a sequence ends only when the next text with its [SEP] would not fit
    for (length, _), (_, first_text) in zip(used[:-1], used[1:]):
        assert length + 1 + first_text > budget
    assert np.mean([length for length, _ in used]) > budget / 2  # far fuller than one short text per sequence


def test_mlm_cuts_a_text_longer_than_a_sequence(tmp_path, tiny_tokenizer_dir):
    texts = one_text_per_line(tmp_path / "texts.txt", texts=40, words=(30, 40))
    manifest = build(texts, tiny_tokenizer_dir, tmp_path / "out", input_format="lines", objective="mlm", dupe_factor=1)
    batch = open_pretraining_data(tmp_path / "out").get_batch(np.arange(manifest["counts"]["instances"]))
    lengths = batch["attention_mask"].sum(1)
    assert lengths.max() == 32  # full sequences
    tok = load_tokenizer(tiny_tokenizer_dir)
    content = sum(
        int(((row[:n] != tok.cls_id) & (row[:n] != tok.sep_id)).sum()) for row, n in zip(originals(batch), lengths)
    )
    assert content == manifest["counts"]["corpus_tokens"]  # no token lost or repeated


@pytest.mark.parametrize("dynamic", [False, True])
def test_sop_pairs_are_two_consecutive_spans_in_or_out_of_order(tmp_path, tiny_tokenizer_dir, dynamic):
    texts = one_text_per_line(tmp_path / "texts.txt", texts=400)
    settings = {"dynamic_masking": True} if dynamic else {"dupe_factor": 1}
    manifest = build(texts, tiny_tokenizer_dir, tmp_path / "out", input_format="lines", objective="mlm+sop", **settings)
    data = open_pretraining_data(tmp_path / "out")
    batch = data.get_batch(np.arange(len(data)))
    tok = load_tokenizer(tiny_tokenizer_dir)
    ids = originals(batch)
    lines = set(line_ids(texts, tiny_tokenizer_dir))
    one_token = sum(1 for line in lines_of(texts) if len(tok.backend.encode(line, add_special_tokens=False).ids) == 1)
    counts = manifest["counts"]
    # One-sentence documents are cut at a word boundary; a one-token text cannot be cut and is skipped.
    assert counts["chunks_skipped_one_word"] == one_token > 0
    assert counts["sentences_cut_for_order"] == counts["instances"] == 400 - one_token
    for i in range(len(ids)):
        n = int(batch["attention_mask"][i].sum())
        first_sep = int(np.nonzero(ids[i, :n] == tok.sep_id)[0][0])
        a, b = tuple(ids[i, 1:first_sep].tolist()), tuple(ids[i, first_sep + 1 : n - 1].tolist())
        assert a and b and (batch["token_type_ids"][i, first_sep + 1 : n] == 1).all()
        in_order = a + b if batch["nsp_labels"][i] == 0 else b + a
        assert in_order in lines  # the same two spans of one text, shown in order or swapped
    swapped = batch["nsp_labels"].mean()
    assert counts["swapped_fraction"] == pytest.approx(swapped, abs=0.5e-6)  # rounded to 6 decimals
    assert swapped == pytest.approx(0.5, abs=binomial_tolerance(0.5, len(ids)))  # a fair coin per pair


def lines_of(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_sop_pairs_of_multi_sentence_documents_follow_the_chunks():
    """Without truncation A and B touch: A's end is B's start (in order) or B's end is A's start (swapped)."""
    rng = random.Random(2)
    sentence_lengths = [[rng.randint(1, 9) for _ in range(rng.randint(1, 8))] for _ in range(300)]
    sent_starts = np.concatenate([[0], np.cumsum([n for doc in sentence_lengths for n in doc])])
    doc_starts = np.concatenate([[0], np.cumsum([len(doc) for doc in sentence_lengths])])
    plan = ShardPlan(1000, 4, 0.5, False, "token", 0, 100, 2, 3, 4, "uint16", "mlm+sop")
    every_token_a_word = lambda index: np.ones(len(index), dtype=bool)  # noqa: E731
    a_s, a_e, b_s, b_e, swapped, counts = _create_sop_pairs(
        np.arange(300), sent_starts, doc_starts, plan, random.Random(4), every_token_a_word
    )
    doc_of = np.searchsorted(sent_starts[doc_starts], np.stack([a_s, b_s]), side="right") - 1
    assert (doc_of[0] == doc_of[1]).all()  # both spans from one document
    assert ((a_e == b_s) == (swapped == 0)).all() and ((b_e == a_s) == (swapped == 1)).all()
    assert ((a_e > a_s) & (b_e > b_s)).all()
    assert swapped.mean() == pytest.approx(0.5, abs=binomial_tolerance(0.5, len(swapped)))
    single_token_documents = sum(doc == [1] for doc in sentence_lengths)
    assert counts["chunks_skipped_one_word"] >= single_token_documents


def word_groups(ids: np.ndarray, n: int, continuation: np.ndarray, specials: set[int]) -> list[list[int]]:
    """Positions of each word in a sequence: a token and its following `##` pieces, never across a special."""
    groups: list[list[int]] = []
    for t in range(1, n):
        if int(ids[t]) in specials:
            continue
        if continuation[ids[t]] and groups and groups[-1][-1] == t - 1:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


@pytest.mark.parametrize(
    ("objective", "masking", "dynamic"),
    [
        ("mlm", "whole-word", True),
        ("mlm", "span", False),
        ("mlm", "span", True),
        ("mlm+sop", "whole-word", False),
        ("mlm+sop", "span", True),
        ("mlm+nsp", "span", False),
    ],
)
def test_whole_word_and_span_masking_never_mask_part_of_a_word(
    tmp_path, tiny_tokenizer_dir, objective, masking, dynamic
):
    corpus = data_testkit.make_corpus(tmp_path / "c.txt", documents=80, seed=11)
    settings = {"dynamic_masking": True} if dynamic else {"dupe_factor": 2}
    build(
        corpus,
        tiny_tokenizer_dir,
        tmp_path / "out",
        objective=objective,
        masking=masking,
        max_predictions=8,
        **settings,
    )
    data = open_pretraining_data(tmp_path / "out")
    assert data.masking == masking
    tok = load_tokenizer(tiny_tokenizer_dir)
    continuation = np.array([tok.id_to_token(i).startswith("##") for i in range(tok.vocab_size)])
    batch = data.get_batch(np.arange(len(data)), epoch=1)
    ids, predicted = originals(batch), batch["mlm_labels"] != IGNORE_INDEX
    multi_piece_masked = 0
    for i in range(len(ids)):
        n = int(batch["attention_mask"][i].sum())
        for group in word_groups(ids[i], n, continuation, {tok.cls_id, tok.sep_id}):
            assert predicted[i, group].all() or not predicted[i, group].any(), (i, group)
            multi_piece_masked += int(len(group) > 1 and predicted[i, group[0]])
    assert multi_piece_masked > 20


def random_words(rows: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lengths, candidates, word_starts) of `rows` sequences of `width` tokens, a [SEP] in the middle."""
    rng = np.random.default_rng(seed)
    lengths = np.full(rows, width)
    pos = np.arange(width)[None, :]
    middle = rng.integers(5, width - 5, rows)[:, None]
    candidates = (pos > 0) & (pos < width - 1) & (pos != middle)
    word_starts = rng.random((rows, width)) < 0.6  # words of 1.7 pieces on average
    return lengths, np.broadcast_to(candidates, (rows, width)).copy(), word_starts


@pytest.mark.parametrize("masking", ["whole-word", "span"])
def test_budget_and_80_10_10_per_unit(masking):
    rows, width, vocab = 400, 80, 1 << 20  # a large vocabulary: a random id is never [MASK] by chance
    lengths, candidates, word_starts = random_words(rows, width, seed=1)
    ids = np.broadcast_to(np.arange(100, 100 + width), (rows, width)).copy()
    keys = np.arange(rows, dtype=np.uint64) * np.uint64(7919)
    inputs, labels = mask_batch(ids, lengths, candidates, word_starts, keys, 64, vocab, 4, masking)
    selected = labels != IGNORE_INDEX
    assert not (selected & ~candidates).any()
    budget = np.rint(0.15 * lengths)
    assert (selected.sum(1) <= budget).all()
    # a word that does not fit the budget's remainder is passed over, so a row may fall a little short
    assert selected.sum() / lengths.sum() == pytest.approx(0.15, abs=binomial_tolerance(0.15, lengths.sum()))
    # each unit (a word; for span masking a span) is replaced as a whole: [MASK], kept or random ids
    if masking == "span":
        _, unit_first = _select_spans(candidates, word_starts, keys, budget.astype(np.int64))  # as mask_batch does
    else:
        word_start = candidates & (word_starts | ~np.roll(candidates, 1, axis=1))
        unit_first = np.maximum.accumulate(np.where(word_start, np.arange(width), 0), axis=1)
    units = as_mask = kept = 0
    for i in range(rows):
        for first in np.unique(unit_first[i][selected[i]]):
            members = selected[i] & (unit_first[i] == first)
            units += 1
            as_mask += int((inputs[i, members] == 4).all())
            kept += int((inputs[i, members] == ids[i, members]).all())
            assert (inputs[i, members] == 4).all() or not (inputs[i, members] == 4).any()
    assert as_mask / units == pytest.approx(0.8, abs=binomial_tolerance(0.8, units))
    assert kept / units == pytest.approx(0.1, abs=binomial_tolerance(0.1, units))


def test_spans_are_runs_of_whole_words_of_geometric_length():
    rows, width = 300, 120
    lengths, candidates, word_starts = random_words(rows, width, seed=2)
    keys = np.arange(rows, dtype=np.uint64) + np.uint64(12345)
    budget = np.rint(0.15 * lengths).astype(np.int64)
    selected, span_first = _select_spans(candidates, word_starts, keys, budget)
    assert (selected.sum(1) <= budget).all()
    span_words = []
    for i in range(rows):
        for first in np.unique(span_first[i][selected[i]]):
            members = np.flatnonzero(selected[i] & (span_first[i] == first))
            assert members[0] == first and (np.diff(members) == 1).all()  # contiguous, from its first token
            assert candidates[i, members].all()  # never across a special token
            assert word_starts[i, first] or not candidates[i, first - 1]  # starts at a word start
            after = members[-1] + 1
            assert after >= width or word_starts[i, after] or not candidates[i, after]  # ends at a word end
            span_words.append(int(word_starts[i, members].sum() + (not word_starts[i, first])))
    assert max(span_words) <= SPAN_MAX_WORDS
    # the length draw itself: geometric (p = 0.2) cut at 10 words
    draws = np.searchsorted(_SPAN_LENGTH_CDF, np.random.default_rng(0).random(20000), side="right") + 1
    one_word = SPAN_P / (1 - (1 - SPAN_P) ** SPAN_MAX_WORDS)
    assert (draws == 1).mean() == pytest.approx(one_word, abs=binomial_tolerance(one_word, len(draws)))
    # spans are cut short by the budget and by words already masked, yet most are longer than one word
    assert np.mean(np.array(span_words) > 1) > 0.5, np.bincount(span_words)


def test_masking_options_are_deterministic_by_seed(tmp_path, corpus_file, tiny_tokenizer_dir):
    common = dict(objective="mlm", masking="span", dupe_factor=2, part_tokens=400)
    build(corpus_file, tiny_tokenizer_dir, tmp_path / "a", workers=1, **common)
    build(corpus_file, tiny_tokenizer_dir, tmp_path / "b", workers=2, **common)
    build(corpus_file, tiny_tokenizer_dir, tmp_path / "c", seed=7, **common)
    assert npy_sha256(tmp_path / "a") == npy_sha256(tmp_path / "b") != npy_sha256(tmp_path / "c")


def test_unknown_objective_or_masking_is_a_one_line_error(tmp_path, corpus_file, tiny_tokenizer_dir, capsys):
    from training.pretraining_data_cli import main

    argv = ["pretraining", "--input", str(corpus_file), "--tokenizer", str(tiny_tokenizer_dir), "--no-progress"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "a"), "--objective", "nsp"])
    assert exit_info.value.code == 2 and "invalid choice: 'nsp'" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "b"), "--objective", "mlm", "--masking", "whole-word"]) == 0
    assert "mlm instances" in capsys.readouterr().out

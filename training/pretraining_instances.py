"""The instances of one shard, for the pretraining objective of the build.

`mlm+nsp` (the default): MLM + NSP pairs as the original BERT `create_pretraining_data.py` makes them.
- a target length is drawn once per document: `max_seq_len - 3`, or with probability
  `short_seq_prob` a uniform length in `[2, max_seq_len - 3]`;
- sentences are appended to a chunk until it reaches the target or the document ends; A takes a
  random number (>= 1) of the chunk's sentences;
- B is the rest of the chunk ("is next", label 0) or, with probability 0.5 and always when the
  chunk has one sentence, a span from a random other document (label 1), and the unused sentences
  of the chunk are put back;
- the pair is cut to `max_seq_len - 3` tokens by removing tokens from the longer side, from the
  front or the back at random; `[CLS] A [SEP] B [SEP]`, token types 0 through the first [SEP].

`mlm+sop` (ALBERT's sentence-order prediction): the same chunks and A/B cut, B always the rest of
the chunk; with probability 0.5 A and B are swapped (label 1, else 0). A chunk of one sentence (a
one-sentence document, or a sentence that fills the target alone) is cut in two at a random word
boundary inside it; a one-word chunk cannot be cut and is skipped (counted in the manifest).

`mlm` (RoBERTa's FULL-SENTENCES): one segment, `[CLS] text [SEP]`, packed with whole consecutive
sentences up to `max_seq_len - 2` tokens. Packing crosses document boundaries (documents in the
block's shuffled order) with a [SEP] between two documents; a sentence that does not fit starts
the next sequence, and one longer than a sequence is cut into sequence-sized pieces. No target
length is drawn (`short_seq_prob` is unused) and no NSP labels are stored.

Masking (`training/pretraining_masking.py`): static data is masked here, once per dupe round;
dynamic data is masked by the loader.

A shard is one (block, dupe round, part of the block's documents); its randomness comes from
(seed, block, round, part) only, so the output does not depend on which worker builds it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.pretraining_masking import IGNORE_INDEX, derive_key, keys_for_rows, mask_batch


@dataclass(frozen=True)
class ShardPlan:
    """Settings every shard task needs (picklable, sent to worker processes)."""

    max_seq_len: int
    max_predictions: int
    short_seq_prob: float
    dynamic_masking: bool
    masking: str  # token | whole-word | span
    seed: int
    vocab_size: int
    cls_id: int
    sep_id: int
    mask_id: int
    token_dtype: str
    objective: str = "mlm+nsp"  # mlm+nsp | mlm+sop | mlm


@dataclass(frozen=True)
class ShardTask:
    block_dir: Path
    block: int
    round: int
    part: int
    doc_begin: int  # slice of the block's shuffled document order
    doc_end: int
    shard_dir: Path


def build_shard(task: ShardTask, plan: ShardPlan) -> dict:
    """Create, mask and write the instances of one (block, round, part); returns its counts."""
    block = {
        name: np.load(task.block_dir / f"{name}.npy", mmap_mode="r")
        for name in ("ids", "sent_starts", "doc_starts", "order")
    }
    sent_starts = np.asarray(block["sent_starts"])
    doc_starts = np.asarray(block["doc_starts"])
    docs = np.asarray(block["order"][task.doc_begin : task.doc_end])
    task_key = derive_key(plan.seed, task.block, task.round, task.part)
    rng = random.Random(task_key)
    ids_src = block["ids"]
    word_start_file = task.block_dir / "word_starts.npy"
    counts: dict[str, int] = {}
    if plan.objective == "mlm":
        pieces, lengths = _pack_sequences(docs, sent_starts, doc_starts, plan.max_seq_len - 2)
        la = lengths - 2  # the single segment, [SEP]s between documents included
        labels = None
    else:
        if plan.objective == "mlm+sop":

            def word_start(index: np.ndarray) -> np.ndarray:
                if word_start_file.exists():
                    return np.load(word_start_file, mmap_mode="r")[index] != 0
                return ~_continuation_table(task.block_dir.parent.parent)[np.asarray(ids_src[index]).astype(np.int64)]

            a_s, a_e, b_s, b_e, labels, counts = _create_sop_pairs(docs, sent_starts, doc_starts, plan, rng, word_start)
            counts["swapped"] = int(labels.sum())
        else:
            a_s, a_e, b_s, b_e, labels = _create_pairs(docs, sent_starts, doc_starts, plan, rng)
            counts["random_next"] = int(labels.sum())
        la, lb = a_e - a_s, b_e - b_s
        lengths = la + lb + 3
        pieces = (  # (instance, first destination offset, source start, length) of A and of B
            np.concatenate([np.arange(len(la)), np.arange(len(la))]),
            np.concatenate([np.ones_like(la), la + 2]),
            np.concatenate([a_s, b_s]),
            np.concatenate([la, lb]),
        )
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    gather = np.full(int(starts[-1]), -1, dtype=np.int64)  # source index per output token; -1 = special
    instance, offset, seg_start, seg_len = pieces
    dst, src = _segment_index(starts[instance] + offset, seg_start, seg_len)
    gather[dst] = src
    special = gather < 0
    tokens = np.asarray(ids_src[np.where(special, 0, gather)]).astype(np.int64)
    tokens[special] = plan.sep_id
    tokens[starts[:-1]] = plan.cls_id
    word_starts = None
    if plan.masking != "token":
        if word_start_file.exists():
            word_starts = np.load(word_start_file, mmap_mode="r")[np.where(special, 0, gather)] != 0
        else:
            word_starts = ~_continuation_table(task.block_dir.parent.parent)[tokens]
        word_starts |= special

    arrays = {"starts": starts, "a_lengths": la.astype(np.uint16)}
    if labels is not None:
        arrays["nsp_labels"] = labels.astype(np.uint8)
    masked = 0
    if plan.dynamic_masking:
        if word_starts is not None:
            arrays["word_starts"] = word_starts.astype(np.uint8)
    else:
        tokens, positions, mlm_labels = _mask_static(tokens, starts, la, word_starts, task_key, plan)
        arrays["mlm_positions"] = positions
        arrays["mlm_labels"] = mlm_labels.astype(plan.token_dtype)
        masked = int((positions > 0).sum())
    arrays["input_ids"] = tokens.astype(plan.token_dtype)

    tmp = task.shard_dir.with_name(task.shard_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, values in arrays.items():
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(values))
    counts = {"name": task.shard_dir.name, "instances": len(la), "tokens": int(starts[-1]), **counts}
    counts["masked_tokens"] = masked
    (tmp / "counts.json").write_text(json.dumps(counts) + "\n", encoding="utf-8")
    os.replace(tmp, task.shard_dir)
    return counts


def _segment_index(dst_first: np.ndarray, src_first: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat (destination, source) indices of segments of `lengths` tokens."""
    total = int(lengths.sum())
    seg_offset = np.repeat(np.cumsum(lengths) - lengths, lengths)
    within = np.arange(total, dtype=np.int64) - seg_offset
    return np.repeat(dst_first, lengths) + within, np.repeat(src_first, lengths) + within


def _create_pairs(
    docs: np.ndarray, sent_starts: np.ndarray, doc_starts: np.ndarray, plan: ShardPlan, rng: random.Random
) -> tuple[np.ndarray, ...]:
    """The original `create_instances_from_document`, on token index ranges of the block.

    Returns arrays (a_start, a_end, b_start, b_end, is_random) of token indices into the block;
    A and B are each contiguous because a document's sentences are contiguous in the block.
    """
    max_tokens = plan.max_seq_len - 3
    ss = sent_starts.tolist()
    ds = doc_starts.tolist()
    num_docs = len(ds) - 1
    a_s: list[int] = []
    a_e: list[int] = []
    b_s: list[int] = []
    b_e: list[int] = []
    nsp: list[int] = []
    rand = rng.random
    for d in docs.tolist():
        first, last = ds[d], ds[d + 1]  # sentence range of the document
        target = max_tokens
        if rand() < plan.short_seq_prob:
            target = 2 + int(rand() * (max_tokens - 1))  # uniform in [2, max_tokens]
        chunk_first = first
        i = first
        while i < last:
            if i == last - 1 or ss[i + 1] - ss[chunk_first] >= target:
                n = i - chunk_first + 1
                a_end = chunk_first + (1 + int(rand() * (n - 1)) if n >= 2 else 1)  # sentence index, exclusive
                sa, ea = ss[chunk_first], ss[a_end]
                if n == 1 or rand() < 0.5:
                    is_random = 1
                    target_b = target - (ea - sa)
                    other = d
                    for _ in range(10):
                        other = int(rand() * num_docs)
                        if other != d:
                            break
                    j = ds[other] + int(rand() * (ds[other + 1] - ds[other]))
                    sb = ss[j]
                    j_end = ds[other + 1]
                    while j < j_end:
                        j += 1
                        if ss[j] - sb >= target_b:
                            break
                    eb = ss[j]
                    i = a_end - 1  # the unused sentences of the chunk go back
                else:
                    is_random = 0
                    sb, eb = ea, ss[i + 1]
                sa, ea, sb, eb = _truncate_pair(sa, ea, sb, eb, max_tokens, rng)
                a_s.append(sa)
                a_e.append(ea)
                b_s.append(sb)
                b_e.append(eb)
                nsp.append(is_random)
                chunk_first = i + 1
            i += 1
    as_array = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return as_array(a_s), as_array(a_e), as_array(b_s), as_array(b_e), as_array(nsp)


def _create_sop_pairs(
    docs: np.ndarray,
    sent_starts: np.ndarray,
    doc_starts: np.ndarray,
    plan: ShardPlan,
    rng: random.Random,
    word_start,
) -> tuple:
    """ALBERT's sentence-order pairs: BERT's chunks, B always the rest of the chunk, swapped half the time.

    `word_start(index array)` says which block tokens start a word (where a one-sentence chunk may
    be cut). Returns (a_start, a_end, b_start, b_end, swapped) as in `_create_pairs`, with A and B
    already in the order the instance shows them, and counts of cut and skipped chunks.
    """
    max_tokens = plan.max_seq_len - 3
    ss = sent_starts.tolist()
    ds = doc_starts.tolist()
    rows: list[tuple[int, int, int, int, int]] = []
    counts = {"sentences_cut_for_order": 0, "chunks_skipped_one_word": 0}
    rand = rng.random
    for d in docs.tolist():
        first, last = ds[d], ds[d + 1]
        target = max_tokens
        if rand() < plan.short_seq_prob:
            target = 2 + int(rand() * (max_tokens - 1))
        chunk_first = first
        for i in range(first, last):
            if i < last - 1 and ss[i + 1] - ss[chunk_first] < target:
                continue
            n = i - chunk_first + 1
            if n >= 2:
                a_end = chunk_first + 1 + int(rand() * (n - 1))
                sa, ea, sb, eb = ss[chunk_first], ss[a_end], ss[a_end], ss[i + 1]
            else:  # one sentence: cut it at a word boundary inside it
                inside = np.arange(ss[i] + 1, ss[i + 1])
                cuts = inside[word_start(inside)]
                chunk_first = i + 1
                if len(cuts) == 0:
                    counts["chunks_skipped_one_word"] += 1
                    continue
                cut = int(cuts[int(rand() * len(cuts))])
                sa, ea, sb, eb = ss[i], cut, cut, ss[i + 1]
                counts["sentences_cut_for_order"] += 1
            sa, ea, sb, eb = _truncate_pair(sa, ea, sb, eb, max_tokens, rng)
            swapped = int(rand() < 0.5)
            rows.append((sb, eb, sa, ea, 1) if swapped else (sa, ea, sb, eb, 0))
            chunk_first = i + 1
    table = np.asarray(rows, dtype=np.int64).reshape(-1, 5)
    return (*table.T, counts)


def _pack_sequences(
    docs: np.ndarray, sent_starts: np.ndarray, doc_starts: np.ndarray, budget: int
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """RoBERTa's FULL-SENTENCES packing of the documents `docs` (in this order) into sequences.

    Whole sentences fill up to `budget` tokens; a [SEP] goes between two documents in one
    sequence; a sentence that does not fit starts the next sequence, and one longer than `budget`
    is cut into `budget`-sized pieces. Returns ((instance, destination offset, source start,
    length) of every piece, with source -1 for a [SEP]) and the lengths of the sequences with
    [CLS] and the final [SEP].
    """
    ss = sent_starts.tolist()
    ds = doc_starts.tolist()
    pieces: list[tuple[int, int, int, int]] = []  # (instance, offset, source start or -1, length)
    lengths: list[int] = []
    used = 0  # tokens in the open sequence, [CLS] and the final [SEP] not counted

    def close() -> None:
        nonlocal used
        if used:
            lengths.append(used + 2)
            used = 0

    def add(source: int, length: int) -> None:
        nonlocal used
        instance = len(lengths)
        last = pieces[-1] if pieces else None
        if last is not None and last[0] == instance and last[2] >= 0 and last[2] + last[3] == source:
            pieces[-1] = (instance, last[1], last[2], last[3] + length)  # the next sentence of the same text
        else:
            pieces.append((instance, 1 + used, source, length))
        used += length

    for d in docs.tolist():
        new_document = True
        for i in range(ds[d], ds[d + 1]):
            start, length = ss[i], ss[i + 1] - ss[i]
            separator = 1 if new_document and used else 0
            if used + separator + length > budget:
                close()
                separator = 0
            if separator:
                add(-1, 1)
            while length > budget:  # only in an empty sequence: cut the sentence into full sequences
                add(start, budget)
                close()
                start, length = start + budget, length - budget
            add(start, length)
            new_document = False
    close()
    table = np.asarray(pieces, dtype=np.int64).reshape(-1, 4)
    real = table[:, 2] >= 0  # [SEP] pieces stay -1 in the gather: the build writes [SEP] there
    return tuple(table[real].T), np.asarray(lengths, dtype=np.int64)


def _truncate_pair(sa: int, ea: int, sb: int, eb: int, max_tokens: int, rng: random.Random) -> tuple[int, ...]:
    """Original `truncate_seq_pair`: drop from the longer side (B on ties), front or back at random.

    The removal counts follow from the lengths; each removal picks front or back with a fair
    coin, so the front count is Binomial(removals, 1/2), drawn from that many random bits.
    """
    la, lb = ea - sa, eb - sb
    excess = la + lb - max_tokens
    if excess <= 0:
        return sa, ea, sb, eb
    if la > lb:
        ra = min(excess, la - lb)
        rb = 0
    else:
        rb = min(excess, lb - la)
        ra = 0
    rest = excess - ra - rb
    rb += (rest + 1) // 2
    ra += rest // 2
    if ra:
        front = rng.getrandbits(ra).bit_count()
        sa, ea = sa + front, ea - (ra - front)
    if rb:
        front = rng.getrandbits(rb).bit_count()
        sb, eb = sb + front, eb - (rb - front)
    return sa, ea, sb, eb


def _mask_static(
    tokens: np.ndarray,
    starts: np.ndarray,
    a_len: np.ndarray,
    word_starts: np.ndarray | None,
    task_key: int,
    plan: ShardPlan,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask every instance once; returns (masked flat tokens, positions (N, P), labels (N, P))."""
    n = len(a_len)
    P = plan.max_predictions
    out = tokens.copy()
    positions = np.zeros((n, P), dtype=np.uint16)
    labels = np.zeros((n, P), dtype=np.int64)
    chunk = 4096
    for c0 in range(0, n, chunk):
        c1 = min(n, c0 + chunk)
        lengths = starts[c0 + 1 : c1 + 1] - starts[c0:c1]
        T = int(lengths.max())
        pos = np.arange(T)[None, :]
        in_seq = pos < lengths[:, None]  # (b, T)
        flat = np.where(in_seq, starts[c0:c1, None] + pos, 0)
        ids = np.where(in_seq, tokens[flat], 0)
        ws = (word_starts[flat] & in_seq) if word_starts is not None else None
        candidates = in_seq & (pos > 0) & (pos != (a_len[c0:c1] + 1)[:, None]) & (pos != (lengths - 1)[:, None])
        if plan.objective == "mlm":
            candidates &= ids != plan.sep_id  # the [SEP]s between packed documents
        row_keys = keys_for_rows(task_key, np.arange(c0, c1))
        inputs, lab = mask_batch(ids, lengths, candidates, ws, row_keys, P, plan.vocab_size, plan.mask_id, plan.masking)
        out[flat[in_seq]] = inputs[in_seq]
        chosen = np.where(lab != IGNORE_INDEX, pos, np.iinfo(np.int64).max)
        chosen = np.sort(chosen, axis=1)[:, :P]  # (b, <=P) ascending positions, padding last
        valid = chosen < T
        width = chosen.shape[1]
        positions[c0:c1, :width] = np.where(valid, chosen, 0)
        labels[c0:c1, :width] = np.where(valid, np.take_along_axis(ids, np.where(valid, chosen, 0), axis=1), 0)
    return out, positions, labels


_CONTINUATION_CACHE: dict[Path, np.ndarray] = {}


def _continuation_table(out: Path) -> np.ndarray:
    """bool per vocabulary id: the token is a `##` continuation piece (saved next to the blocks by the build)."""
    if out not in _CONTINUATION_CACHE:
        _CONTINUATION_CACHE[out] = np.load(out / ".blocks" / "continuation.npy")
    return _CONTINUATION_CACHE[out]

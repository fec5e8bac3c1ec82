"""The instances of one shard: MLM + NSP pairs as the original BERT `create_pretraining_data.py` makes them.

Recipe (per document, documents shuffled):
- a target length is drawn once per document: `max_seq_len - 3`, or with probability
  `short_seq_prob` a uniform length in `[2, max_seq_len - 3]`;
- sentences are appended to a chunk until it reaches the target or the document ends; A takes a
  random number (>= 1) of the chunk's sentences;
- B is the rest of the chunk ("is next", label 0) or, with probability 0.5 and always when the
  chunk has one sentence, a span from a random other document (label 1), and the unused sentences
  of the chunk are put back;
- the pair is cut to `max_seq_len - 3` tokens by removing tokens from the longer side, from the
  front or the back at random; `[CLS] A [SEP] B [SEP]`, token types 0 through the first [SEP];
- masking (`training/pretraining_masking.py`): static data is masked here, once per dupe round;
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
    whole_word_mask: bool
    seed: int
    vocab_size: int
    cls_id: int
    sep_id: int
    mask_id: int
    token_dtype: str


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
    word_start_file = task.block_dir / "word_starts.npy"
    sent_starts = np.asarray(block["sent_starts"])
    doc_starts = np.asarray(block["doc_starts"])
    docs = np.asarray(block["order"][task.doc_begin : task.doc_end])
    task_key = derive_key(plan.seed, task.block, task.round, task.part)
    rng = random.Random(task_key)
    a_s, a_e, b_s, b_e, nsp = _create_pairs(docs, sent_starts, doc_starts, plan, rng)

    ids_src = block["ids"]
    la, lb = a_e - a_s, b_e - b_s
    lengths = la + lb + 3
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    gather = np.full(int(starts[-1]), -1, dtype=np.int64)  # source index per output token; -1 = special
    for first, seg_start, seg_len in ((starts[:-1] + 1, a_s, la), (starts[:-1] + 2 + la, b_s, lb)):
        dst, src = _segment_index(first, seg_start, seg_len)
        gather[dst] = src
    special = gather < 0
    tokens = np.asarray(ids_src[np.where(special, 0, gather)]).astype(np.int64)
    tokens[special] = plan.sep_id
    tokens[starts[:-1]] = plan.cls_id
    word_starts = None
    if plan.whole_word_mask:
        if word_start_file.exists():
            word_starts = np.load(word_start_file, mmap_mode="r")[np.where(special, 0, gather)] != 0
        else:
            word_starts = ~_continuation_table(task.block_dir.parent.parent)[tokens]
        word_starts |= special

    arrays = {"starts": starts, "a_lengths": la.astype(np.uint16), "nsp_labels": nsp.astype(np.uint8)}
    masked = 0
    if plan.dynamic_masking:
        if word_starts is not None:
            arrays["word_starts"] = word_starts.astype(np.uint8)
    else:
        tokens, positions, labels = _mask_static(tokens, starts, la, word_starts, task_key, plan)
        arrays["mlm_positions"] = positions
        arrays["mlm_labels"] = labels.astype(plan.token_dtype)
        masked = int((positions > 0).sum())
    arrays["input_ids"] = tokens.astype(plan.token_dtype)

    tmp = task.shard_dir.with_name(task.shard_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, values in arrays.items():
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(values))
    counts = {
        "name": task.shard_dir.name,
        "instances": len(la),
        "tokens": int(starts[-1]),
        "random_next": int(nsp.sum()),
        "masked_tokens": masked,
    }
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
        row_keys = keys_for_rows(task_key, np.arange(c0, c1))
        inputs, lab = mask_batch(ids, lengths, candidates, ws, row_keys, P, plan.vocab_size, plan.mask_id)
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

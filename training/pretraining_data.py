"""Pretraining instances (MLM + NSP) built as the original BERT `create_pretraining_data.py` does,
written as memory-mapped numpy shards, and a loader that serves padded batches from them.

    bert data pretraining --input corpus/*.txt.gz --tokenizer tok/ --out data/ --max-seq-len 128

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
- masking: `min(max_predictions, max(1, round(0.15 * len)))` positions among the non-special
  tokens (whole words together with `whole_word_mask`), each replaced by [MASK] 80% of the time,
  a random vocabulary id 10%, kept 10%.

Static masking repeats the corpus `dupe_factor` times with different pairs and masks; dynamic
masking stores unmasked pairs and draws masks in `get_batch` from (seed, epoch, instance index).

Memory stays bounded: documents are read and tokenized in blocks of `block_tokens` tokens; the
shuffle and the "random document" draw happen within a block (the whole corpus when it fits,
which is then exactly the original recipe; the original also only shuffles within one run).

On-disk layout (`out/`):
    manifest.json            settings, tokenizer sha256, counts, shard list
    tokenizer/               the tokenizer used (tokenizer.json + vocab.txt)
    shard-BBBBB-RR-PPP/      one per (block, dupe round, part of the block's documents)
        input_ids.npy        flat token ids of all instances, uint16 (uint32 for vocabularies > 65535);
                             masked for static masking, original for dynamic masking
        starts.npy           int64 (N + 1): instance i is input_ids[starts[i]:starts[i + 1]]
        a_lengths.npy        uint16 (N): tokens of segment A (without specials)
        nsp_labels.npy       uint8 (N): 0 = B is the next text, 1 = B is random
        mlm_positions.npy    uint16 (N, max_predictions), static only; 0 = unused slot
        mlm_labels.npy       (N, max_predictions) original ids at mlm_positions, static only
        word_starts.npy      uint8 flat like input_ids, dynamic + whole_word_mask only

Output is byte-identical for the same inputs, settings and seed, whatever the number of workers.
"""

from __future__ import annotations

import array
import hashlib
import json
import logging
import multiprocessing
import os
import random
import re
import shutil
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.tokenizer import BertTokenizer, load_tokenizer
from model.wordpiece_fast import IdsEncoder, flat_ids
from training.corpus import FORMATS, read_documents

FORMAT_NAME = "bertkit-pretraining-data"
FORMAT_VERSION = 1
IGNORE_INDEX = -100
MASK_PROB = 0.15

# --- counter-based random numbers --------------------------------------------------------------
# Masks must not depend on which batch an instance lands in, so each random number is a hash
# of (key, position) rather than a draw from a stateful generator.

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrap-around arithmetic is intended)."""
    x = x + _GOLDEN
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _key(*parts: int) -> int:
    """A 64-bit key from small non-negative integers (seed, epoch, block, ...)."""
    x = np.zeros(1, dtype=np.uint64)
    for p in parts:
        x = _mix64(x ^ np.array([p & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    return int(x[0])


def _uniform(row_keys: np.ndarray, width: int, stream: int) -> np.ndarray:
    """(B, width) uniforms in [0, 1) from per-row uint64 keys; `stream` picks an independent set."""
    pos = np.arange(width, dtype=np.uint64) * _U64(0xD1B54A32D192ED03) + _U64(stream * 0x632BE59BD9B4E019 + 1)
    x = _mix64(_mix64(row_keys[:, None] ^ pos[None, :]))  # (B, width)
    return (x >> _U64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _row_keys(base_key: int, indices: np.ndarray) -> np.ndarray:
    return _mix64(np.asarray(indices, dtype=np.uint64) * _U64(0x9FB21C651E98DF25) ^ _U64(base_key))


# --- masking (shared by the static build and the dynamic loader) -------------------------------


def mask_batch(
    ids: np.ndarray,
    lengths: np.ndarray,
    candidates: np.ndarray,
    word_starts: np.ndarray | None,
    row_keys: np.ndarray,
    max_predictions: int,
    vocab_size: int,
    mask_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Masked inputs and MLM labels for a padded batch, as the original recipe picks them.

    ids: (B, T) original ids; lengths: (B,); candidates: (B, T) bool, the maskable positions
    (not [CLS]/[SEP]/padding); word_starts: (B, T) bool, True where a new word starts, or None
    for per-token masking. Returns (inputs (B, T), labels (B, T) with IGNORE_INDEX where not
    predicted). Randomness comes from `row_keys` (B,) only.
    """
    B, T = ids.shape
    num_to_predict = np.minimum(max_predictions, np.maximum(1, np.rint(lengths * MASK_PROB))).astype(np.int64)
    order_key = np.where(candidates, _uniform(row_keys, T, stream=0), 2.0)  # (B, T)
    if word_starts is None:
        # Shuffled candidates, first k of them.
        order = np.argsort(order_key, axis=1, kind="stable")  # (B, T)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(T), (B, T)), axis=1)
        selected = candidates & (rank < num_to_predict[:, None])
    else:
        selected = _select_whole_words(candidates, word_starts, order_key, num_to_predict)
    action = _uniform(row_keys, T, stream=1)  # < 0.8: [MASK]; < 0.9: keep; else random id
    random_ids = np.minimum((_uniform(row_keys, T, stream=2) * vocab_size).astype(np.int64), vocab_size - 1)
    inputs = np.where(selected & (action < 0.8), mask_id, ids)
    inputs = np.where(selected & (action >= 0.9), random_ids, inputs)
    labels = np.where(selected, ids, IGNORE_INDEX)
    return inputs.astype(np.int64), labels.astype(np.int64)


def _select_whole_words(
    candidates: np.ndarray, word_starts: np.ndarray, order_key: np.ndarray, num_to_predict: np.ndarray
) -> np.ndarray:
    """Original greedy rule over shuffled words: take a word if it still fits in the budget."""
    B, T = candidates.shape
    starts = candidates & (word_starts | ~np.roll(candidates, 1, axis=1))  # a word never spans a special token
    starts[:, 0] &= candidates[:, 0]
    word_index = np.where(candidates, np.cumsum(starts, axis=1) - 1, -1)  # (B, T)
    num_words = starts.sum(axis=1)
    W = int(num_words.max()) if B else 0
    if W == 0:
        return np.zeros_like(candidates)
    rows = np.broadcast_to(np.arange(B)[:, None], (B, T))
    flat = rows[candidates] * W + word_index[candidates]
    word_len = np.bincount(flat, minlength=B * W).reshape(B, W)  # (B, W)
    word_key = np.full((B, W), 2.0)
    word_key[rows[starts], word_index[starts]] = order_key[starts]
    order = np.argsort(word_key, axis=1, kind="stable")  # (B, W) words in shuffled order
    sorted_len = np.take_along_axis(word_len, order, axis=1)
    taken_sorted = np.zeros((B, W), dtype=bool)
    count = np.zeros(B, dtype=np.int64)
    for r in range(W):
        fits = (sorted_len[:, r] > 0) & (count + sorted_len[:, r] <= num_to_predict)
        taken_sorted[:, r] = fits
        count += np.where(fits, sorted_len[:, r], 0)
    taken = np.zeros((B, W), dtype=bool)
    np.put_along_axis(taken, order, taken_sorted, axis=1)
    return candidates & taken[rows, np.maximum(word_index, 0)]


# --- the loader ----------------------------------------------------------------------------------


class PretrainingData:
    """Instances of a prepared directory; `get_batch` pads to the longest instance in the batch.

    Keys of a batch (all int64): input_ids (B, T), token_type_ids (B, T), attention_mask (B, T),
    mlm_labels (B, T) (-100 where not predicted, else the original id), nsp_labels (B,)
    (0 = is next, 1 = random). Deterministic for (indices, epoch); static data ignores `epoch`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"{self.path} has no manifest.json; build it with `bert data pretraining`")
        self.manifest: dict = json.loads(manifest_path.read_text(encoding="utf-8"))
        if self.manifest.get("format") != FORMAT_NAME:
            raise ValueError(f"{manifest_path} is not a {FORMAT_NAME} manifest")
        if self.manifest.get("version") != FORMAT_VERSION:
            raise ValueError(f"{manifest_path}: format version {self.manifest.get('version')} is not supported")
        self.dynamic_masking = bool(self.manifest["dynamic_masking"])
        self.whole_word_mask = bool(self.manifest["whole_word_mask"])
        self.max_seq_len = int(self.manifest["max_seq_len"])
        self.max_predictions = int(self.manifest["max_predictions"])
        self.vocab_size = int(self.manifest["vocab_size"])
        self.seed = int(self.manifest["seed"])
        special = self.manifest["special_ids"]
        self.pad_id, self.mask_id = int(special["[PAD]"]), int(special["[MASK]"])
        self.shards = [_open_shard(self.path / s["name"], self.dynamic_masking, self.whole_word_mask)
                       for s in self.manifest["shards"]]  # fmt: skip
        counts = [len(s["a_lengths"]) for s in self.shards]
        self.shard_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._mask_key = _key(self.seed, 0x6D61736B)  # "mask"

    def __len__(self) -> int:
        return int(self.shard_offsets[-1])

    def get_batch(self, indices: np.ndarray | Sequence[int], epoch: int = 0) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            raise ValueError("get_batch needs at least one index")
        if indices.min() < 0 or indices.max() >= len(self):
            raise IndexError(f"instance index out of range [0, {len(self)})")
        B = indices.size
        shard_of = np.searchsorted(self.shard_offsets, indices, side="right") - 1
        local = indices - self.shard_offsets[shard_of]
        lengths = np.empty(B, dtype=np.int64)
        a_len = np.empty(B, dtype=np.int64)
        nsp = np.empty(B, dtype=np.int64)
        for s in np.unique(shard_of):
            rows = np.nonzero(shard_of == s)[0]
            shard = self.shards[s]
            lengths[rows] = shard["starts"][local[rows] + 1] - shard["starts"][local[rows]]
            a_len[rows] = shard["a_lengths"][local[rows]]
            nsp[rows] = shard["nsp_labels"][local[rows]]
        T = int(lengths.max())
        positions = np.arange(T)[None, :]
        in_seq = positions < lengths[:, None]  # (B, T)
        ids = np.full((B, T), self.pad_id, dtype=np.int64)
        word_starts = np.zeros((B, T), dtype=bool) if (self.dynamic_masking and self.whole_word_mask) else None
        labels = np.full((B, T), IGNORE_INDEX, dtype=np.int64)
        for s in np.unique(shard_of):
            rows = np.nonzero(shard_of == s)[0]
            shard = self.shards[s]
            flat = shard["starts"][local[rows]][:, None] + positions  # (b, T)
            valid = in_seq[rows]
            gather = np.where(valid, flat, 0)
            ids[rows] = np.where(valid, shard["input_ids"][gather], self.pad_id)
            if word_starts is not None:
                word_starts[rows] = valid & (shard["word_starts"][gather] != 0)
            if not self.dynamic_masking:
                pos = shard["mlm_positions"][local[rows]].astype(np.int64)  # (b, P)
                lab = shard["mlm_labels"][local[rows]].astype(np.int64)
                r, c = np.nonzero(pos > 0)
                labels[rows[r], pos[r, c]] = lab[r, c]
        first_sep = a_len + 1
        token_type_ids = (in_seq & (positions > first_sep[:, None])).astype(np.int64)
        if self.dynamic_masking:
            candidates = in_seq & (positions > 0) & (positions != first_sep[:, None])
            candidates &= positions != (lengths - 1)[:, None]
            row_keys = _row_keys(_key(self._mask_key, epoch), indices)
            ids, labels = mask_batch(
                ids, lengths, candidates, word_starts, row_keys, self.max_predictions, self.vocab_size, self.mask_id
            )
        return {
            "input_ids": ids,
            "token_type_ids": token_type_ids,
            "attention_mask": in_seq.astype(np.int64),
            "mlm_labels": labels,
            "nsp_labels": nsp,
        }

    def batches(
        self, batch_size: int, epoch: int = 0, shuffle: bool = True, drop_last: bool = False
    ) -> Iterator[dict[str, np.ndarray]]:
        """One epoch of batches; the order is a permutation seeded by (seed, epoch)."""
        order = np.arange(len(self))
        if shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self))
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            yield self.get_batch(order[start : start + batch_size], epoch)


def _open_shard(directory: Path, dynamic: bool, whole_word: bool) -> dict[str, np.ndarray]:
    names = ["input_ids", "starts", "a_lengths", "nsp_labels"]
    names += (["word_starts"] if whole_word else []) if dynamic else ["mlm_positions", "mlm_labels"]
    shard = {}
    for name in names:
        file = directory / f"{name}.npy"
        if not file.exists():
            raise FileNotFoundError(f"{file} is missing; the data directory is incomplete, rebuild it")
        shard[name] = np.load(file, mmap_mode="r")
    return shard


def open_pretraining_data(path: str | Path) -> PretrainingData:
    """Open a directory written by `build_pretraining_data`."""
    return PretrainingData(path)


# --- building ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
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
class _Task:
    block_dir: Path
    block: int
    round: int
    part: int
    doc_begin: int  # slice of the block's shuffled document order
    doc_end: int
    shard_dir: Path


def _build_shard(task: _Task, plan: _Plan) -> dict:
    """Create, mask and write the instances of one (block, round, part); returns its counts."""
    block = {
        name: np.load(task.block_dir / f"{name}.npy", mmap_mode="r")
        for name in ("ids", "sent_starts", "doc_starts", "order")
    }
    word_start_file = task.block_dir / "word_starts.npy"
    sent_starts = np.asarray(block["sent_starts"])
    doc_starts = np.asarray(block["doc_starts"])
    docs = np.asarray(block["order"][task.doc_begin : task.doc_end])
    task_key = _key(plan.seed, task.block, task.round, task.part)
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
    docs: np.ndarray, sent_starts: np.ndarray, doc_starts: np.ndarray, plan: _Plan, rng: random.Random
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
    plan: _Plan,
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
        row_keys = _row_keys(task_key, np.arange(c0, c1))
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
    """bool per vocabulary id: the token is a `##` continuation piece (saved next to the blocks)."""
    if out not in _CONTINUATION_CACHE:
        _CONTINUATION_CACHE[out] = np.load(out / ".blocks" / "continuation.npy")
    return _CONTINUATION_CACHE[out]


# --- reading and tokenizing blocks of documents ----------------------------------------------------

_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")


@dataclass
class _Block:
    ids: list[np.ndarray]  # token ids of sentences, batch by batch, in the token dtype
    sentence_lengths: array.array
    doc_sentences: array.array  # sentences per document
    word_starts: list[np.ndarray] | None
    tokens: int = 0


class _BlockReader:
    """Streams documents from the inputs, tokenizes them in batches, and cuts them into blocks.

    Without a segmenter, batches are tokenized in the worker processes (ids only, through
    `IdsEncoder`), a few batches ahead of the one being added; results are taken in order, so
    the blocks are the same whatever the number of workers.
    """

    batch_sentences = 16384  # sentences per tokenization job

    def __init__(
        self,
        tokenizer: BertTokenizer,
        encoder: IdsEncoder,
        block_tokens: int,
        segmenter: Callable[[str], list[str]] | None,
        token_dtype: str,
        pool: ProcessPoolExecutor | None = None,
        workers: int = 1,
    ):
        self.tokenizer = tokenizer
        self.encoder = encoder  # the pool's workers hold a copy of it (see _make_pool)
        self.block_tokens = block_tokens
        self.segmenter = segmenter
        self.token_dtype = token_dtype
        self.pool = pool if segmenter is None else None
        self.in_flight = 2 * workers if self.pool is not None else 0  # batches tokenized ahead
        self.counts = {"documents": 0, "sentences": 0, "corpus_tokens": 0, "empty_sentences": 0}

    def blocks(self, documents: Iterator[list[str]]) -> Iterator[_Block]:
        block = self._new_block()
        for docs, job in self._tokenized(documents):
            self._add(block, docs, job)
            if block.tokens >= self.block_tokens:
                yield block
                block = self._new_block()
        if block.doc_sentences:
            yield block

    def _tokenized(self, documents: Iterator[list[str]]) -> Iterator[tuple[list[list[str]], Future | tuple]]:
        """(documents, their tokenization job) in order, each job started `in_flight` batches ahead."""
        queue: deque[tuple[list[list[str]], Future | tuple]] = deque()
        for docs in self._batches(documents):
            queue.append((docs, self._tokenize(docs)))
            if len(queue) > self.in_flight:
                yield queue.popleft()
        yield from queue

    def _batches(self, documents: Iterator[list[str]]) -> Iterator[list[list[str]]]:
        """Documents grouped into batches of at least `batch_sentences` sentences."""
        pending: list[list[str]] = []
        pending_sentences = 0
        for doc in documents:
            pending.append(doc)
            pending_sentences += len(doc)
            if pending_sentences >= self.batch_sentences:
                yield pending
                pending, pending_sentences = [], 0
        if pending:
            yield pending

    def _new_block(self) -> _Block:
        return _Block([], array.array("q"), array.array("q"), [] if self.segmenter is not None else None)

    def _tokenize(self, docs: list[list[str]]) -> Future | tuple:
        """(ids in the token dtype, lengths, word starts or None) of the sentences of `docs`, or a future of it."""
        sentences = [s for doc in docs for s in doc]
        if self.segmenter is not None:
            encodings = self.tokenizer.backend.encode_batch(sentences, add_special_tokens=False)
            ids, lengths = flat_ids(encodings)
            return ids.astype(self.token_dtype), lengths, self._word_starts(sentences, encodings, ids)
        if self.pool is not None:
            return self.pool.submit(_encode_ids, sentences, self.token_dtype)
        return _encode_ids(sentences, self.token_dtype, self.encoder)

    def _add(self, block: _Block, docs: list[list[str]], job: Future | tuple) -> None:
        """Append tokenized `docs` to `block`, dropping sentences without tokens."""
        ids, lengths, word_starts = job.result() if isinstance(job, Future) else job
        block.ids.append(ids)
        if block.word_starts is not None:
            block.word_starts.append(word_starts)
        lengths = lengths.tolist()
        k = 0
        for doc in docs:
            kept = 0
            for length in lengths[k : k + len(doc)]:
                if length:
                    block.sentence_lengths.append(length)
                    kept += 1
                else:
                    self.counts["empty_sentences"] += 1
            k += len(doc)
            if kept:
                block.doc_sentences.append(kept)
                self.counts["documents"] += 1
                self.counts["sentences"] += kept
        block.tokens += len(ids)
        self.counts["corpus_tokens"] += len(ids)

    def _word_starts(self, sentences: list[str], encodings, ids: np.ndarray) -> np.ndarray:
        """1 where a token starts a word: not a `##` piece, and for CJK, at a segmenter word boundary."""
        starts = np.empty(len(ids), dtype=np.uint8)
        k = 0
        for text, enc in zip(sentences, encodings):
            tokens = enc.tokens
            flags = [0 if t.startswith("##") else 1 for t in tokens]
            if _CJK_CHAR.search(text):
                boundaries, pos = set(), 0
                for word in self.segmenter(text):
                    boundaries.add(pos)
                    pos += len(word)
                for t, (start, _end) in enumerate(enc.offsets):
                    if _CJK_CHAR.match(text, start) and start not in boundaries:
                        flags[t] = 0
            starts[k : k + len(flags)] = flags
            k += len(flags)
        return starts


_WORKER_ENCODER: IdsEncoder | None = None  # set in each worker process by _make_pool


def _set_worker_encoder(encoder: IdsEncoder) -> None:
    global _WORKER_ENCODER  # noqa: PLW0603 (one encoder, with its cache, per worker process)
    _WORKER_ENCODER = encoder


def _encode_ids(sentences: list[str], token_dtype: str, encoder: IdsEncoder | None = None) -> tuple:
    """(ids in `token_dtype`, int64 lengths, None): a tokenization job, run in a worker or inline."""
    ids, lengths = (encoder or _WORKER_ENCODER).encode_batch(sentences)
    return ids.astype(token_dtype), lengths, None


def _write_block(block: _Block, directory: Path, index: int, seed: int, token_dtype: str, part_tokens: int) -> list:
    """Save a block for the workers; returns the document ranges (begin, end) of its parts."""
    directory.mkdir(parents=True, exist_ok=True)
    ids = np.concatenate(block.ids).astype(token_dtype)
    sent_starts = np.zeros(len(block.sentence_lengths) + 1, dtype=np.int64)
    np.cumsum(np.frombuffer(block.sentence_lengths, dtype=np.int64), out=sent_starts[1:])
    doc_starts = np.zeros(len(block.doc_sentences) + 1, dtype=np.int64)
    np.cumsum(np.frombuffer(block.doc_sentences, dtype=np.int64), out=doc_starts[1:])
    order = np.random.default_rng(_key(seed, index, 0x73687566)).permutation(len(block.doc_sentences))  # "shuf"
    np.save(directory / "ids.npy", ids)
    np.save(directory / "sent_starts.npy", sent_starts)
    np.save(directory / "doc_starts.npy", doc_starts)
    np.save(directory / "order.npy", order)
    if block.word_starts is not None:
        np.save(directory / "word_starts.npy", np.concatenate(block.word_starts))
    doc_tokens = sent_starts[doc_starts[1:]] - sent_starts[doc_starts[:-1]]
    cumulative = np.cumsum(doc_tokens[order])
    cuts = np.searchsorted(cumulative, np.arange(part_tokens, int(cumulative[-1]), part_tokens), side="left") + 1
    bounds = [0, *sorted(set(int(c) for c in cuts if 0 < c < len(order))), len(order)]
    return list(zip(bounds[:-1], bounds[1:]))


# --- the build entry point ---------------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer: BertTokenizer) -> str:
    """sha256 of the tokenizer's full JSON (vocabulary, normalizer, pre-tokenizer, ...)."""
    return hashlib.sha256(tokenizer.backend.to_str().encode("utf-8")).hexdigest()


def _load_segmenter(name: str | None) -> Callable[[str], list[str]] | None:
    if name is None:
        return None
    if name != "jieba":
        raise ValueError(f"unknown Chinese segmenter {name!r}; the supported one is 'jieba'")
    try:
        import jieba  # noqa: PLC0415 (optional dependency)
    except ImportError as err:
        raise ValueError(
            "--chinese-segmenter jieba needs the jieba package: pip install jieba (or pip install 'bertkit[chinese]')"
        ) from err
    jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict ..." lines on stderr
    return lambda text: list(jieba.cut(text))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def build_pretraining_data(
    inputs: Sequence[str | Path],
    tokenizer_dir: str | Path,
    out: str | Path,
    max_seq_len: int = 128,
    max_predictions: int = 20,
    dupe_factor: int | None = None,
    dynamic_masking: bool = False,
    short_seq_prob: float = 0.1,
    whole_word_mask: bool = False,
    seed: int = 12345,
    workers: int = 1,
    input_format: str = "auto",
    text_field: str = "text",
    chinese_segmenter: str | None = None,
    block_tokens: int = 20_000_000,
    part_tokens: int = 1_000_000,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = _stderr,
) -> dict:
    """Build pretraining instances from `inputs` into `out`; returns the manifest (also in out/manifest.json).

    `dupe_factor` defaults to 10 for static masking (as the original) and 1 for dynamic masking.
    Re-running with the same settings resumes: shards already written are kept.
    """
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    if dupe_factor is None:
        dupe_factor = 1 if dynamic_masking else 10
    _check_settings(inputs, max_seq_len, max_predictions, dupe_factor, short_seq_prob, workers, input_format)
    _check_settings_sizes(block_tokens, part_tokens)
    if chinese_segmenter is not None and not whole_word_mask:
        raise ValueError("--chinese-segmenter only changes whole-word masking; add --whole-word-mask")
    tokenizer = load_tokenizer(tokenizer_dir)
    segmenter = _load_segmenter(chinese_segmenter)
    vocab_size = tokenizer.vocab_size
    token_dtype = "uint16" if vocab_size <= 1 << 16 else "uint32"
    settings = {
        "inputs": [str(p) for p in inputs],
        "input_format": input_format,
        "text_field": text_field,
        "max_seq_len": max_seq_len,
        "max_predictions": max_predictions,
        "dupe_factor": dupe_factor,
        "dynamic_masking": dynamic_masking,
        "short_seq_prob": short_seq_prob,
        "masked_lm_prob": MASK_PROB,
        "whole_word_mask": whole_word_mask,
        "chinese_segmenter": chinese_segmenter,
        "seed": seed,
        "block_tokens": block_tokens,
        "part_tokens": part_tokens,
    }
    fingerprint = tokenizer_fingerprint(tokenizer)
    _prepare_out(out, {"settings": settings, "tokenizer_sha256": fingerprint}, overwrite)
    tokenizer.save(out / "tokenizer")
    blocks_dir = out / ".blocks"
    blocks_dir.mkdir(exist_ok=True)
    vocab = tokenizer.get_vocab()
    continuation = np.zeros(vocab_size, dtype=bool)
    for token, index in vocab.items():
        continuation[index] = token.startswith("##")
    np.save(blocks_dir / "continuation.npy", continuation)
    plan = _Plan(
        max_seq_len=max_seq_len,
        max_predictions=max_predictions,
        short_seq_prob=short_seq_prob,
        dynamic_masking=dynamic_masking,
        whole_word_mask=whole_word_mask,
        seed=seed,
        vocab_size=vocab_size,
        cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id,
        mask_id=tokenizer.mask_id,
        token_dtype=token_dtype,
    )
    os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, workers)))
    encoder = IdsEncoder(tokenizer)
    pool = _make_pool(workers, encoder)
    reader = _BlockReader(tokenizer, encoder, block_tokens, segmenter, token_dtype, pool, workers)
    total_bytes = sum(p.stat().st_size for p in inputs)
    read_bar = _bar(progress, total=total_bytes, unit="B", unit_scale=True, desc="tokenizing")
    shard_bar = _bar(progress, total=0, unit="shard", desc="instances", position=1)
    results: list[dict] = []
    pending: list[tuple[Path, list[Future | dict]]] = []
    try:
        documents = _documents(inputs, input_format, text_field, read_bar.update, log)
        for index, block in enumerate(reader.blocks(documents)):
            if len(block.doc_sentences) == 1:
                log(
                    f"warning: block {index} holds a single document; its 'random next' segments come from "
                    "the same document (as in the original recipe). Give more documents for a useful NSP task."
                )
            block_dir = blocks_dir / f"block-{index:05d}"
            parts = _write_block(block, block_dir, index, seed, token_dtype, part_tokens)
            del block
            tasks = [
                _Task(block_dir, index, r, p, begin, end, out / f"shard-{index:05d}-{r:02d}-{p:03d}")
                for r in range(dupe_factor)
                for p, (begin, end) in enumerate(parts)
            ]
            shard_bar.total += len(tasks)
            shard_bar.refresh()
            pending.append((block_dir, [_submit(pool, task, plan) for task in tasks]))
            # Bounded work in flight: wait for older blocks before tokenizing more than one ahead.
            while len(pending) > 1:
                results += _finish(pending.pop(0), shard_bar)
        while pending:
            results += _finish(pending.pop(0), shard_bar)
    finally:
        read_bar.close()
        shard_bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if reader.counts["documents"] == 0:
        raise ValueError("the inputs hold no text: every file is empty or has only blank lines")
    shutil.rmtree(blocks_dir, ignore_errors=True)
    manifest = _manifest(settings, fingerprint, tokenizer, plan, reader.counts, results)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _check_settings(inputs, max_seq_len, max_predictions, dupe_factor, short_seq_prob, workers, input_format) -> None:
    if not inputs:
        raise ValueError("give at least one input file")
    for path in inputs:
        if not path.exists():
            raise FileNotFoundError(f"input file {path} does not exist")
        if path.is_dir():
            raise ValueError(f"{path} is a directory; pass the files inside it")
    if not 5 <= max_seq_len <= 65535:
        raise ValueError(f"max_seq_len must be in [5, 65535] ([CLS] A [SEP] B [SEP] needs 5); got {max_seq_len}")
    if max_predictions < 1:
        raise ValueError(f"max_predictions must be at least 1; got {max_predictions}")
    if dupe_factor < 1:
        raise ValueError(f"dupe_factor must be at least 1; got {dupe_factor}")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob must be in [0, 1]; got {short_seq_prob}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1; got {workers}")
    if input_format not in FORMATS:
        raise ValueError(f"unknown input format {input_format!r}; choose one of {', '.join(FORMATS)}")


def _check_settings_sizes(block_tokens: int, part_tokens: int) -> None:
    if block_tokens < 1 or part_tokens < 1:
        raise ValueError("block_tokens and part_tokens must be positive")


def _prepare_out(out: Path, identity: dict, overwrite: bool) -> None:
    """Create `out`; keep finished shards when the settings match (resume), refuse foreign content."""
    identity_file = out / "build.json"
    if out.exists() and any(out.iterdir()):
        same = identity_file.exists() and json.loads(identity_file.read_text(encoding="utf-8")) == identity
        if overwrite:
            shutil.rmtree(out)
        elif not same:
            raise ValueError(
                f"{out} already holds other content or data built with other settings; "
                "pass --overwrite to replace it or choose another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    identity_file.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")


def _documents(inputs: list[Path], fmt: str, text_field: str, on_bytes, log) -> Iterator[list[str]]:
    for path in inputs:
        count = 0
        for doc in read_documents(path, fmt, text_field, on_bytes):
            count += 1
            yield doc
        if count == 0:
            log(f"warning: {path} holds no text; skipped")


def _make_pool(workers: int, encoder: IdsEncoder) -> ProcessPoolExecutor | None:
    """Worker processes that tokenize batches and build shards; each holds its own `encoder`."""
    if workers <= 1:
        return None
    # fork before the tokenizer starts its threads (the main process only tokenizes itself
    # with a Chinese segmenter); with fork the encoder is inherited, with spawn it is pickled.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(method),
        initializer=_set_worker_encoder,
        initargs=(encoder,),
    )
    pool.submit(int).result()  # start the processes now, before any tokenizer thread runs
    return pool


def _submit(pool: ProcessPoolExecutor | None, task: _Task, plan: _Plan) -> Future | dict:
    counts_file = task.shard_dir / "counts.json"
    if counts_file.exists():  # finished in an earlier run (resume)
        return json.loads(counts_file.read_text(encoding="utf-8"))
    if pool is None:
        return _build_shard(task, plan)
    return pool.submit(_build_shard, task, plan)


def _finish(entry: tuple[Path, list], bar) -> list[dict]:
    block_dir, jobs = entry
    done = []
    for job in jobs:
        done.append(job.result() if isinstance(job, Future) else job)
        bar.update(1)
    shutil.rmtree(block_dir, ignore_errors=True)
    return done


def _bar(enabled: bool, **kwargs):
    from tqdm import tqdm  # noqa: PLC0415 (only the build needs tqdm)

    return tqdm(disable=not enabled, dynamic_ncols=True, mininterval=0.5, **kwargs)


def _manifest(settings, fingerprint, tokenizer, plan, corpus_counts, results) -> dict:
    results = sorted(results, key=lambda r: r["name"])
    instances = sum(r["instances"] for r in results)
    random_next = sum(r["random_next"] for r in results)
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "settings": settings,
        "tokenizer_sha256": fingerprint,
        "tokenizer_dir": "tokenizer",
        "vocab_size": plan.vocab_size,
        "lowercase": tokenizer.lowercase,
        "special_ids": {t: tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")},
        "max_seq_len": plan.max_seq_len,
        "max_predictions": plan.max_predictions,
        "dynamic_masking": plan.dynamic_masking,
        "whole_word_mask": plan.whole_word_mask,
        "seed": plan.seed,
        "token_dtype": plan.token_dtype,
        "counts": {
            **corpus_counts,
            "instances": instances,
            "instance_tokens": sum(r["tokens"] for r in results),
            "random_next": random_next,
            "random_next_fraction": round(random_next / instances, 6) if instances else 0.0,
            "masked_tokens": sum(r["masked_tokens"] for r in results),
        },
        "shards": [{"name": r["name"], "instances": r["instances"], "tokens": r["tokens"]} for r in results],
    }

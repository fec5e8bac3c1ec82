"""Reading and tokenizing the corpus in blocks of documents, for the pretraining-data build.

Memory stays bounded: documents are read and tokenized in blocks of `block_tokens` tokens; the
shuffle and the "random document" draw happen within a block (the whole corpus when it fits,
which is then exactly the original recipe; the original also only shuffles within one run).

Without a Chinese segmenter, tokenization runs in the worker processes, a few batches ahead;
results are taken in order, so the blocks are the same whatever the number of workers.
"""

from __future__ import annotations

import array
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.tokenizer import BertTokenizer
from model.wordpiece_fast import IdsEncoder, flat_ids
from training.pretraining_masking import derive_key

_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")


@dataclass
class Block:
    ids: list[np.ndarray]  # token ids of sentences, batch by batch, in the token dtype
    sentence_lengths: array.array
    doc_sentences: array.array  # sentences per document
    word_starts: list[np.ndarray] | None
    tokens: int = 0


class BlockReader:
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
        self.encoder = encoder  # the pool's workers hold a copy of it (pretraining_build._make_pool)
        self.block_tokens = block_tokens
        self.segmenter = segmenter
        self.token_dtype = token_dtype
        self.pool = pool if segmenter is None else None
        self.in_flight = 2 * workers if self.pool is not None else 0  # batches tokenized ahead
        self.counts = {"documents": 0, "sentences": 0, "corpus_tokens": 0, "empty_sentences": 0}

    def blocks(self, documents: Iterator[list[str]]) -> Iterator[Block]:
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

    def _new_block(self) -> Block:
        return Block([], array.array("q"), array.array("q"), [] if self.segmenter is not None else None)

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

    def _add(self, block: Block, docs: list[list[str]], job: Future | tuple) -> None:
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


_WORKER_ENCODER: IdsEncoder | None = None  # set in each worker process by pretraining_build._make_pool


def set_worker_encoder(encoder: IdsEncoder) -> None:
    global _WORKER_ENCODER  # noqa: PLW0603 (one encoder, with its cache, per worker process)
    _WORKER_ENCODER = encoder


def _encode_ids(sentences: list[str], token_dtype: str, encoder: IdsEncoder | None = None) -> tuple:
    """(ids in `token_dtype`, int64 lengths, None): a tokenization job, run in a worker or inline."""
    ids, lengths = (encoder or _WORKER_ENCODER).encode_batch(sentences)
    return ids.astype(token_dtype), lengths, None


def write_block(block: Block, directory: Path, index: int, seed: int, token_dtype: str, part_tokens: int) -> list:
    """Save a block for the workers; returns the document ranges (begin, end) of its parts."""
    directory.mkdir(parents=True, exist_ok=True)
    ids = np.concatenate(block.ids).astype(token_dtype)
    sent_starts = np.zeros(len(block.sentence_lengths) + 1, dtype=np.int64)
    np.cumsum(np.frombuffer(block.sentence_lengths, dtype=np.int64), out=sent_starts[1:])
    doc_starts = np.zeros(len(block.doc_sentences) + 1, dtype=np.int64)
    np.cumsum(np.frombuffer(block.doc_sentences, dtype=np.int64), out=doc_starts[1:])
    order = np.random.default_rng(derive_key(seed, index, 0x73687566)).permutation(len(block.doc_sentences))  # "shuf"
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

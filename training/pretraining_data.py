"""Prepared pretraining data: the on-disk shard format and the loader that serves padded batches.

Written by `build_pretraining_data` (`training/pretraining_build.py`).

On-disk layout (`out/`):
    manifest.json            settings, tokenizer sha256, counts, shard list
    tokenizer/               the tokenizer used (tokenizer.json + vocab.txt)
    shard-BBBBB-RR-PPP/      one per (block, dupe round, part of the block's documents)
        input_ids.npy        flat token ids of all instances, uint16 (uint32 for vocabularies > 65535);
                             masked for static masking, original for dynamic masking
        starts.npy           int64 (N + 1): instance i is input_ids[starts[i]:starts[i + 1]]
        a_lengths.npy        uint16 (N): tokens of segment A (without specials); for `mlm`, the one
                             segment (with the [SEP]s between packed documents)
        nsp_labels.npy       uint8 (N), not for `mlm`: with `mlm+nsp` 0 = B is the next text, 1 = B
                             is random; with `mlm+sop` 0 = A then B in text order, 1 = swapped
        mlm_positions.npy    uint16 (N, max_predictions), static only; 0 = unused slot
        mlm_labels.npy       (N, max_predictions) original ids at mlm_positions, static only
        word_starts.npy      uint8 flat like input_ids, dynamic with whole-word or span masking only

Static data stores masked inputs; dynamic data stores the original ids, and `get_batch` draws
masks from (seed, epoch, instance index), the same whatever batch an instance lands in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from training.pretraining_masking import IGNORE_INDEX, derive_key, keys_for_rows, mask_batch

FORMAT_NAME = "bertkit-pretraining-data"
FORMAT_VERSION = 1
OBJECTIVES = ("mlm+nsp", "mlm", "mlm+sop")


class PretrainingData:
    """Instances of a prepared directory; `get_batch` pads to the longest instance in the batch.

    Keys of a batch (all int64): input_ids (B, T), token_type_ids (B, T), attention_mask (B, T),
    mlm_labels (B, T) (-100 where not predicted, else the original id), and except for the `mlm`
    objective nsp_labels (B,) (`mlm+nsp`: 0 = is next, 1 = random; `mlm+sop`: 0 = in order,
    1 = swapped). Deterministic for (indices, epoch); static data ignores `epoch`.
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
        # data built before objectives and masking options existed: mlm+nsp, whole_word_mask flag
        self.objective = self.manifest.get("objective", "mlm+nsp")
        self.masking = self.manifest.get("masking") or ("whole-word" if self.manifest["whole_word_mask"] else "token")
        self.has_pair_labels = self.objective != "mlm"
        self.max_seq_len = int(self.manifest["max_seq_len"])
        self.max_predictions = int(self.manifest["max_predictions"])
        self.vocab_size = int(self.manifest["vocab_size"])
        self.seed = int(self.manifest["seed"])
        special = self.manifest["special_ids"]
        self.pad_id, self.mask_id, self.sep_id = (int(special[t]) for t in ("[PAD]", "[MASK]", "[SEP]"))
        self.shards = [_open_shard(self.path / s["name"], self.dynamic_masking, self.masking != "token",
                                   self.has_pair_labels) for s in self.manifest["shards"]]  # fmt: skip
        counts = [len(s["a_lengths"]) for s in self.shards]
        self.shard_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._mask_key = derive_key(self.seed, 0x6D61736B)  # "mask"

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
        nsp = np.zeros(B, dtype=np.int64)
        for s in np.unique(shard_of):
            rows = np.nonzero(shard_of == s)[0]
            shard = self.shards[s]
            lengths[rows] = shard["starts"][local[rows] + 1] - shard["starts"][local[rows]]
            a_len[rows] = shard["a_lengths"][local[rows]]
            if self.has_pair_labels:
                nsp[rows] = shard["nsp_labels"][local[rows]]
        T = int(lengths.max())
        positions = np.arange(T)[None, :]
        in_seq = positions < lengths[:, None]  # (B, T)
        ids = np.full((B, T), self.pad_id, dtype=np.int64)
        word_starts = np.zeros((B, T), dtype=bool) if (self.dynamic_masking and self.masking != "token") else None
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
            if self.objective == "mlm":
                candidates &= ids != self.sep_id  # the [SEP]s between packed documents
            row_keys = keys_for_rows(derive_key(self._mask_key, epoch), indices)
            ids, labels = mask_batch(
                ids, lengths, candidates, word_starts, row_keys, self.max_predictions, self.vocab_size, self.mask_id,
                self.masking,
            )  # fmt: skip
        batch = {
            "input_ids": ids,
            "token_type_ids": token_type_ids,
            "attention_mask": in_seq.astype(np.int64),
            "mlm_labels": labels,
        }
        if self.has_pair_labels:
            batch["nsp_labels"] = nsp
        return batch

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


def _open_shard(directory: Path, dynamic: bool, word_starts: bool, pair_labels: bool) -> dict[str, np.ndarray]:
    names = ["input_ids", "starts", "a_lengths"] + (["nsp_labels"] if pair_labels else [])
    names += (["word_starts"] if word_starts else []) if dynamic else ["mlm_positions", "mlm_labels"]
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

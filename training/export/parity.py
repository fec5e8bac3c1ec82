"""Compare an exported graph with the PyTorch model on padded random ids and on real text."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from core.batches import ModelInput, pad_inputs
from model.tokenizer import BertTokenizer

Feeds = dict[str, np.ndarray]
Runner = Callable[[Feeds], dict[str, np.ndarray]]

FP32_TOLERANCE = 1e-4  # max abs difference allowed between fp32 ONNX variants and PyTorch

SAMPLE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "I did not like this movie at all",
    "Ünïcödé àccents, café crème and naïve façades.",
    "中文字符和 English mixed together.",
]
SAMPLE_PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France, and Berlin is the capital of Germany."),
    ("Who jumps over the dog?", "The quick brown fox jumps over the lazy dog."),
    ("Où est le café?", "Le café est près de la gare, à côté du marché."),
]


def torch_runner(wrapper: torch.nn.Module, outputs: tuple[str, ...]) -> Runner:
    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        tensors = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in feeds.items()}
        with torch.no_grad():
            result = wrapper(tensors["input_ids"], tensors["attention_mask"], tensors["token_type_ids"])
        if isinstance(result, torch.Tensor):
            result = (result,)
        return {name: tensor.float().numpy() for name, tensor in zip(outputs, result)}

    return run


def onnx_runner(session, outputs: tuple[str, ...]) -> Runner:
    inputs = [i.name for i in session.get_inputs()]

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        results = session.run(list(outputs), {name: feeds[name] for name in inputs})
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(outputs, results)}

    return run


def random_batches(tokenizer: BertTokenizer, vocab_size: int, type_vocab_size: int, max_seq_len: int) -> list[Feeds]:
    """Two shapes (so the dynamic axes are exercised), rows of different lengths padded with [PAD]."""
    rng = np.random.default_rng(0)
    batches = []
    for batch, seq in ((4, min(max_seq_len, 32)), (2, min(max_seq_len, 77))):
        lengths = rng.integers(3, seq + 1, size=batch)
        lengths[0] = seq  # at least one row unpadded
        input_ids = np.full((batch, seq), tokenizer.pad_id, dtype=np.int64)
        attention_mask = np.zeros((batch, seq), dtype=np.int64)
        token_type_ids = np.zeros((batch, seq), dtype=np.int64)
        for row, length in enumerate(lengths):
            input_ids[row, :length] = rng.integers(0, vocab_size, size=length)
            input_ids[row, 0], input_ids[row, length - 1] = tokenizer.cls_id, tokenizer.sep_id
            attention_mask[row, :length] = 1
            if type_vocab_size > 1:
                token_type_ids[row, length // 2 : length] = 1
        batches.append({"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids})
    return batches


def text_batch(tokenizer: BertTokenizer, task: str, max_seq_len: int) -> Feeds:
    texts = SAMPLE_PAIRS if task == "question-answering" else SAMPLE_TEXTS
    encodings = tokenizer.encode_batch(list(texts), max_length=max_seq_len)
    return pad_inputs([ModelInput(e.ids, e.type_ids) for e in encodings], tokenizer.pad_id)


def _agreement(task: str, name: str, ref: np.ndarray, test: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """(agreeing, total) argmax decisions the service would make from these outputs."""
    if task == "embedding":
        return 0, 0
    if ref.ndim == 2 and task == "sequence-classification":
        return int((ref.argmax(-1) == test.argmax(-1)).sum()), len(ref)
    if task == "question-answering":  # (B, T): the best start / end among real tokens
        masked_ref = np.where(mask > 0, ref, -np.inf)
        masked_test = np.where(mask > 0, test, -np.inf)
        return int((masked_ref.argmax(-1) == masked_test.argmax(-1)).sum()), len(ref)
    real = mask > 0  # (B, T): token-level outputs
    return int((ref.argmax(-1) == test.argmax(-1))[real].sum()), int(real.sum())


def compare(task: str, reference: Runner, candidate: Runner, batches: list[Feeds]) -> dict:
    """Max abs difference over all outputs (real tokens only for token-level outputs) and argmax agreement."""
    max_diff, agree, total, cosines = 0.0, 0, 0, []
    for feeds in batches:
        ref, test = reference(feeds), candidate(feeds)
        mask = feeds["attention_mask"]
        for name in ref:
            a, b = ref[name], test[name]
            if a.shape != b.shape:
                raise ValueError(f"output {name}: ONNX shape {b.shape} differs from PyTorch {a.shape}")
            if a.ndim >= 2 and a.shape[:2] == mask.shape:  # token-level: padded positions are never read
                diff = np.abs(a - b)[mask > 0]
            else:
                diff = np.abs(a - b)
            max_diff = max(max_diff, float(np.nan_to_num(diff, nan=np.inf).max()))
            n_agree, n = _agreement(task, name, a, b, mask)
            agree, total = agree + n_agree, total + n
            if task == "embedding":
                cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)
                cosines.extend(cos.tolist())
    result = {"max_abs_diff": max_diff}
    if total:
        result["argmax_agreement"] = agree / total
    if cosines:
        result["min_cosine"] = float(min(cosines))
    return result


def alone_vs_batch(run: Runner, batches: list[Feeds]) -> float:
    """Max abs difference between each row run alone (unpadded) and the same row inside its padded batch."""
    max_diff = 0.0
    for feeds in batches:
        batched = run(feeds)
        for row, length in enumerate(feeds["attention_mask"].sum(axis=1)):
            alone = run({name: value[row : row + 1, :length] for name, value in feeds.items()})  # (1, length)
            for name, value in alone.items():
                together = batched[name][row : row + 1]
                if together.shape != value.shape:  # token-level: (1, T, ...) against (1, length, ...)
                    together = together[:, :length]
                diff = np.abs(value - together)
                max_diff = max(max_diff, float(np.nan_to_num(diff, nan=np.inf).max()))
    return max_diff

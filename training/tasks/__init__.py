"""Task data: readers for the standard file formats and feature building. torch-free.

- `classification`: CSV / TSV (with a header) and JSONL; single-label, multi-label, regression.
- `ner`: CoNLL column files (IOB1 / IOB2 / BIOES, normalised to IOB2) and JSONL {tokens, tags}.
- `qa`: SQuAD v1.1 / v2.0 JSON.
"""

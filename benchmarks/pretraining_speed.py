"""Pretraining speed: our trainer's optimizer step against a plain `transformers.BertForPreTraining` loop.

    python benchmarks/pretraining_speed.py              # mini, B=32, T=128
    python benchmarks/pretraining_speed.py --precisions bf16 --device cuda --config base   # on a GPU

Both sides train the same architecture on the same batches (random ids, full-length sequences,
20 masked positions per sequence as `bert data pretraining` makes them, random NSP labels):
- ours: `training.pretrain_step.optimizer_step` (what `bert pretrain` runs each step): the vocabulary
  projection only at masked positions, packed real tokens, SDPA, AdamW without decay on
  biases/LayerNorm, gradient clipping, autocast;
- baseline: `BertForPreTraining(labels=..., next_sentence_label=...)`, `loss.backward()`,
  `torch.optim.AdamW.step()`, under the same autocast: what a user would otherwise write.

Model FLOPs per step count the matmuls of the forward pass (x3 for forward + backward): encoder
projections and feed-forward, attention scores and weighted sums, pooler, NSP, and the MLM head
at the masked positions only (the useful work; the baseline computes the head at every position
and that extra work is not credited). Utilisation = achieved model FLOP/s / the matmul peak
measured in the same run for the same dtype (the best of a few matmul shapes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, markdown_table, median, write_results  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, device: torch.device, seconds: float = 2.0) -> dict:
    """Best FLOP/s of `F.linear` (the op autocast runs for every layer) and `@` over a few shapes.

    On CPUs without native bf16 the two can differ by 10x (oneDNN's reorder-based linear vs a
    plain bf16 GEMM), so the peak is the best path this build has, not a datasheet figure.
    """
    shapes = [(4096, 256, 1024), (4096, 1024, 256), (4096, 768, 3072)]
    if device.type == "cuda":
        shapes.append((8192, 8192, 8192))
    best = {"flops": 0.0}
    for (m, k, n), op in [(shape, op) for shape in shapes for op in ("linear", "matmul")]:
        x = torch.randn(m, k, device=device).to(dtype)
        w = torch.randn(n, k, device=device).to(dtype)
        fn = torch.nn.functional.linear if op == "linear" else (lambda a, b: a @ b.t())
        fn(x, w)
        sync(device)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / (2 * len(shapes)) or calls < 2:
            fn(x, w)
            calls += 1
        sync(device)
        rate = 2 * m * k * n * calls / (time.perf_counter() - start)
        if rate > best["flops"]:
            best = {"flops": rate, "shape": [m, k, n], "op": op}
    return best


def model_flops_per_step(config, batch: int, seq: int, masked: int) -> float:
    """Forward + backward matmul FLOPs (3x forward) of one step, MLM head at `masked` positions only."""
    H, inter, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    tokens = batch * seq
    per_token = L * (2 * 4 * H * H + 2 * 2 * H * inter + 2 * 2 * seq * H)
    head = masked * 2 * (H * H + H * V) + batch * 2 * (H * H + 2 * H)
    return 3.0 * (tokens * per_token + head)


def make_batch(vocab: int, batch: int, seq: int, masked_per_seq: int, device, generator) -> dict:
    ids = torch.randint(5, vocab, (batch, seq), generator=generator)
    ids[:, 0], ids[:, -1] = 2, 3
    labels = torch.full((batch, seq), -100)
    for row in range(batch):
        positions = 1 + torch.randperm(seq - 2, generator=generator)[:masked_per_seq]
        labels[row, positions] = ids[row, positions]
        ids[row, positions] = 4  # [MASK]
    types = torch.zeros_like(ids)
    types[:, seq // 2 :] = 1
    flat = labels.reshape(-1)
    positions = (flat != -100).nonzero().squeeze(1)
    tensors = {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": torch.ones_like(ids),
        "mlm_labels": labels,
        "mlm_positions": positions,
        "mlm_targets": flat[positions],
        "nsp_labels": torch.randint(0, 2, (batch,), generator=generator),
    }
    return {k: v.to(device) for k, v in tensors.items()}


def ours(config, device, precision: str):
    from model import build_model
    from training.device import grad_scaler
    from training.optim import build_optimizer, build_scheduler
    from training.pretrain_step import optimizer_step

    model = build_model(config, "pretraining").to(device).train()
    optimizer = build_optimizer(model, lr=1e-4, fused=True)
    scheduler = build_scheduler(optimizer, 0, 10**9)
    scaler = grad_scaler(device.type, precision)
    keys = ("input_ids", "token_type_ids", "attention_mask", "mlm_positions", "mlm_targets", "nsp_labels")

    def step(batch):
        micro = [{k: batch[k] for k in keys}]
        optimizer_step(model, model, micro, optimizer, scheduler, scaler, 1.0, 1, device.type, precision)

    return step


def baseline(config, device, precision: str):
    import transformers

    hf_config = transformers.BertConfig(**config.to_hf_dict("BertForPreTraining"))
    model = transformers.BertForPreTraining(hf_config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = DTYPES[precision]

    def step(batch):
        with torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32"):
            out = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"],
                labels=batch["mlm_labels"],
                next_sentence_label=batch["nsp_labels"],
            )
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def time_steps(step, batches, device) -> list[float]:
    times = []
    for batch in batches:
        sync(device)
        start = time.perf_counter()
        step(batch)
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    from model import BertConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="mini", help="model preset")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--masked", type=int, default=20, help="masked positions per sequence")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=list(DTYPES))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per trainer per round")
    parser.add_argument(
        "--baseline-steps",
        type=int,
        default=None,
        help="timed baseline steps per round (default: --steps; fewer keeps slow bf16 baselines short)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of ours / baseline")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per trainer")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="pretraining_speed", help="result file name")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = BertConfig.preset(args.config, vocab_size=args.vocab_size, max_position_embeddings=max(512, args.seq_len))
    generator = torch.Generator().manual_seed(0)
    batches = [make_batch(args.vocab_size, args.batch_size, args.seq_len, args.masked, device, generator)
               for _ in range(args.warmup + max(args.steps, args.baseline_steps or 0))]  # fmt: skip
    flops = model_flops_per_step(config, args.batch_size, args.seq_len, args.batch_size * args.masked)
    tokens = args.batch_size * args.seq_len
    results, rows = [], []
    for precision in args.precisions:
        peak = matmul_peak(DTYPES[precision], device)
        print(f"{precision}: matmul peak {peak['flops'] / 1e9:.1f} GFLOP/s ({peak['op']} {peak['shape']})", flush=True)
        torch.manual_seed(0)
        trainers = {"ours": ours(config, device, precision), "transformers": baseline(config, device, precision)}
        for step in trainers.values():
            time_steps(step, batches[: args.warmup], device)
        times: dict[str, list[float]] = {name: [] for name in trainers}
        counts = {"ours": args.steps, "transformers": args.baseline_steps or args.steps}
        for _ in range(args.rounds):
            for name, step in trainers.items():
                times[name] += time_steps(step, batches[args.warmup : args.warmup + counts[name]], device)
                print(f"  {precision} {name}: {[round(t, 3) for t in times[name]]} s/step", flush=True)
        step_s = {name: median(t) for name, t in times.items()}
        # Measured again after the trainers, the best kept: on a shared machine one 2-second probe can be
        # disturbed by another process, which would flatter the utilisation figures.
        peak = max(peak, matmul_peak(DTYPES[precision], device), key=lambda p: p["flops"])
        print(f"{precision}: matmul peak (best of two probes) {peak['flops'] / 1e9:.1f} GFLOP/s", flush=True)
        entry = {
            "precision": precision,
            "matmul_peak_flops": peak["flops"],
            "matmul_peak_shape": peak["shape"],
            "matmul_peak_op": peak["op"],
            "model_flops_per_step": flops,
            "step_seconds": times,
            "median_step_s": step_s,
            "tokens_per_s": {name: tokens / s for name, s in step_s.items()},
            "speedup": step_s["transformers"] / step_s["ours"],
            "model_flops_per_s_ours": flops / step_s["ours"],
            "utilisation_ours": flops / step_s["ours"] / peak["flops"],
            "utilisation_transformers": flops / step_s["transformers"] / peak["flops"],
        }
        results.append(entry)
        rows.append([
            precision,
            f"{tokens / step_s['ours']:.0f}",
            f"{tokens / step_s['transformers']:.0f}",
            f"{entry['speedup']:.2f}x",
            f"{peak['flops'] / 1e9:.1f}",
            f"{entry['model_flops_per_s_ours'] / 1e9:.1f}",
            f"{100 * entry['utilisation_ours']:.0f}%",
            f"{100 * entry['utilisation_transformers']:.0f}%",
        ])  # fmt: skip
    header = ["precision", "ours tokens/s", "transformers tokens/s", "speed-up", "matmul peak GFLOP/s",
              "ours model GFLOP/s", "ours utilisation", "transformers utilisation"]  # fmt: skip
    command = "python benchmarks/pretraining_speed.py " + " ".join(sys.argv[1:])
    intro = (
        f"`{command}` on {args.device} ({torch.get_num_threads()} threads): `{args.config}` "
        f"(L{config.num_hidden_layers}/H{config.hidden_size}), vocab {args.vocab_size}, batch {args.batch_size} x "
        f"{args.seq_len} tokens, {args.masked} masked positions per sequence; median of {args.steps * args.rounds} "
        f"timed optimizer steps for ours and {(args.baseline_steps or args.steps) * args.rounds} for transformers, "
        f"after {args.warmup} warm-up step(s). Model FLOPs/step: {flops / 1e9:.1f} G "
        "(MLM head at masked positions only). Utilisation = model FLOP/s / the matmul peak of that dtype measured "
        "in this run.\n\n"
    )
    table = intro + markdown_table(header, rows)
    payload = {"machine": machine(), "device": args.device, "threads": torch.get_num_threads(), "args": vars(args),
               "results": results}  # fmt: skip
    write_results(args.name, payload, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

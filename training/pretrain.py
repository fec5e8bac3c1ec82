"""MLM + NSP (or MLM + SOP, or MLM only) pretraining: one CPU, one GPU, or many processes and machines via torchrun.

    bert pretrain --model-config mini --data data/train --eval-data data/heldout --out runs/mini \
        --max-steps 10000 --batch-size 32
    bert pretrain ... --resume                                   # continue exactly where it stopped
    bert pretrain --init path/to/all-MiniLM-L6-v2 --data data/minilm --out runs/cont ...
    torchrun --nproc_per_node=4 -m training.pretrain --data ... --out ...     # 4 GPUs (or CPU processes)
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \
        --rdzv_endpoint=HOST:29500 -m training.pretrain ...                   # 2 machines x 8 GPUs

Each optimizer step consumes one global batch of `batch_size * grad_accum * processes`
instances from a permutation of the data seeded by (seed, epoch); rank r reads the strided part
r, r + world, ... of that batch. The loss is L = L_MLM + L_NSP where L_MLM is the mean
cross-entropy over every masked token of the global batch and L_NSP the mean over its
sequences, so the gradient is the same however the batch is split over processes and
micro-batches. The vocabulary projection runs only at the masked positions.

The objective is the data's (`bert data pretraining --objective`): `mlm+nsp` as above; `mlm+sop`
trains the same 2-class head on sentence order (logged as sop_loss, sop_acc); `mlm` has L = L_MLM,
and the pooler and NSP head are frozen and saved as they were loaded or initialised.

Run directory: run.json (settings, device, precision, world size), metrics.jsonl (train and
eval records), checkpoints/step-XXXXXXXX/ (see `training/checkpointing.py`), model/ (the final
model with its tokenizer, in the Hugging Face layout).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from core.args import parse_dataclass, run_cli
from training import checkpointing, distributed
from training.device import grad_scaler, resolve_precision, select_device
from training.optim import build_optimizer, build_scheduler
from training.pretrain_batches import StepLoader
from training.pretrain_run import (
    MetricsLog,
    StopFlag,
    build_pretraining_model,
    progress_bar,
    tokenizer_files,
    write_run_json,
)
from training.pretrain_settings import PretrainSettings, validate
from training.pretrain_step import STAT_KEYS, evaluate, optimizer_step, summarise

log = logging.getLogger("bertkit.pretrain")


def train(settings: PretrainSettings) -> int:
    from training.pretraining_data import open_pretraining_data

    validate(settings)
    info = distributed.env_info()
    choice = select_device(settings.device, info.local_rank)
    kind, device = choice.kind, choice.device
    precision = resolve_precision(settings.precision, kind)
    distributed.setup(info, kind)
    out = Path(settings.out)
    ckpt_root = out / "checkpoints"
    try:
        data = open_pretraining_data(settings.data)
        eval_data = open_pretraining_data(settings.eval_data) if settings.eval_data else None
        if eval_data is not None and eval_data.manifest.get("vocab_size") != data.manifest.get("vocab_size"):
            raise ValueError("--eval-data was built with a different vocabulary than --data")
        if eval_data is not None and eval_data.objective != data.objective:
            raise ValueError(
                f"--eval-data was built for the {eval_data.objective} objective and --data for {data.objective}; "
                "build both with the same `bert data pretraining --objective`"
            )
        resume_from = checkpointing.latest_checkpoint(ckpt_root) if settings.resume else None
        if settings.resume and resume_from is None and info.is_main:
            log.warning("--resume: no checkpoint in %s yet, starting from step 0", ckpt_root)
        if not settings.resume and checkpointing.list_checkpoints(ckpt_root):
            raise ValueError(f"{out} already has checkpoints; pass --resume to continue, or choose a new --out")

        # Model, optimizer, schedule.
        if resume_from is not None:
            from model import load_pretrained

            model = load_pretrained(resume_from, head="pretraining")
        else:
            model = build_pretraining_model(settings, int(data.manifest["vocab_size"]), data.max_seq_len)
        model.to(device).train()
        if data.objective == "mlm":  # no pair loss: keep the pooler and NSP head out of training (and of DDP)
            for module in (model.bert.pooler, model.nsp):
                module.requires_grad_(False)
        raw_model = model
        optimizer = build_optimizer(model, settings.lr, settings.weight_decay, fused=kind in ("cpu", "cuda"))
        warmup = int(settings.warmup * settings.max_steps) if settings.warmup < 1 else int(settings.warmup)
        scheduler = build_scheduler(optimizer, warmup, settings.max_steps)
        scaler = grad_scaler(kind, precision)

        step, position = 0, (0, 0)
        global_batch = settings.batch_size * settings.grad_accum * info.world_size
        if resume_from is not None:
            state = checkpointing.load_training_state(resume_from, map_location=device)
            if state["global_batch"] != global_batch:
                raise ValueError(
                    f"the run was started with a global batch of {state['global_batch']} and would resume with "
                    f"{global_batch}; keep --batch-size x --grad-accum x processes the same to resume exactly"
                )
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            step, position = int(state["step"]), tuple(state["data_position"])
            rng = state["rng"]
            checkpointing.restore_rng_state(rng[info.rank] if info.rank < len(rng) else rng[0])
        else:
            torch.manual_seed(settings.seed + info.rank)  # dropout streams differ per rank

        if info.enabled:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if kind == "cuda" else None
            )
        if settings.compile:
            model = torch.compile(model, dynamic=True)

        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_run_json(out, settings, choice, precision, info, raw_model, data, resume_from, step)
            log.info("training on %s (%s), precision %s, %d process(es)", choice.name, choice.reason, precision,
                     info.world_size)  # fmt: skip
        metrics = MetricsLog(out / "metrics.jsonl", info.is_main, step)  # drops records past the checkpoint
        stop = StopFlag()
        loader = StepLoader(data, settings, info.rank, info.world_size, position, pin=kind == "cuda")
        bar = progress_bar(settings, step, enabled=info.is_main and settings.progress)
        extra_files = tokenizer_files(Path(settings.data))

        def save(at_step: int) -> None:
            rng = distributed.all_gather_objects(checkpointing.capture_rng_state())
            if info.is_main:
                training_state = {
                    "step": at_step,
                    "data_position": list(position),
                    "global_batch": global_batch,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng,
                    "settings": asdict(settings),
                }
                checkpointing.save_checkpoint(ckpt_root, at_step, raw_model, training_state, settings.keep, extra_files)
            distributed.barrier()

        window = torch.zeros(len(STAT_KEYS), dtype=torch.float64, device=device)
        window_start = run_start = time.perf_counter()
        interrupted = False
        try:
            while step < settings.max_steps:
                position, micro = loader.next()
                micro = [{k: v.to(device, non_blocking=True) for k, v in b.items()} for b in micro]
                window += optimizer_step(
                    model, raw_model, micro, optimizer, scheduler, scaler, settings.max_grad_norm, info.world_size,
                    kind, precision,
                )  # fmt: skip
                step += 1

                if step % settings.log_every == 0 or step == settings.max_steps:
                    elapsed = time.perf_counter() - window_start
                    record = summarise(distributed.all_reduce_sum(window), data.objective)
                    record |= {"tokens_per_s": record.pop("tokens") / elapsed, "lr": scheduler.get_last_lr()[0]}
                    record["elapsed_s"] = time.perf_counter() - run_start
                    metrics.write({"step": step, "split": "train", "epoch": position[0], **record})
                    bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}",
                                    lr=f"{record['lr']:.2e}", refresh=False)  # fmt: skip
                    window.zero_()
                    window_start = time.perf_counter()
                bar.update(1)
                paused = time.perf_counter()  # evaluation and checkpoints do not count against tokens/s
                if eval_data is not None and (step % settings.eval_every == 0 or step == settings.max_steps):
                    result = evaluate(raw_model, eval_data, settings, info, device, kind, precision)
                    result.pop("tokens")
                    metrics.write({"step": step, "split": "eval", **result})
                    if info.is_main:
                        accuracies = " ".join(f"{k} {v:.4f}" for k, v in result.items() if k.endswith("_acc"))
                        bar.write(f"step {step}: eval {accuracies} perplexity {result['perplexity']:.2f}")
                if _stop_requested(stop, info, device):
                    interrupted = True
                    break
                if step % settings.save_every == 0 and step < settings.max_steps:
                    save(step)
                window_start += time.perf_counter() - paused
        finally:
            loader.close()
            bar.close()
            stop.restore()

        save(step)
        if interrupted:
            if info.is_main:
                print(f"interrupted at step {step}: checkpoint saved in {ckpt_root}; continue with --resume",
                      file=sys.stderr)  # fmt: skip
            return 130
        if info.is_main:
            from model import save_pretrained

            final = save_pretrained(raw_model, out / "model")
            for f in extra_files:
                (final / f.name).write_bytes(f.read_bytes())
            print(f"done: {step} steps; final model in {final}", file=sys.stderr)
        return 0
    finally:
        distributed.teardown()


def _stop_requested(stop: StopFlag, info: distributed.DistInfo, device) -> bool:
    """Any rank's signal stops every rank at the same step."""
    if not info.enabled:
        return stop.requested
    flag = torch.tensor([float(stop.requested)], device=device)
    return bool(distributed.all_reduce_sum(flag).item() > 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = parse_dataclass(PretrainSettings, argv, prog="bert pretrain", description=__doc__.split("\n\n")[0])
    return run_cli(lambda: train(settings), prog="bert pretrain")


if __name__ == "__main__":
    sys.exit(main())

"""MLM + NSP pretraining: one CPU, one GPU, or many processes and machines through torchrun.

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

Run directory: run.json (settings, device, precision, world size), metrics.jsonl (train and
eval records), checkpoints/step-XXXXXXXX/ (see `training/checkpointing.py`), model/ (the final
model with its tokenizer, in the Hugging Face layout).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.args import parse_dataclass, run_cli
from training import checkpointing, distributed
from training.device import DEVICES, PRECISIONS, autocast, grad_scaler, resolve_precision, select_device
from training.optim import build_optimizer, build_scheduler

log = logging.getLogger("bertkit.pretrain")


@dataclass
class PretrainSettings:
    data: str = field(metadata={"help": "prepared training data directory (`bert data pretraining`)"})
    out: str = field(metadata={"help": "run directory: checkpoints, metrics.jsonl, run.json, final model"})
    model_config: str | None = field(
        default=None,
        metadata={"help": "preset (tiny, mini, small, medium, base, large) or a config.json path; default mini"},
    )
    init: str | None = field(
        default=None,
        metadata={
            "help": "start from this checkpoint directory (ours or Hugging Face); missing MLM/NSP heads are created"
        },
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "prepared held-out directory for periodic evaluation"}
    )
    max_steps: int = field(default=1000, metadata={"help": "optimizer steps in the whole run"})
    batch_size: int = field(default=32, metadata={"help": "sequences per micro-batch per process"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches accumulated per optimizer step"})
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate"})
    warmup: float = field(default=0.01, metadata={"help": "warmup steps; a value below 1 is a fraction of --max-steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases or LayerNorm)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "clip the gradient norm to this; 0 disables clipping"})
    precision: str = field(
        default="auto",
        metadata={"help": "auto = bf16 where the hardware has native bf16, else fp32; fp16 is CUDA-only",
                  "choices": PRECISIONS},
    )  # fmt: skip
    device: str = field(
        default="auto", metadata={"help": "auto takes CUDA when usable, else the CPU", "choices": DEVICES}
    )
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (slow start, faster steps)"})
    seed: int = field(default=0, metadata={"help": "seed of the weight init, dropout and the data order"})
    log_every: int = field(default=10, metadata={"help": "write a train record to metrics.jsonl every N steps"})
    eval_every: int = field(default=500, metadata={"help": "evaluate on --eval-data every N steps (and at the end)"})
    eval_batches: int = field(
        default=50, metadata={"help": "batches of --batch-size per evaluation; 0 = the whole set"}
    )
    save_every: int = field(default=1000, metadata={"help": "write a checkpoint every N steps (and at the end)"})
    keep: int = field(default=3, metadata={"help": "checkpoints kept (the newest)"})
    prefetch: int = field(
        default=4, metadata={"help": "optimizer steps of batches prepared ahead in a background thread"}
    )
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in --out"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


# --- data: one global batch per optimizer step, each rank its strided part ---------------------


def step_indices(n: int, seed: int, epoch: int, step_in_epoch: int, global_batch: int) -> np.ndarray:
    """The instance indices of one global batch: a slice of a permutation seeded by (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[step_in_epoch * global_batch : (step_in_epoch + 1) * global_batch]


def to_tensors(batch: dict[str, np.ndarray], pin: bool) -> dict[str, torch.Tensor]:
    """A `get_batch` dict -> tensors, with the masked positions as flat indices into B*T."""
    labels = batch["mlm_labels"].reshape(-1)  # (B*T,)
    positions = np.flatnonzero(labels != -100)  # (N,)
    arrays = {
        "input_ids": batch["input_ids"],
        "token_type_ids": batch["token_type_ids"],
        "attention_mask": batch["attention_mask"],
        "mlm_positions": positions,
        "mlm_targets": labels[positions],
        "nsp_labels": batch["nsp_labels"],
    }
    out = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)) for k, v in arrays.items()}
    return {k: v.pin_memory() for k, v in out.items()} if pin else out


class StepLoader:
    """Background thread producing, per optimizer step, this rank's `grad_accum` micro-batches."""

    def __init__(self, data, settings: PretrainSettings, rank: int, world: int, start: tuple[int, int], pin: bool):
        self.data, self.rank, self.world, self.pin = data, rank, world, pin
        self.seed, self.batch_size, self.grad_accum = settings.seed, settings.batch_size, settings.grad_accum
        self.global_batch = settings.batch_size * settings.grad_accum * world
        self.steps_per_epoch = len(data) // self.global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the data has {len(data)} instances, fewer than one global batch of {self.global_batch} "
                "(batch size x grad accum x processes)"
            )
        self.position = start  # (epoch, step in epoch) of the next batch to produce
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, settings.prefetch))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        epoch, step = self.position
        try:
            while not self.stop.is_set():
                if step >= self.steps_per_epoch:
                    epoch, step = epoch + 1, 0
                indices = step_indices(len(self.data), self.seed, epoch, step, self.global_batch)
                mine = indices[self.rank :: self.world]
                micro = [
                    to_tensors(
                        self.data.get_batch(mine[m * self.batch_size : (m + 1) * self.batch_size], epoch), self.pin
                    )
                    for m in range(self.grad_accum)
                ]
                step += 1
                self._put(((epoch, step), micro))
        except BaseException as err:  # surfaced in the training loop
            self._put(err)

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> tuple[tuple[int, int], list[dict[str, torch.Tensor]]]:
        """((epoch, step in epoch) after this batch, micro-batches)."""
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


# --- loss ----------------------------------------------------------------------------------------


def pretraining_sums(model, batch: dict[str, torch.Tensor], kind: str, precision: str) -> dict[str, torch.Tensor]:
    """Summed (not averaged) MLM/NSP losses and correct counts of one micro-batch."""
    with autocast(kind, precision):
        out = model(
            batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            mlm_positions=batch["mlm_positions"],
        )
    mlm_logits, nsp_logits = out.mlm_logits.float(), out.nsp_logits.float()  # (N, V), (B, 2)
    return {
        "mlm_loss": F.cross_entropy(mlm_logits, batch["mlm_targets"], reduction="sum"),
        "mlm_correct": (mlm_logits.argmax(-1) == batch["mlm_targets"]).sum(),
        "nsp_loss": F.cross_entropy(nsp_logits, batch["nsp_labels"], reduction="sum"),
        "nsp_correct": (nsp_logits.argmax(-1) == batch["nsp_labels"]).sum(),
    }


STAT_KEYS = ("mlm_loss", "mlm_correct", "mlm_count", "nsp_loss", "nsp_correct", "nsp_count", "tokens")


def summarise(stats: torch.Tensor) -> dict[str, float]:
    """Summed STAT_KEYS (after the all-reduce) -> means, accuracies and perplexity."""
    s = dict(zip(STAT_KEYS, stats.tolist()))
    mlm_loss = s["mlm_loss"] / max(1.0, s["mlm_count"])
    nsp_loss = s["nsp_loss"] / max(1.0, s["nsp_count"])
    return {
        "loss": mlm_loss + nsp_loss,
        "mlm_loss": mlm_loss,
        "nsp_loss": nsp_loss,
        "mlm_acc": s["mlm_correct"] / max(1.0, s["mlm_count"]),
        "nsp_acc": s["nsp_correct"] / max(1.0, s["nsp_count"]),
        "perplexity": math.exp(min(mlm_loss, 50.0)),
        "tokens": s["tokens"],
    }


def optimizer_step(
    model, raw_model, micro, optimizer, scheduler, scaler, max_grad_norm: float, world_size: int, kind, precision
) -> torch.Tensor:
    """Forward/backward over this rank's micro-batches, clip, step: one optimizer step; returns summed stats.

    Each micro-batch's loss is divided by the masked-token and sequence counts of the whole
    global batch (all ranks), times `world_size` because DDP averages gradients over ranks.
    """
    device = micro[0]["input_ids"].device
    counts = torch.tensor(
        [sum(b["mlm_targets"].numel() for b in micro), sum(b["nsp_labels"].numel() for b in micro)],
        dtype=torch.float64,
        device=device,
    )
    mlm_total, nsp_total = distributed.all_reduce_sum(counts).clamp(min=1).tolist()
    stats = torch.zeros(len(STAT_KEYS), dtype=torch.float64, device=device)
    for m, batch in enumerate(micro):
        last = m == len(micro) - 1
        with model.no_sync() if world_size > 1 and not last else contextlib.nullcontext():
            sums = pretraining_sums(model, batch, kind, precision)
            loss = (sums["mlm_loss"] / mlm_total + sums["nsp_loss"] / nsp_total) * world_size
            scaler.scale(loss).backward()
        stats += step_stats(sums, batch)
    scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return stats


@torch.no_grad()
def evaluate(model, data, settings: PretrainSettings, info: distributed.DistInfo, device, kind, precision) -> dict:
    """MLM/NSP loss and accuracy on the first `eval_batches` batches of a held-out set (epoch-0 masks)."""
    was_training = model.training
    model.eval()
    n = len(data) if settings.eval_batches <= 0 else min(len(data), settings.eval_batches * settings.batch_size)
    mine = np.arange(n)[info.rank :: info.world_size]
    stats = torch.zeros(len(STAT_KEYS), dtype=torch.float64, device=device)
    for start in range(0, len(mine), settings.batch_size):
        batch = to_tensors(data.get_batch(mine[start : start + settings.batch_size], 0), pin=False)
        batch = {k: v.to(device) for k, v in batch.items()}
        stats += step_stats(pretraining_sums(model, batch, kind, precision), batch)
    distributed.all_reduce_sum(stats)
    model.train(was_training)
    return summarise(stats)


def step_stats(sums: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    values = [
        sums["mlm_loss"].detach(),
        sums["mlm_correct"],
        batch["mlm_targets"].numel(),
        sums["nsp_loss"].detach(),
        sums["nsp_correct"],
        batch["nsp_labels"].numel(),
        batch["attention_mask"].sum(),
    ]
    return torch.stack([torch.as_tensor(v, dtype=torch.float64, device=sums["mlm_loss"].device) for v in values])


# --- model, run directory, metrics ---------------------------------------------------------------


def build_pretraining_model(settings: PretrainSettings, vocab_size: int, max_seq_len: int):
    from model import BertConfig, build_model, load_pretrained

    if settings.init:
        model = load_pretrained(settings.init, head="pretraining", allow_new_heads=True)
        if model.config.vocab_size != vocab_size:
            raise ValueError(
                f"--init has vocab_size {model.config.vocab_size} but the data was built with a vocabulary of "
                f"{vocab_size}; prepare the data with the checkpoint's own tokenizer"
            )
        return model
    name = settings.model_config or "mini"
    if Path(name).is_file():
        config = BertConfig.from_json_file(name)
        if config.vocab_size < vocab_size:
            raise ValueError(f"{name} has vocab_size {config.vocab_size}, smaller than the data's {vocab_size}")
    else:
        config = BertConfig.preset(name, vocab_size=vocab_size)
    if config.max_position_embeddings < max_seq_len:
        raise ValueError(f"the model covers {config.max_position_embeddings} positions, the data {max_seq_len}")
    torch.manual_seed(settings.seed)
    return build_model(config, "pretraining")


class MetricsLog:
    """Append-only JSONL; records past `resume_step` (written after the last checkpoint) are dropped."""

    def __init__(self, path: Path, enabled: bool, resume_step: int):
        self.path, self.enabled = path, enabled
        if enabled and path.exists():
            lines = path.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


class StopFlag:
    """Ctrl-C / SIGTERM ask the loop to checkpoint and stop; a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("%s received: saving a checkpoint after this step", signal.Signals(signum).name)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def tokenizer_files(data_dir: Path) -> tuple[Path, ...]:
    directory = data_dir / "tokenizer"
    return tuple(sorted(p for p in directory.iterdir() if p.is_file())) if directory.is_dir() else ()


# --- the run -------------------------------------------------------------------------------------


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
                    record = summarise(distributed.all_reduce_sum(window))
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
                        bar.write(f"step {step}: eval mlm_acc {result['mlm_acc']:.4f} "
                                  f"nsp_acc {result['nsp_acc']:.4f} perplexity {result['perplexity']:.2f}")  # fmt: skip
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


def validate(s: PretrainSettings) -> None:
    for name in ("max_steps", "batch_size", "grad_accum", "log_every", "eval_every", "save_every", "keep"):
        if getattr(s, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(s, name)}")
    if s.lr <= 0 or s.warmup < 0 or s.weight_decay < 0 or s.max_grad_norm < 0:
        raise ValueError("--lr must be positive; --warmup, --weight-decay and --max-grad-norm non-negative")
    if s.init and s.model_config:
        raise ValueError("pass either --init (continue from a checkpoint) or --model-config (start fresh), not both")
    for name in ("data", "eval_data", "init"):
        value = getattr(s, name)
        if value and not Path(value).is_dir():
            raise FileNotFoundError(f"--{name.replace('_', '-')} {value} is not a directory")


def write_run_json(out, settings, choice, precision, info, model, data, resume_from, step) -> None:
    path = out / "run.json"
    previous = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    starts = previous.get("starts", []) + [
        {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "step": step,
            "resumed_from": str(resume_from) if resume_from else None,
            "device": choice.to_json(),
            "precision": precision,
            "world_size": info.world_size,
            "backend": distributed.backend_for(choice.kind) if info.enabled else None,
            "torch": torch.__version__,
            "host": os.uname().nodename,
        }
    ]
    run = {
        "settings": asdict(settings),
        "device": choice.to_json(),
        "precision": precision,
        "world_size": info.world_size,
        "model_config": model.config.to_hf_dict("BertForPreTraining"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {k: data.manifest.get(k) for k in ("max_seq_len", "vocab_size", "dynamic_masking", "seed")},
        "instances": len(data),
        "starts": starts,
    }
    path.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")


def progress_bar(settings: PretrainSettings, step: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=settings.max_steps, initial=step, disable=not enabled, desc="pretrain", unit="step",
                dynamic_ncols=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = parse_dataclass(PretrainSettings, argv, prog="bert pretrain", description=__doc__.split("\n\n")[0])
    return run_cli(lambda: train(settings), prog="bert pretrain")


if __name__ == "__main__":
    sys.exit(main())

"""What surrounds the pretraining loop: the model it starts from, its run directory, stop signals, progress.

run.json gains an entry per start; metrics.jsonl drops the records written after the checkpoint a
run resumes from; the data's tokenizer files are saved beside each checkpoint and the final model.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

import torch

from training import distributed
from training.pretrain_settings import PretrainSettings

log = logging.getLogger("bertkit.pretrain")


def build_pretraining_model(settings: PretrainSettings, vocab_size: int, max_seq_len: int):
    from model import BertConfig, build_model, load_pretrained

    torch.manual_seed(settings.seed)  # the initialisation of a new model, or of the heads --init lacks
    if settings.init:
        # Heads the checkpoint lacks get BERT's initialisation (model/bert.py init_weights): MLM
        # transform N(0, initializer_range) with LayerNorm 1/0, bias 0, decoder tied to the word
        # embeddings; NSP classifier N(0, initializer_range) with bias 0; pooler likewise.
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
        "data": {k: data.manifest.get(k) for k in ("max_seq_len", "vocab_size", "dynamic_masking", "seed")}
        | {"objective": data.objective, "masking": data.masking},
        "instances": len(data),
        "starts": starts,
    }
    path.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")


def progress_bar(settings: PretrainSettings, step: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=settings.max_steps, initial=step, disable=not enabled, desc="pretrain", unit="step",
                dynamic_ncols=True)  # fmt: skip

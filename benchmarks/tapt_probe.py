"""Why TAPT did not pay off on SST-2: linear probes of the frozen encoder before and after TAPT, and
fine-tuning from TAPT's intermediate checkpoints.

    python benchmarks/tapt.py --tasks sst2 ...                # first: the split and the TAPT run
    python benchmarks/tapt_probe.py --finetune-steps 500      # then this, on the same --work

1. Linear probe: all-MiniLM-L6-v2 and every kept checkpoint of the SST-2 TAPT run, frozen; a
   sentence is its mean-pooled last layer (padding excluded) or its [CLS] vector (64 tokens at most,
   as fine-tuning sees it); a logistic regression (features standardised, L2 picked by 5-fold
   cross-validation on the training rows alone, LBFGS) on seed 0's 2,000 labelled rows; accuracy on
   tapt.py's 3,368 held-out rows. If TAPT pulled the encoder away from the sentence geometry that
   all-MiniLM-L6-v2 was trained for, the probe falls.
2. Fine-tuning from the checkpoints in --finetune-steps, tapt.py's recipe and seeds, scored the same
   way (`bert evaluate`); was 1,000 steps too many?
3. Fine-tuning both arms (MiniLM and the final TAPT model) at the other learning rates in
   --finetune-lrs, same seeds: was tapt.py's lr (5e-5, chosen for MiniLM) the wrong one for the TAPT
   model?

The probes of each encoder are kept in WORK/sst2/probes.json; fine-tuning steps are skipped when
their evaluation exists, so a rerun only does what is new.

Writes benchmarks/results/tapt_probe.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_flags, cpu_model, machine, markdown_table, write_results  # noqa: E402
from benchmarks.distill_quality import Steps  # noqa: E402
from benchmarks.tapt import PLANS, finetune_and_score, minilm  # noqa: E402
from core.batches import ModelInput, pad_inputs  # noqa: E402
from training import datasets  # noqa: E402

NAME = "tapt_probe"
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
MAX_TOKENS = 64  # tapt.py's SST-2 fine-tuning length


def read_sst2(path: Path) -> tuple[list[str], torch.Tensor]:
    examples = datasets.read_sst2(path)
    return [e.text for e in examples], torch.tensor([e.label for e in examples])


@torch.no_grad()
def sentence_features(model_dir: Path, tokenizer_dir: Path, texts: list[str]) -> dict[str, torch.Tensor]:
    from model import load_pretrained
    from model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    encoder = load_pretrained(model_dir, head=None).eval()
    mean, cls = [], []
    for start in range(0, len(texts), 128):
        encodings = tokenizer.encode_batch(texts[start : start + 128], max_length=MAX_TOKENS)
        feeds = pad_inputs([ModelInput(e.ids) for e in encodings], tokenizer.pad_id)
        mask = torch.from_numpy(feeds["attention_mask"])  # (B, T)
        hidden = encoder(torch.from_numpy(feeds["input_ids"]), mask).last_hidden_state  # (B, T, H)
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        mean.append((hidden * weights).sum(1) / weights.sum(1))  # (B, H)
        cls.append(hidden[:, 0])  # (B, H)
    return {"mean-pooled": torch.cat(mean), "[CLS]": torch.cat(cls)}


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression, mean cross-entropy + l2 * |W|^2, by LBFGS."""
    w = torch.zeros(x.shape[1], int(y.max()) + 1, requires_grad=True)
    b = torch.zeros(int(y.max()) + 1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * (w**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), b.detach()


def accuracy(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return ((x @ w + b).argmax(1) == y).float().mean().item()


def probe(train_x, train_y, test_x, test_y, folds: int = 5) -> dict:
    """Held-out accuracy of the probe whose L2 was picked by cross-validation on the training rows."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mu) / sd, (test_x - mu) / sd
    fold_of = torch.arange(len(train_y)) % folds
    cv = {}
    for l2 in L2_GRID:
        scores = []
        for k in range(folds):
            fit, val = fold_of != k, fold_of == k
            scores.append(accuracy(*fit_logistic(train_x[fit], train_y[fit], l2), train_x[val], train_y[val]))
        cv[l2] = statistics.fmean(scores)
    best = max(cv, key=cv.get)
    return {"l2": best, "cv_accuracy": cv[best], "heldout_accuracy": accuracy(
        *fit_logistic(train_x, train_y, best), test_x, test_y)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from training.checkpointing import list_checkpoints

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/tapt"), help="tapt.py's --work")
    parser.add_argument("--finetune-steps", type=int, nargs="*", default=[500],
                        help="TAPT checkpoints to fine-tune from (steps); none: probes only")  # fmt: skip
    parser.add_argument("--finetune-lrs", type=float, nargs="*", default=[],
                        help="other fine-tuning lrs for both arms (tapt.py's is 5e-5)")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args(argv)
    directory = args.work.resolve() / "sst2"
    run = directory / "tapt" / "run"
    if not (run / "model" / "config.json").exists():
        raise SystemExit(f"no TAPT run in {run}: run `python benchmarks/tapt.py --tasks sst2` first")
    torch.manual_seed(0)
    base = minilm()
    train_texts, train_y = read_sst2(directory / "data" / "train_seed0.tsv")
    test_texts, test_y = read_sst2(directory / "data" / "heldout.tsv")
    encoders = {"all-MiniLM-L6-v2": (0, base)}
    encoders |= {f"TAPT step {step}": (step, path) for step, path in list_checkpoints(run / "checkpoints")}
    probes_file = directory / "probes.json"
    probes = json.loads(probes_file.read_text()) if probes_file.exists() else {}
    if probes.pop("l2_grid", None) != list(L2_GRID):
        probes = {}  # made with another grid
    for name, (step, path) in encoders.items():
        if name not in probes:
            train, test = sentence_features(path, base, train_texts), sentence_features(path, base, test_texts)
            probes[name] = {"step": step} | {kind: probe(train[kind], train_y, test[kind], test_y) for kind in train}
            probes_file.write_text(json.dumps({"l2_grid": list(L2_GRID)} | probes, indent=2))
        print(name, json.dumps(probes[name]), flush=True)

    plan, runner = PLANS["sst2"], Steps(directory, base)
    checkpoints = dict(list_checkpoints(run / "checkpoints"))
    finetuned = {}
    for step in args.finetune_steps:
        if step not in checkpoints:
            raise SystemExit(f"no checkpoint at step {step} in {run / 'checkpoints'} (kept: {sorted(checkpoints)})")
        arm = f"tapt{step}"
        finetuned[step] = {s: finetune_and_score(plan, checkpoints[step], arm, s, directory, runner)
                           for s in args.seeds}  # fmt: skip

    by_lr = {}  # lr -> (MiniLM's scores, the TAPT model's scores), per seed
    for lr in (lr for lr in args.finetune_lrs if lr != plan.lr):
        at_lr = replace(plan, lr=lr)
        arms_at_lr = (("minilm", base), ("tapt", run / "model"))
        by_lr[lr] = tuple({s: finetune_and_score(at_lr, model, f"{arm}-lr{lr:g}", s, directory, runner)
                           for s in args.seeds} for arm, model in arms_at_lr)  # fmt: skip

    def scores_of(arm: str) -> dict[int, float]:  # tapt.py's own evaluations
        evals = directory / "evals"
        return {s: json.loads((evals / f"{arm}-seed{s}.json").read_text())["accuracy"] for s in args.seeds}

    direct, final = scores_of("minilm"), scores_of("tapt")

    by_lr[plan.lr] = (direct, final)

    def gain(scores: dict, against: dict | None = None) -> tuple[float, float]:
        diffs = [100 * (scores[s] - (against or direct)[s]) for s in args.seeds]
        return statistics.fmean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5

    def mean(scores: dict) -> float:
        return 100 * statistics.fmean(scores.values())

    lr_rows = [[f"{lr:g}", f"{mean(d):.2f}", f"{mean(t):.2f}", "**{:+.2f} ± {:.2f}**".format(*gain(t, d))]
               for lr, (d, t) in sorted(by_lr.items())]  # fmt: skip
    best_direct = max(by_lr, key=lambda lr: mean(by_lr[lr][0]))
    best_tapt = max(by_lr, key=lambda lr: mean(by_lr[lr][1]))
    best_gain = mean(by_lr[best_tapt][1]) - mean(by_lr[best_direct][0])

    probe_rows = [[name, *(f"{100 * p[kind]['heldout_accuracy']:.2f} ({p[kind]['l2']:g})"
                           for kind in ("mean-pooled", "[CLS]"))] for name, p in probes.items()]  # fmt: skip
    last = max(checkpoints)
    arms = [("fine-tuned directly", direct, None)]
    arms += [(f"TAPT {s} steps, then fine-tuned", finetuned[s], gain(finetuned[s])) for s in sorted(finetuned)]
    arms.append((f"TAPT {last} steps (tapt.py), then fine-tuned", final, gain(final)))
    ft_rows = [[name, f"{100 * statistics.fmean(scores.values()):.2f}",
                "" if g is None else f"**{g[0]:+.2f} ± {g[1]:.2f}**"] for name, scores, g in arms]  # fmt: skip
    command = "python benchmarks/tapt_probe.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = (
        f"# Why TAPT did not pay off on SST-2: probes and intermediate checkpoints\n\nCommand: `{command}`. "
        f"Machine: {cpu_model()} ({', '.join(cpu_flags())}), 2 cores.\n\n"
        f"Linear probe (frozen encoder, logistic regression, L2 by 5-fold CV on the {len(train_y):,} "
        f"training rows of seed 0 from {', '.join(f'{v:g}' for v in L2_GRID)}), held-out accuracy (%) on "
        f"{len(test_y):,} rows:\n\n"
        + markdown_table(["encoder", "mean-pooled (L2)", "[CLS] (L2)"], probe_rows)
        + f"\nFine-tuned (tapt.py's recipe, seeds {', '.join(map(str, args.seeds))}), mean held-out accuracy (%) "
        "and the paired gain over fine-tuning directly:\n\n"
        + markdown_table(["arm", "accuracy", "gain (paired SE)"], ft_rows)
    )
    if len(by_lr) > 1:
        table += (
            "\nBoth arms at each fine-tuning learning rate (the rest of tapt.py's recipe), mean held-out "
            "accuracy (%):\n\n"
            + markdown_table(["lr", "fine-tuned directly", "TAPT, then fine-tuned", "gain (paired SE)"], lr_rows)
            + f"\nEach arm at its own best lr (picked on these held-out rows, the same privilege for both): "
            f"directly {mean(by_lr[best_direct][0]):.2f} (lr {best_direct:g}), after TAPT "
            f"{mean(by_lr[best_tapt][1]):.2f} (lr {best_tapt:g}): **{best_gain:+.2f}** points.\n"
        )
    payload = {"machine": machine(), "command": command, "probes": probes,
               "finetuned": {str(k): {str(s): v for s, v in by.items()} for k, by in finetuned.items()},
               "direct": {str(s): v for s, v in direct.items()},
               "final": {str(s): v for s, v in final.items()},
               "by_lr": {f"{lr:g}": {"direct": {str(s): v for s, v in d.items()},
                                     "tapt": {str(s): v for s, v in t.items()}}
                         for lr, (d, t) in by_lr.items()}}  # fmt: skip
    json_path, md_path = write_results(NAME, payload, table)
    print(table)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

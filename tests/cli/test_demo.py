"""`bert demo` end to end with a tiny encoder and tiny datasets: build, cache, serve, skip missing data.

The same path as the real demo (sample -> fine-tune -> export int8 with fp32 next to it -> serve),
only with a tiny model and a few dozen examples so that it runs in CI within a couple of minutes.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

import httpx
import pytest

from cli import demo
from service.client import Client
from tests.service.live_service import free_port, running

pytest.importorskip("torch")

PEOPLE = ["john smith", "mary", "john", "smith"]
PLACES = ["paris", "berlin", "london", "france", "germany", "england"]
COMPANIES = ["google", "apple", "microsoft"]


def _tag(words: str, kind: str, iob1: bool) -> list[tuple[str, str]]:
    tokens = words.split()
    first = "I" if iob1 else "B"
    return [(w, f"{first if i == 0 else 'I'}-{kind}") for i, w in enumerate(tokens)]


def _ner_sentence(rng: random.Random, iob1: bool) -> list[tuple[str, str]]:
    who, where, org = rng.choice(PEOPLE), rng.choice(PLACES), rng.choice(COMPANIES)
    o = lambda text: [(w, "O") for w in text.split()]  # noqa: E731
    return (
        _tag(who.title(), "PER", iob1)
        + o("was in")
        + _tag(where.title(), "LOC", iob1)
        + o("for")
        + _tag(org.title(), "ORG", iob1)
        + o(".")
    )


def make_data_dir(root, squad: bool = True):
    """sst2/, conll2003/ (IOB1, 4 columns, DOCSTART at the end like the real copy) and squad/."""
    rng = random.Random(0)
    (root / "sst2").mkdir(parents=True)
    good, bad = ["great", "good", "fun", "best", "love"], ["bad", "boring", "worst", "hate", "dull"]
    rows = [(f"a {rng.choice(good)} movie , really {rng.choice(good)}", 1) for _ in range(60)]
    rows += [(f"a {rng.choice(bad)} film , very {rng.choice(bad)}", 0) for _ in range(60)]
    rng.shuffle(rows)
    (root / "sst2" / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t} \t{y}\n" for t, y in rows))
    (root / "conll2003").mkdir()
    for name, count in (("train.txt", 60), ("valid.txt", 20)):
        blocks = []
        for _ in range(count):
            blocks.append("\n".join(f"{w} NNP I-NP {t}" for w, t in _ner_sentence(rng, iob1=True)))
        (root / "conll2003" / name).write_text("\n\n".join(blocks) + "\n\n-DOCSTART- -X- O O")
    if squad:
        articles = []
        for a in range(8):
            paragraphs = []
            for p in range(3):
                who, where = rng.choice(PEOPLE), rng.choice(PLACES)
                context = f"{who} lives in {where} . {who} works for {rng.choice(COMPANIES)} ."
                qas = [
                    {
                        "id": f"{a}-{p}",
                        "question": f"where does {who} live ?",
                        "answers": [{"text": where, "answer_start": context.index(where)}],
                    }
                ]
                paragraphs.append({"context": context, "qas": qas})
            articles.append({"title": f"article {a}", "paragraphs": paragraphs})
        (root / "squad").mkdir()
        (root / "squad" / "train-from-dev-even.json").write_text(json.dumps({"version": "1.1", "data": articles}))
    return root


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    from tests.helpers.bundles import make_tiny_model

    root = tmp_path_factory.mktemp("demo")
    base = make_tiny_model(root / "encoder", "embedding")
    data = make_data_dir(root / "data")
    args = [
        "--model", str(base), "--data-dir", str(data), "--out", str(root / "bundles"), "--work", str(root / "work"),
        "--sst2-examples", "64", "--conll-examples", "48", "--squad-examples", "16",
        "--eval-examples", "16", "--squad-eval-examples", "4", "--batch-size", "8", "--threads", "1",
    ]  # fmt: skip
    return root, args


def test_build_writes_int8_bundles_and_quality(tiny_demo, capsys):
    root, args = tiny_demo
    report = root / "quality.json"
    assert demo.main([*args, "--no-serve", "--report", str(report)]) == 0
    names = {"minilm-sst2", "minilm-conll2003", "minilm-squad", "minilm-embed"}
    assert {p.name for p in (root / "bundles").iterdir()} == names
    for name in names:
        manifest = json.loads((root / "bundles" / name / "bundle.json").read_text())
        assert manifest["precision"] == "int8" and manifest["name"] == name
    records = {r["bundle"]: r for r in json.loads(report.read_text())["tasks"]}
    assert records["minilm-sst2"]["main_metric"] == "accuracy"
    # 5% of the 120 sentences are held out; 64 of the rest are sampled for training.
    assert records["minilm-sst2"]["heldout_examples"] == 6 and records["minilm-sst2"]["train_examples"] == 64
    scale = {"minilm-sst2": 1.0, "minilm-conll2003": 1.0, "minilm-squad": 100.0}  # SQuAD F1 is in percent
    for name, top in scale.items():
        metric = records[name]["main_metric"]
        assert 0.0 <= records[name]["int8"][metric] <= top and 0.0 <= records[name]["fp32"][metric] <= top
        assert records[name]["difference"] == pytest.approx(
            records[name]["int8"][metric] - records[name]["fp32"][metric]
        )
    assert records["minilm-conll2003"]["fp32"]["num_gold_entities"] == 48  # 16 held-out sentences x 3 entities
    assert "fine-tuning" in capsys.readouterr().err


def test_second_run_serves_from_the_cache_in_seconds(tiny_demo):
    root, args = tiny_demo
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BERTKIT_INTRA_OP_THREADS": "1"}
    cmd = [sys.executable, "-m", "cli.main", "demo", *args, "--port", str(port)]
    log = root / "serve.log"
    started = time.monotonic()
    with running(cmd, log, port, env=env, timeout=90) as live:
        startup = time.monotonic() - started
        with Client(live.url) as bert:
            assert {m.name for m in bert.models()} == {
                "minilm-sst2",
                "minilm-conll2003",
                "minilm-squad",
                "minilm-embed",
            }
            assert bert.classify("a great movie")[0].label in ("positive", "negative")
            text = "John Smith was in Paris for Google ."
            assert all(text[e.start : e.end] == e.word for e in bert.ner(text))
            context = "mary lives in berlin . mary works for apple ."
            answer = bert.qa("where does mary live ?", context)
            assert context[answer.start : answer.end] == answer.answer
            assert len(bert.embed("a sentence")) > 0
        page = httpx.get(f"{live.url}/")
        assert page.status_code == 200 and "playground" in page.text
        assert httpx.get(f"{live.url}/docs").status_code == 200
    output = log.read_text()
    assert output.count("cached bundle") == 4 and "fine-tuning" not in output
    assert startup < 60, f"serving from the cache took {startup:.0f} s"


def test_missing_dataset_is_one_line_and_the_rest_is_served(tiny_demo, tmp_path, capsys, monkeypatch):
    root, args = tiny_demo
    monkeypatch.setenv("BERTKIT_OFFLINE", "1")
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "cache"))
    data = make_data_dir(tmp_path / "data", squad=False)
    args = [*args, "--data-dir", str(data), "--out", str(tmp_path / "bundles"), "--tasks", "sst2", "squad"]
    assert demo.main([*args, "--no-serve"]) == 0
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if "squad" in line and "skipped" in line]
    assert len(skipped) == 1 and "downloads are off" in skipped[0] and "--data-dir" in skipped[0]
    assert "reusing the fine-tuned model" in err  # same work dir and recipe: sst2 is only exported again
    assert {p.name for p in (tmp_path / "bundles").iterdir()} == {"minilm-sst2"}


def test_nothing_to_serve_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    from tests.helpers.bundles import make_tiny_model

    monkeypatch.setenv("BERTKIT_OFFLINE", "1")
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BERTKIT_DATA", raising=False)
    base = make_tiny_model(tmp_path / "encoder", "embedding")
    code = demo.main(["--model", str(base), "--tasks", "squad", "--out", str(tmp_path / "b"), "--work", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "no bundle could be built" in err and "Traceback" not in err

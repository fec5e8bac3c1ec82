"""`bert predict`: one command for both ways, offline scoring that survives SIGKILL, readable errors.

The resume test runs `python -m cli.main predict --bundle ...` in a subprocess over a few thousand
tiny inputs, kills it with SIGKILL twice while it writes, reruns it to the end and compares the
output with an uninterrupted run's, line for line. Batches of one sequence (and one thread) keep
each answer independent of where a chunk starts, so the lines are compared exactly.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.main import main as bert
from tests.helpers.bundles import WORDS

pytest.importorskip("torch")  # the tiny bundle is exported from a tiny PyTorch model

REPO = Path(__file__).resolve().parents[2]
INPUTS = 3000


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from tests.helpers.bundles import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("predict"), "sequence-classification")


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("inputs") / "texts.txt"
    path.write_text("".join(" ".join(rng.choices(WORDS, k=rng.randint(1, 20))) + "\n" for _ in range(INPUTS)))
    return path


def offline(bundle: Path, texts: Path, output: Path) -> list[str]:
    return [
        *("predict", "--bundle", str(bundle), "--input", str(texts), "--output", str(output)),
        *("--batch-size", "1", "--chunk-size", "100", "--threads", "1", "--no-progress", "--top-k", "1"),
    ]


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def kill_while_writing(argv: list[str], output: Path, more_than: int) -> int:
    """Start the command, SIGKILL it once the output has grown past `more_than` lines; the lines then."""
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *argv], cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while lines(output) <= more_than and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"it ended before the kill ({proc.returncode}): {stderr[-2000:]}"
    return lines(output)


def test_resume_after_sigkill_writes_each_answer_once_in_order(bundle, texts, tmp_path):
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    assert bert(offline(bundle, texts, whole)) == 0
    expected = whole.read_text(encoding="utf-8").splitlines()
    assert len(expected) == INPUTS

    first = kill_while_writing(offline(bundle, texts, resumed), resumed, 0)
    second = kill_while_writing(offline(bundle, texts, resumed), resumed, first)
    assert 0 < first < second < INPUTS  # killed twice, mid-way
    rerun = subprocess.run(
        [sys.executable, "-m", "cli.main", *offline(bundle, texts, resumed)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert resumed.read_text(encoding="utf-8").splitlines() == expected  # every input once, in input order


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("binary.tsv", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not UTF-8 text"),
        ("broken.jsonl", b'{"text": "fine"}\n{"text": "cut\n', "broken.jsonl:2: not a JSON object per line"),
        ("no_text.csv", b"id,label\n1,0\n", "cannot tell the text column among ['id', 'label']"),
        ("missing.tsv", None, "does not exist"),
    ],
)
def test_unreadable_input_is_one_line_and_exit_2(bundle, tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    argv = ["predict", "--bundle", str(bundle), "--input", str(path), "--output", str(tmp_path / "out.jsonl")]
    assert bert([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("bert predict: error: ") and message in err, err


def test_a_flag_of_another_task_is_refused(bundle, texts, tmp_path, capsys):
    argv = ["predict", "--bundle", str(bundle), "--input", str(texts), "--output", str(tmp_path / "o.jsonl")]
    assert bert([*argv, "--aggregation", "first"]) == 2
    assert "--aggregation does not apply to a sequence-classification bundle" in capsys.readouterr().err


def test_help_explains_both_ways(capsys):
    assert bert(["predict", "--help"]) == 0
    text = capsys.readouterr().out
    assert "bert predict {classify,ner,qa,embed,models}" in text  # the service client
    assert "bert predict --bundle DIR --input FILE --output FILE" in text  # offline scoring
    assert "--chunk-size" in text and "input formats" in text


SCRIPT = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "training", "fastapi", "httpx"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
from cli.main import main
code = main(["predict", "--bundle", sys.argv[1], "--input", sys.argv[2], "--output", sys.argv[3], "--no-progress"])
blocked = [m for m in sys.modules if m.split(".")[0] in ("torch", "training", "fastapi", "httpx")]
sys.exit(code or (3 if blocked else 0))
"""


def test_offline_runs_without_torch_training_or_the_service_stack(bundle, tmp_path):
    out = tmp_path / "out.jsonl"
    (tmp_path / "in.txt").write_text("a great movie\nthe worst film\n")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(bundle), str(tmp_path / "in.txt"), str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [len(json.loads(line)) for line in out.read_text().splitlines()] == [2, 2]

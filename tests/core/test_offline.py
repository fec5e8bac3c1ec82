"""Offline scoring gives the service's answers, line for line, and resumes where a run stopped.

Tiny real bundles of every task; the service is the real app (FastAPI TestClient) over the same
bundles. With batches of one sequence on both sides every input runs through the same kernels on the
same shape, so the answers are compared exactly, floats included; with the default batching (other
batch-mates, other padding) the labels, spans and texts are exact and the scores agree to float
rounding.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from core.inference.offline import Progress, answer_lines, read_inputs, resume_point, score_bundle
from core.inference.readers import DataError
from tests.helpers.bundles import TRAINING_TEXTS

pytest.importorskip("torch")  # the tiny bundles are exported from tiny PyTorch models

TASKS = ("sequence-classification", "token-classification", "question-answering", "embedding", "fill-mask")
# fp32 reductions of <= 64 terms on a batch-mate's padded shape instead of alone (tests/test_evaluate_matches_serve.py)
SCORE_TOLERANCE = 1e-5
LONG = " ".join(["the movie was very good and the acting was great but the ending was boring"] * 6)  # past 64 tokens
TEXTS = [*TRAINING_TEXTS, LONG, "", "a"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    from tests.helpers.bundles import make_tiny_bundle

    root = tmp_path_factory.mktemp("offline-bundles")
    return {task: make_tiny_bundle(root, task) for task in TASKS}


@pytest.fixture(scope="module")
def service(bundles):
    from fastapi.testclient import TestClient

    from service.config import ServiceSettings
    from service.main import create_app

    def client(**settings):
        app = create_app(ServiceSettings(bundles=[str(bundles[t]) for t in TASKS], _env_file=None, **settings))
        return TestClient(app)

    with client() as batched, client(max_batch_size=1) as one_by_one:
        yield {"batched": batched, "one": one_by_one}


def write_inputs(directory: Path, task: str) -> tuple[Path, dict, list]:
    """(input file, the request's fields, the request's inputs) of one task."""
    if task == "sequence-classification":
        path = directory / "pairs.tsv"
        rows = [(t, TEXTS[-1 - i]) for i, t in enumerate(TEXTS)]
        path.write_text("sentence1\tsentence2\tlabel\n" + "".join(f"{a}\t{b}\t0\n" for a, b in rows), encoding="utf-8")
        return path, {"top_k": 1}, [list(r) for r in rows]
    if task == "token-classification":
        path = directory / "dev.conll"
        sentences = [t.split() for t in TEXTS if t.strip()]
        path.write_text("\n\n".join("\n".join(f"{w} O" for w in words) for words in sentences) + "\n")
        return path, {"aggregation_strategy": "first"}, [" ".join(words) for words in sentences]
    if task == "question-answering":
        path = directory / "dev.json"
        pairs = [("who said it ?", t) for t in TEXTS if t.strip()] + [("what ?", "   ")]
        paragraphs = [{"context": c, "qas": [{"id": str(i), "question": q}]} for i, (q, c) in enumerate(pairs)]
        path.write_text(json.dumps({"data": [{"paragraphs": paragraphs[:-1]}]}), encoding="utf-8")
        pairs = pairs[:-1]
        return path, {"top_k": 2, "handle_impossible_answer": True}, [{"question": q, "context": c} for q, c in pairs]
    path = directory / "texts.jsonl"
    texts = TEXTS
    if task == "fill-mask":  # a [MASK] in each, none past max_seq_len
        texts = [t.replace("the", "[MASK]", 1) for t in TRAINING_TEXTS if "the" in t]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path, ({"normalize": False} if task == "embedding" else {"top_k": 3}), texts


ROUTES = {
    "sequence-classification": "/v1/classify",
    "token-classification": "/v1/ner",
    "question-answering": "/v1/qa",
    "embedding": "/v1/embed",
    "fill-mask": "/v1/fill-mask",
}


def served(client, task: str, options: dict, inputs: list) -> list:
    response = client.post(ROUTES[task], json={"inputs": inputs, **options})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["embeddings"] if task == "embedding" else body["results"]


def scored(bundle: Path, path: Path, output: Path, options: dict, batch_size: int) -> list:
    score_bundle(bundle, path, output, options, batch_size=batch_size, progress=False, device="cpu")
    return [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]


def numbers_and_rest(value, numbers: list) -> object:
    """`value` with every float replaced by None (collected into `numbers`), to compare the rest exactly."""
    if isinstance(value, float):
        numbers.append(value)
        return None
    if isinstance(value, list):
        return [numbers_and_rest(v, numbers) for v in value]
    if isinstance(value, dict):
        return {k: numbers_and_rest(v, numbers) for k, v in value.items()}
    return value


@pytest.mark.parametrize("task", TASKS)
def test_offline_answers_are_the_services(task, bundles, service, tmp_path):
    path, options, inputs = write_inputs(tmp_path, task)
    alone = scored(bundles[task], path, tmp_path / "alone.jsonl", options, batch_size=1)
    assert alone == served(service["one"], task, options, inputs)  # exact: same shapes, same code
    batched = scored(bundles[task], path, tmp_path / "batched.jsonl", options, batch_size=64)
    answers = served(service["batched"], task, options, inputs)
    assert len(batched) == len(answers) == len(inputs)
    ours, theirs = [], []
    assert numbers_and_rest(batched, ours) == numbers_and_rest(answers, theirs)
    assert ours == pytest.approx(theirs, abs=SCORE_TOLERANCE)


def test_chunks_resume_and_truncate_a_cut_line(bundles, tmp_path):
    path, options, _ = write_inputs(tmp_path, "sequence-classification")
    whole = tmp_path / "whole.jsonl"
    score_bundle(bundles["sequence-classification"], path, whole, options, progress=False, device="cpu")
    lines = whole.read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(lines[:4]) + lines[4][:7])  # four whole lines and the start of a fifth
    assert resume_point(cut) == 4 and cut.read_bytes() == b"".join(lines[:4])
    cut.write_bytes(b"".join(lines[:4]) + lines[4][:7])
    result = score_bundle(
        bundles["sequence-classification"], path, cut, options, chunk_size=3, progress=True, device="cpu"
    )
    assert (result.total, result.resumed, result.scored) == (len(lines), 4, len(lines) - 4)
    assert cut.read_bytes() == whole.read_bytes()


def test_an_output_of_another_input_is_refused(bundles, tmp_path):
    path, options, _ = write_inputs(tmp_path, "sequence-classification")
    longer = tmp_path / "longer.jsonl"
    longer.write_text("[]\n" * 100)
    for progress in (True, False):
        with pytest.raises(DataError, match="already holds 100 lines but .* has 11 inputs"):
            score_bundle(bundles["sequence-classification"], path, longer, options, progress=progress, device="cpu")


def test_resuming_with_another_model_or_options_is_refused(bundles, tmp_path):
    path, options, _ = write_inputs(tmp_path, "sequence-classification")
    out = tmp_path / "out.jsonl"
    score_bundle(bundles["sequence-classification"], path, out, options, progress=False, device="cpu")
    whole = out.read_bytes()
    lines = whole.splitlines(keepends=True)
    record = json.loads((tmp_path / "out.jsonl.run.json").read_text())
    assert record["options"] == options and record["model_sha256"] and record["input"] == str(path.resolve())
    out.write_bytes(b"".join(lines[:4]))  # as if killed after four lines
    with pytest.raises(DataError, match="written with another options"):
        score_bundle(bundles["sequence-classification"], path, out, {"top_k": 2}, progress=False, device="cpu")
    with pytest.raises(DataError, match="written with another bundle, model_sha256, options"):
        score_bundle(bundles["token-classification"], path, out, {}, progress=False, device="cpu")
    assert out.read_bytes() == b"".join(lines[:4])  # nothing appended by the refused runs
    score_bundle(bundles["sequence-classification"], path, out, options, progress=False, device="cpu")
    assert out.read_bytes() == whole  # the same settings resume


def test_read_inputs_formats(tmp_path):
    lines = tmp_path / "texts.txt"
    lines.write_text("first text\n\nsecond\n")
    assert list(read_inputs(lines, "embedding")) == [("line 1", "first text"), ("line 3", "second")]
    conll = tmp_path / "ner.txt"  # CoNLL whatever the suffix; tags optional
    conll.write_text("-DOCSTART- O\n\nJohn B-PER\nlives O\n\nParis\n")
    assert list(read_inputs(conll, "token-classification")) == [("line 3", "John lives"), ("line 6", "Paris")]
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "who ?", "context": "bob"}) + "\n" + json.dumps({"context": "x"}) + "\n")
    records = read_inputs(qa, "question-answering")
    assert next(records) == ("line 1", ("who ?", "bob"))
    with pytest.raises(DataError, match="qa.jsonl:line 2: no question text"):
        next(records)


def test_answer_lines_are_one_line_each_to_every_reader():
    text = answer_lines([{"word": "a\u2028b\x85c\nd"}, [1.5]]).decode("utf-8")
    assert len(text.splitlines()) == 2
    assert json.loads(text.splitlines()[0]) == {"word": "a\u2028b\x85c\nd"}


def test_progress_without_tqdm_is_a_plain_line_with_rate_and_eta(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `from tqdm import tqdm` raises ImportError
    stream = io.StringIO()
    bar = Progress(total=1000, initial=100, enabled=True, stream=stream, every_s=0)
    bar.update(50)
    bar.close()
    assert "150/1,000 inputs, " in stream.getvalue() and "/s, ETA " in stream.getvalue()

"""BundlePredictor on Ray Data in local mode gives the answers `bert predict --bundle` writes.

Ray is the optional `ray` extra (`pip install -e ".[ray]"`, about 500 MB installed with pyarrow and
pandas), not part of `make install-dev`: without it this module is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.inference.offline import score_bundle
from tests.helpers.bundles import TRAINING_TEXTS

ray = pytest.importorskip("ray", reason='the optional extra: pip install -e ".[ray]"')
pytest.importorskip("torch")  # the tiny bundles are exported from tiny PyTorch models

from core.inference.ray import BundlePredictor  # noqa: E402

CASES = {  # task -> (rows of the dataset, task options, the same inputs as a file for bert predict --bundle)
    "sequence-classification": ({"top_k": 1}, "texts.txt"),
    "token-classification": ({"aggregation_strategy": "none", "ignore_labels": ["B-PER", "I-PER"]}, "texts.jsonl"),
    "question-answering": ({"top_k": 2}, "pairs.jsonl"),
}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    from tests.helpers.bundles import make_tiny_bundle

    root = tmp_path_factory.mktemp("ray-bundles")
    return {task: make_tiny_bundle(root, task) for task in CASES}


def rows_and_file(task: str, directory: Path) -> tuple[list[dict], Path]:
    path = directory / CASES[task][1]
    if task == "question-answering":
        rows = [{"id": i, "question": "who is it ?", "context": t} for i, t in enumerate(TRAINING_TEXTS * 3)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return rows, path
    texts = TRAINING_TEXTS * 3
    if task == "token-classification":  # an empty text has no entities: an empty list beside full ones
        texts = texts[:4] + [""] + texts[4:]
    rows = [{"id": i, "text": t} for i, t in enumerate(texts)]
    if path.suffix == ".txt":
        path.write_text("".join(r["text"] + "\n" for r in rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows, path


@pytest.mark.parametrize("task", sorted(CASES))
def test_map_batches_answers_as_offline_scoring(task, bundles, local_ray, tmp_path):
    rows, path = rows_and_file(task, tmp_path)
    options = CASES[task][0]
    score_bundle(bundles[task], path, tmp_path / "out.jsonl", options, batch_size=1, progress=False, device="cpu")
    expected = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]

    kwargs = {"bundle_dir": str(bundles[task]), "task_options": options, "model_batch_size": 1, "device": "cpu"}
    ds = ray.data.from_items(rows).map_batches(
        BundlePredictor, fn_constructor_kwargs=kwargs, concurrency=1, batch_size=5
    )
    out = sorted(ds.take_all(), key=lambda row: row["id"])
    assert [row["id"] for row in out] == [row["id"] for row in rows]  # input columns kept
    assert [row["answer"] for row in out] == expected
    if task == "token-classification":
        assert [] in expected and any(expected)

    ds.write_json(str(tmp_path / "written"))  # nested answers (lists of objects, empty lists) survive Arrow
    files = sorted((tmp_path / "written").iterdir())
    written = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sorted(row["id"] for row in written) == [row["id"] for row in rows]


def test_as_json_gives_the_offline_line(bundles, local_ray, tmp_path):
    rows, path = rows_and_file("sequence-classification", tmp_path)
    score_bundle(bundles["sequence-classification"], path, tmp_path / "out.jsonl", {}, batch_size=1, progress=False)
    kwargs = {"bundle_dir": str(bundles["sequence-classification"]), "model_batch_size": 1, "as_json": True}
    ds = ray.data.from_items(rows).map_batches(BundlePredictor, fn_constructor_kwargs=kwargs, concurrency=1)
    out = sorted(ds.take_all(), key=lambda row: row["id"])
    assert [row["answer"] for row in out] == (tmp_path / "out.jsonl").read_text().splitlines()

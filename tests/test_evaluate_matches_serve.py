"""What `bert evaluate` scores is what `bert serve` answers, and an answer never depends on its batch-mates.

Tiny bundles of each task, exported with `bert export`'s defaults, served by the real service in a
subprocess. Inputs include ones longer than one window (NER sentences and QA contexts past the
bundles' 64 tokens) and classification texts that are cut at max_seq_len.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers.bundles import make_tiny_model
from tests.service.live_service import serve_bundles
from tests.training.finetune_data import ner_sentences, squad_articles, write_conll
from training import evaluate

pytest.importorskip("torch")

# Scores of one input computed alone and inside a padded batch go through the same fp32 kernels on
# rows of at most 64 tokens and 64 features: reductions of <= 64 terms of magnitude <= ~10, so the
# two differ by at most 64 * 2^-24 * 10 ~ 4e-5 in a logit before softmax, far less in practice;
# the bound of 1e-5 on the served scores (probabilities in [0, 1]) holds with room.
SCORE_TOLERANCE = 1e-5
FILLER = "the movie was very good and the acting was great but the ending was boring".split()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """One bundle per task, as `bert export MODEL_DIR --out DIR` makes it by default."""
    from training.export import export_bundle

    root = tmp_path_factory.mktemp("default-bundles")
    tasks = {"classify": "sequence-classification", "ner": "token-classification", "qa": "question-answering"}
    return {
        key: export_bundle(make_tiny_model(root / f"model-{key}", task, seed=3), root / f"bundle-{key}", name=key)
        for key, task in tasks.items()
    }


@pytest.fixture(scope="module")
def service(bundles, tmp_path_factory) -> str:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    # a long batching window, so that a burst of requests really shares batches
    with serve_bundles(list(bundles.values()), log, BERTKIT_MAX_WAIT_MS="30") as url:
        yield url


def post(url: str, route: str, body: dict) -> dict:
    response = httpx.post(f"{url}{route}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def evaluate_predictions(task: str, bundle: Path, data: Path, tmp_path: Path) -> list[dict]:
    out = tmp_path / f"{task}.predictions.jsonl"
    assert evaluate.main([task, "--model", str(bundle), "--data", str(data), "--predictions", str(out)]) == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def classification_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(FILLER, k=rng.randint(2, 12))) for _ in range(count)]
    texts += [" ".join(rng.choices(FILLER, k=80))]  # past max_seq_len: cut, as evaluation cuts it
    return texts


def long_sentences() -> list[tuple[list[str], list[str]]]:
    sentences = ner_sentences(12, seed=5)
    for tokens, tags in ner_sentences(3, seed=6, long_every=1)[:3]:  # 4 clauses of 7 words each
        sentences.append((tokens * 3, tags * 3))  # 84 words: several windows of the 64-token bundle
    return sentences


def long_squad() -> dict:
    data = squad_articles(8, seed=7)
    paragraphs = data["data"][0]["paragraphs"]
    for i, paragraph in enumerate(paragraphs[:4]):  # contexts of 100+ tokens: several windows
        prefix = " ".join(FILLER * 4) + " . "
        paragraph["context"] = prefix + paragraph["context"]
        for qa in paragraph["qas"]:
            qa["answers"][0]["answer_start"] += len(prefix)
            qa["id"] = f"long{i}"
    return data


# --- evaluate == serve ------------------------------------------------------------------------


def test_classify_evaluate_matches_serve(bundles, service, tmp_path):
    texts = classification_texts(20, seed=1)
    data = tmp_path / "dev.tsv"
    data.write_text(
        "sentence\tlabel\n" + "".join(f"{t}\t{['negative', 'positive'][i % 2]}\n" for i, t in enumerate(texts))
    )
    evaluated = [row["prediction"] for row in evaluate_predictions("classify", bundles["classify"], data, tmp_path)]
    served = post(service, "/v1/classify", {"inputs": texts, "truncate": True, "top_k": 1})["results"]
    assert evaluated == [result[0]["label"] for result in served]


def test_ner_evaluate_matches_serve_across_windows(bundles, service, tmp_path):
    sentences = long_sentences()
    data = write_conll(tmp_path / "dev.conll", sentences, iob1=False)
    evaluated = [row["prediction"] for row in evaluate_predictions("ner", bundles["ner"], data, tmp_path)]
    texts = [" ".join(tokens) for tokens, _ in sentences]
    body = {"inputs": texts, "aggregation_strategy": "none", "ignore_labels": []}
    served = post(service, "/v1/ner", body)["results"]
    for (tokens, _), entities, tags in zip(sentences, served, evaluated):
        by_start = {}
        for entity in entities:  # one entry per token; a word's tag is its first token's
            by_start.setdefault(entity["start"], entity["entity_group"])
        starts = [sum(len(t) + 1 for t in tokens[:w]) for w in range(len(tokens))]
        assert tags == [by_start.get(start, "O") for start in starts]
    assert any(len(tokens) > 62 for tokens, _ in sentences)  # some inputs really span several windows


def test_qa_evaluate_matches_serve_across_windows(bundles, service, tmp_path):
    data = long_squad()
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(data))
    evaluated = {row["id"]: row["prediction"] for row in evaluate_predictions("qa", bundles["qa"], path, tmp_path)}
    paragraphs = data["data"][0]["paragraphs"]
    pairs = [{"question": p["qas"][0]["question"], "context": p["context"]} for p in paragraphs]
    served = post(service, "/v1/qa", {"inputs": pairs, "top_k": 1})["results"]
    assert [evaluated[p["qas"][0]["id"]] for p in paragraphs] == [r["answer"] for r in served]  # top_k 1: one each


# --- batch-mates --------------------------------------------------------------------------------

CASES = {
    "classify": ("/v1/classify", classification_texts(10, seed=2)),
    "ner": ("/v1/ner", [" ".join(tokens) for tokens, _ in long_sentences()[10:]]),
    "qa": (
        "/v1/qa",
        [{"question": p["qas"][0]["question"], "context": p["context"]} for p in long_squad()["data"][0]["paragraphs"]],
    ),
}


def padded_share(url: str, model: str) -> float:
    """The share of padding in the tokens the model has run, from /metrics."""
    totals = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        for name in ("bertkit_padded_tokens_total", "bertkit_real_tokens_total"):
            if line.startswith(f'{name}{{model="{model}"}}'):
                totals[name] = float(line.split()[-1])
    return 1 - totals["bertkit_real_tokens_total"] / totals["bertkit_padded_tokens_total"]


def flatten(result) -> tuple[list, list[float]]:
    """(what must be identical: labels / spans / answers, the scores) of one input's answer."""
    items = result if isinstance(result, list) else [result]
    keys = [tuple((k, v) for k, v in sorted(item.items()) if k != "score") for item in items]
    return keys, [item["score"] for item in items]


@pytest.mark.parametrize("task", sorted(CASES))
def test_answers_do_not_depend_on_batch_mates(bundles, service, task):
    route, inputs = CASES[task]
    alone = [post(service, route, {"inputs": [x]})["results"][0] for x in inputs]
    together = post(service, route, {"inputs": inputs})["results"]
    with ThreadPoolExecutor(len(inputs) * 2) as pool:  # a burst: every input, each with a long batch-mate
        burst = list(pool.map(lambda x: post(service, route, {"inputs": [x]})["results"][0], inputs + inputs[::-1]))
    assert padded_share(service, task) > 0  # the inputs really ran padded beside longer batch-mates
    for answers in (together, burst[: len(inputs)], burst[len(inputs) :][::-1]):
        for one, other in zip(alone, answers):
            (keys, scores), (other_keys, other_scores) = flatten(one), flatten(other)
            assert keys == other_keys
            assert scores == pytest.approx(other_scores, abs=SCORE_TOLERANCE)

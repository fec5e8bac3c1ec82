"""The playground page in a real browser: Debian's headless Chromium driven by Playwright.

The service runs on 127.0.0.1 with tiny bundles. The NER bundle is a tiny model whose weights are
set by hand so that it tags known words (john/mary -> PER, paris/berlin -> LOC, google -> ORG): the
page must highlight exactly those spans, with their types, even after an emoji (the service's offsets
count code points, JavaScript strings count UTF-16 units). Screenshots are saved for people to look at
under $BERTKIT_TEST_OUTPUT (default /tmp/bertkit-test-output).

`make test` installs the browser (`make install-browser`: apt-get install chromium); without it this
test fails, it does not skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.client import Client
from tests.helpers.bundles import TINY_FP32_TOLERANCE
from tests.helpers.tolerances import sum_tolerance
from tests.service.live_service import serve_bundles

CHROMIUM = "/usr/bin/chromium"
OUTPUT = Path(os.environ.get("BERTKIT_TEST_OUTPUT", "/tmp/bertkit-test-output"))
NER_TEXT = "😀 John Smith flew from Paris to Berlin with Mary for Google."
EXPECTED_ENTITIES = [("John Smith", "PER"), ("Paris", "LOC"), ("Berlin", "LOC"), ("Mary", "PER"), ("Google", "ORG")]
RIGGED_TAGS = {"john": "B-PER", "mary": "B-PER", "smith": "I-PER", "paris": "B-LOC", "berlin": "B-LOC"}
RIGGED_TAGS |= {"google": "B-ORG"}


def _hadamard(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def make_rigged_ner_bundle(work: Path) -> Path:
    """A tiny token-classification bundle that tags RIGGED_TAGS words and nothing else.

    Every layer's residual branches are zeroed, so a token's final vector is its own embedding after
    LayerNorm; each tag gets an orthogonal +-1 pattern (Hadamard rows) as embedding and classifier row.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from tests.helpers.bundles import make_tiny_model, tiny_vocab
    from training.export import export_bundle

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    model_dir = make_tiny_model(work / "rigged-model", "token-classification", labels)
    weights = load_file(model_dir / "model.safetensors")
    hidden = weights["classifier.weight"].shape[1]
    patterns = torch.tensor(_hadamard(hidden)[1 : len(labels) + 1], dtype=torch.float32)  # (labels, H), zero mean
    for name, tensor in weights.items():
        if name.endswith(("attention.output.dense.weight", "attention.output.dense.bias")) or (
            ".output.dense." in name and "attention" not in name
        ):
            weights[name] = torch.zeros_like(tensor)
        elif name.endswith(("position_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.bias")):
            weights[name] = torch.zeros_like(tensor)
        elif name.endswith("LayerNorm.weight"):
            weights[name] = torch.ones_like(tensor)
    vocab = tiny_vocab()
    embeddings = patterns[0].repeat(len(vocab), 1) * 10.0  # every token "O" ...
    for word, tag in RIGGED_TAGS.items():
        embeddings[vocab[word]] = patterns[labels.index(tag)] * 10.0  # ... except the rigged words
    weights["bert.embeddings.word_embeddings.weight"] = embeddings
    weights["classifier.weight"] = patterns * (20.0 / hidden)  # logit 20 for the matching tag, 0 otherwise
    weights["classifier.bias"] = torch.zeros(len(labels))
    save_file(weights, model_dir / "model.safetensors")
    return export_bundle(model_dir, work / "rigged-ner", precision="fp32", name="rigged-ner")


@pytest.fixture(scope="module")
def playground(tiny_bundles, tmp_path_factory):
    work = tmp_path_factory.mktemp("playground")
    ner = make_rigged_ner_bundle(work)
    bundles = [
        tiny_bundles["sequence-classification"],
        ner,
        tiny_bundles["question-answering"],
        tiny_bundles["embedding"],
        tiny_bundles["fill-mask"],
    ]
    with serve_bundles(bundles, work / "serve.log") as url:
        yield url


@pytest.fixture(scope="module")
def page(playground):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: `make install-dev` (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make install-browser` (apt-get install -y chromium)")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        requests: list[str] = []
        page.on("request", lambda req: requests.append(req.url))
        page.goto(playground + "/")
        page.wait_for_selector("#task option", state="attached")
        page.errors, page.requests = errors, requests
        yield page
        browser.close()


def _run(page, model: str, text: str, question: str | None = None) -> None:
    page.select_option("#task", model)
    page.fill("#text", "")
    page.type("#text", text)  # real key presses, as a person types
    if question is not None:
        page.fill("#question", question)
    page.evaluate("delete document.querySelector('#result').dataset.task")  # so the wait below sees this run
    page.click("#run")
    page.wait_for_function(
        "(task) => document.querySelector('#result').dataset.task === task && "
        "document.querySelector('#status').textContent === 'done'",
        arg=page.eval_on_selector(f"#task option[value='{model}']", "o => o.dataset.task"),
    )
    assert page.is_hidden("#error"), page.inner_text("#error")


def _shot(page, name: str) -> Path:
    path = OUTPUT / f"playground-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000
    return path


def test_picker_lists_the_loaded_bundles(page):
    options = page.eval_on_selector_all("#task option", "os => os.map(o => [o.value, o.dataset.task])")
    assert options == [
        ["tiny-sequence-classification", "sequence-classification"],
        ["rigged-ner", "token-classification"],
        ["tiny-question-answering", "question-answering"],
        ["tiny-embedding", "embedding"],
        ["tiny-fill-mask", "fill-mask"],
    ]


def test_entities_are_highlighted_with_their_types(page, playground, tmp_path):
    _run(page, "rigged-ner", NER_TEXT)
    marks = page.eval_on_selector_all(
        "#highlighted mark.entity",
        "ms => ms.map(m => [m.firstChild.textContent, m.dataset.type, m.querySelector('.entity-type').textContent])",
    )
    assert [(text, kind) for text, kind, _ in marks] == EXPECTED_ENTITIES
    assert all(label == kind for _, kind, label in marks)  # the type is shown next to each entity
    # The highlighted paragraph still reads as the original text (entity labels aside).
    rebuilt = page.eval_on_selector(
        "#highlighted",
        "b => Array.from(b.childNodes).map(n => n.nodeType === 3 ? n.textContent : n.firstChild.textContent).join('')",
    )
    assert rebuilt == NER_TEXT
    with Client(playground) as bert:
        api = bert.ner(NER_TEXT, model="rigged-ner")
    assert [(e.word, e.entity_group) for e in api] == EXPECTED_ENTITIES
    path = _shot(page, "ner")
    shutil.copy(path, tmp_path / path.name)


def test_class_scores_are_bars(page, playground):
    text = "a great movie with a boring ending"
    _run(page, "tiny-sequence-classification", text)
    bars = page.eval_on_selector_all(
        "#scores .bar",
        "bs => bs.map(b => [b.dataset.label, parseFloat(b.dataset.score), "
        "b.querySelector('.bar-fill').getBoundingClientRect().width, "
        "b.querySelector('.bar-track').getBoundingClientRect().width])",
    )
    with Client(playground) as bert:
        api = bert.classify(text, model="tiny-sequence-classification")
    assert [b[0] for b in bars] == [s.label for s in api]
    for (_, score, width, track), expected in zip(bars, api):
        assert abs(score - expected.score) <= TINY_FP32_TOLERANCE  # another request, maybe other batch-mates
        # the bar's length is the score: its width is written to 0.1% and laid out to within a pixel
        assert abs(width / track - expected.score) <= 0.0005 + 1 / track
    _shot(page, "classify")


def test_answer_is_highlighted_in_the_context(page, playground):
    context = "The Eiffel Tower is in Paris. It was built by Gustave Eiffel's company from 1887 to 1889."
    question = "Who built the tower?"
    _run(page, "tiny-question-answering", context, question=question)
    with Client(playground) as bert:
        api = bert.qa(question, context, model="tiny-question-answering")
    mark = page.inner_text("#highlighted mark.answer")
    assert mark == api.answer == context[api.start : api.end]
    assert api.answer in page.inner_text("#answer")
    assert page.inner_text("#highlighted") == context
    _shot(page, "qa")


def test_embeddings_show_similarities(page):
    _run(page, "tiny-embedding", "a man plays the guitar\nsomeone plays music\nstocks fell today")
    cells = page.eval_on_selector_all("#similarity td", "tds => tds.map(td => parseFloat(td.textContent))")
    # diagonal: cos = 1, shown to 3 decimals, of fp32 unit vectors (32-term dot products)
    assert len(cells) == 9 and all(abs(cells[i * 4] - 1.0) <= 0.0005 + sum_tolerance(33, 1.0) for i in range(3))


def test_fill_mask_shows_the_top_tokens(page, playground):
    text = "paris is the [MASK] of france ."
    _run(page, "tiny-fill-mask", text)
    shown = page.eval_on_selector_all("#result .bar", "bs => bs.map(b => b.dataset.label)")
    with Client(playground) as bert:
        api = bert.fill_mask(text, top_k=5, model="tiny-fill-mask")
    assert shown == [p.token_str for p in api[0]]


def test_errors_are_shown_not_thrown(page):
    page.select_option("#task", "tiny-question-answering")
    page.fill("#question", "")
    page.fill("#text", "some context")
    page.click("#run")
    assert "question" in page.inner_text("#error").lower()


def test_page_is_self_contained(page, playground):
    """No external scripts, styles or fonts; no script errors."""
    assert page.requests and all(url.startswith(playground) or url.startswith("data:") for url in page.requests)
    assert page.errors == []

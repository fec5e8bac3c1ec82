"""Readers and features of the fine-tuning tasks: tag schemes, alignment, windows, bad data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from finetune_data import vocabulary

from model.tokenizer import BertTokenizer
from training.tasks.classification import ClassificationTask
from training.tasks.common import DataError
from training.tasks.ner import IGNORE, NerTask, Sentence, to_iob2
from training.tasks.qa import QaTask


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_vocab({t: i for i, t in enumerate(vocabulary())}, lowercase=True)


# --- NER -------------------------------------------------------------------------------------------


def test_iob1_and_bioes_to_iob2():
    assert to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]) == [
        "B-PER",
        "I-PER",
        "B-PER",
        "O",
        "B-LOC",
        "B-ORG",
    ]
    assert to_iob2(["S-PER", "B-LOC", "I-LOC", "E-LOC", "O", "U-ORG"]) == [
        "B-PER",
        "B-LOC",
        "I-LOC",
        "I-LOC",
        "O",
        "B-ORG",
    ]
    assert to_iob2(["B-PER", "I-PER", "O"]) == ["B-PER", "I-PER", "O"]


def test_conll_reader_skips_docstart_reads_tag_column_and_reports_bad_lines(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text(
        "bob NNP I-NP I-PER\nlives VBZ I-VP O\n\n"
        "-DOCSTART- -X- O O\n\n"
        "paris NNP I-NP I-LOC\nbroken-line\n\n"
        "rome NNP I-NP I-LOC\nberlin NNP I-NP B-LOC\n"
    )
    task = NerTask()
    sentences, problems = task.read(path)
    assert [s.tokens for s in sentences] == [["bob", "lives"], ["rome", "berlin"]]
    assert sentences[1].tags == ["B-LOC", "B-LOC"]  # IOB1 B- between touching entities
    assert task.detected_scheme == "iob1"
    assert len(problems) == 1 and "x.txt:line 6" in problems.messages[0] and "line 7" in problems.messages[0]
    chunk_task = NerTask(tag_column=2)
    chunks, _ = chunk_task.read(path)
    assert chunks[0].tags == ["B-NP", "B-VP"]


def test_ner_jsonl_tag_count_mismatch_and_empty_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(
        json.dumps({"tokens": ["bob", "lives"], "tags": ["B-PER", "O"]})
        + "\n"
        + json.dumps({"tokens": ["rome"], "tags": ["B-LOC", "O"]})
        + "\n"
    )
    sentences, problems = NerTask().read(path)
    assert len(sentences) == 1 and "x.jsonl:line 2: 2 tags for 1 tokens" in problems.messages[0]
    with pytest.raises(DataError, match="x.jsonl:line 2"):
        problems.raise_if(strict=True)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.txt is empty"):
        NerTask().read(empty)


def test_subtoken_alignment_first_and_all(tokenizer):
    sentence = Sentence(["bob", "lives", "in", "amsterdam"], ["B-PER", "O", "O", "B-LOC"], "line 1")
    task = NerTask(labels=["O", "B-LOC", "I-LOC", "B-PER", "I-PER"])
    (feature,) = task.features([sentence], tokenizer)
    tokens = [tokenizer.id_to_token(i) for i in feature["input_ids"]]
    assert tokens == ["[CLS]", "bob", "lives", "in", "am", "##ster", "##dam", "[SEP]"]
    assert feature["label_ids"] == [IGNORE, 3, 0, 0, 1, IGNORE, IGNORE, IGNORE]
    starts = [t.start for t in feature["plan"].tokens]  # "bob lives in amsterdam": am|ster|dam at 13, 15, 19
    assert starts == [0, 4, 10, 13, 15, 19] and feature["word_starts"] == [0, 4, 10, 13]
    task.label_all_subtokens = True
    (feature,) = task.features([sentence], tokenizer)
    assert feature["label_ids"] == [IGNORE, 3, 0, 0, 1, 2, 2, IGNORE]


def test_long_sentence_windows_cover_every_word_and_merge(tokenizer):
    words = ["bob", "lives", "in", "paris"] * 5  # 20 words, 20 sub-tokens
    tags = ["B-PER", "O", "O", "B-LOC"] * 5
    task = NerTask(labels=["O", "B-LOC", "I-LOC", "B-PER", "I-PER"], max_seq_len=10, stride=4)
    features = task.features([Sentence(words, tags, "line 1")], tokenizer)
    assert len(features) > 1
    assert all(len(f["input_ids"]) <= 10 for f in features)
    windows = features[0]["plan"].spans
    assert (
        [f["plan"] for f in features] == [features[0]["plan"]] * len(features) == [features[0]["plan"]] * len(windows)
    )
    assert windows[0][0] == 0 and windows[-1][1] == 20
    assert all(b[0] < a[1] for a, b in zip(windows, windows[1:]))  # consecutive windows overlap

    def context(position, start, end):  # distance to the nearest cut edge (the sentence's own ends are none)
        left = position - start if start > 0 else 20
        right = end - 1 - position if end < 20 else 20
        return min(left, right)

    # Logits that predict the gold tag in the window where the token has the most context, "O" elsewhere:
    # merging must pick exactly those.
    outputs = []
    for f, (start, end) in zip(features, windows):
        logits = np.zeros((len(f["input_ids"]), 5))
        for position in range(start, end):
            best = max(context(position, s, e) for s, e in windows if s <= position < e)
            row = position - start + 1  # after [CLS]
            logits[row, f["label_ids"][row] if context(position, start, end) == best else 0] = 1.0
        outputs.append({"logits": logits})
    sentence = Sentence(words, tags, "line 1")
    assert task.predictions([sentence], features, outputs) == [tags]
    assert task.score([sentence], features, outputs)["f1"] == 1.0


# --- classification --------------------------------------------------------------------------------


def test_tsv_reader_labels_and_unknown_label(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\ngood movie \t1\nbad film \t0\nnice plot \t1\n")
    task = ClassificationTask()
    examples, problems = task.read(train)
    assert not problems and [e.text for e in examples] == ["good movie ", "bad film ", "nice plot "]
    task.labels = task.infer_labels(examples)
    assert task.labels == ["0", "1"]
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\ngood\t1\nodd\t2\n")
    examples, problems = task.read(dev)
    kept = task.drop_unknown_labels(examples, problems)
    assert len(kept) == 1 and "dev.tsv:line 3: label '2' is not in the label map" in problems.messages[0]


def test_csv_pairs_jsonl_multilabel_and_bad_rows(tmp_path, tokenizer):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text('sentence1,sentence2,label\n"bob lives in paris","alice, too",yes\n')
    task = ClassificationTask()
    (example,), _ = task.read(pairs)
    assert (example.text, example.text_pair) == ("bob lives in paris", "alice, too")
    task.labels = ["no", "yes"]
    (feature,) = task.features([example], tokenizer)
    assert 1 in feature["token_type_ids"] and feature["label"] == 1
    multi = tmp_path / "multi.jsonl"
    multi.write_text(
        json.dumps({"text": "good", "label": ["a", "b"]}) + "\n" + json.dumps({"text": "bad", "label": []}) + "\n"
    )
    task = ClassificationTask(problem_type="multi_label_classification")
    examples, problems = task.read(multi)
    assert task.infer_labels(examples) == ["a", "b"] and len(examples) == 2
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\none\ttwo\tthree\n")
    with pytest.raises(DataError, match="bad.tsv:2: 3 columns"):
        ClassificationTask().read(bad)
    header_only = tmp_path / "header.tsv"
    header_only.write_text("sentence\tlabel\n")
    with pytest.raises(DataError, match="no examples"):
        ClassificationTask().read(header_only)


# --- QA --------------------------------------------------------------------------------------------


def _squad(context: str, answer: str, start: int) -> dict:
    qa = {"id": "q1", "question": "where does bob live ?", "answers": [{"text": answer, "answer_start": start}]}
    return {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [qa]}]}]}


def test_squad_offset_mismatch_is_reported_with_id(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(_squad("bob lives in paris .", "paris", 3)))
    examples, problems = QaTask().read(path)
    assert not examples and "s.json:id q1: answer_start 3 points at" in problems.messages[0]
    examples, problems = QaTask().read(path, require_labels=False)  # evaluation needs only the texts
    assert len(examples) == 1 and not problems


def test_qa_windows_and_targets(tmp_path, tokenizer):
    context = " ".join(["the movie was good ."] * 6) + " bob lives in paris ."
    path = tmp_path / "s.json"
    path.write_text(json.dumps(_squad(context, "paris", context.index("paris"))))
    task = QaTask(max_seq_len=20, doc_stride=4, max_query_len=6)
    examples, _ = task.read(path)
    features = task.features(examples, tokenizer)
    assert len(features) > 1 and all(len(f["input_ids"]) <= 20 for f in features)
    found = [f for f in features if f["start_position"] > 0]
    assert found, "the window holding the answer has a non-[CLS] target"
    for f in found:
        start, end = f["window"].offsets[f["start_position"]][0], f["window"].offsets[f["end_position"]][1]
        assert context[start:end] == "paris"
    assert all((f["start_position"], f["end_position"]) == (0, 0) for f in features if f not in found)
    # the question is cut to max_query_len tokens
    assert all(sum(1 for s in f["window"].sequence_ids if s == 0) <= 6 for f in features)


def _empty(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def test_model_dir_of_a_pretraining_run(tmp_path):
    from training.finetune.model_dir import resolve_model_dir, resolve_tokenizer_dir

    run = tmp_path / "run"
    for name in ("checkpoints/step-00000100", "checkpoints/step-00000200", "checkpoints/.tmp-step-00000300"):
        (run / name).mkdir(parents=True)
        (run / name / "config.json").write_text("{}")
    (run / "checkpoints/step-00000200/vocab.txt").write_text("[PAD]\n")
    assert resolve_model_dir(run) == run / "checkpoints/step-00000200"  # latest complete checkpoint
    assert resolve_tokenizer_dir(run / "checkpoints/step-00000200", run) == run / "checkpoints/step-00000200"
    (run / "model").mkdir()
    (run / "model/config.json").write_text("{}")
    assert resolve_model_dir(run) == run / "model"  # the final model wins
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        resolve_tokenizer_dir(run / "model", run)
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        resolve_model_dir(_empty(tmp_path))


# --- training batches ------------------------------------------------------------------------------


def test_training_batches_cover_every_example_once():
    from training.finetune.batching import length_grouped_batches, random_batches

    lengths = [int(n) for n in np.random.default_rng(1).integers(3, 60, size=203)]
    shuffled = random_batches(len(lengths), 16, np.random.default_rng(0))
    grouped = length_grouped_batches(lengths, 16, np.random.default_rng(0), group=4)
    for batches in (shuffled, grouped):
        assert sorted(np.concatenate(batches).tolist()) == list(range(203))
        assert all(1 <= len(b) <= 16 for b in batches)
    # grouping pads much less than shuffling: padded cells = batch size x longest member
    padded = lambda batches: sum(len(b) * max(lengths[i] for i in b) for b in batches)  # noqa: E731
    assert padded(grouped) < 0.8 * padded(shuffled)


def test_shuffled_batches_are_the_default():
    from training.finetune.settings import FinetuneSettings

    assert FinetuneSettings(task="ner", model="m", train="t", out="o").group_by_length is False


def test_qa_loss_ignores_padded_positions():
    import torch

    from model.heads import QuestionAnsweringOutput
    from training.finetune.losses import task_loss

    torch.manual_seed(0)
    start, end = torch.randn(1, 6), torch.randn(1, 6)
    targets = {"start_positions": torch.tensor([2]), "end_positions": torch.tensor([4])}
    alone = task_loss("question-answering", None, QuestionAnsweringOutput(start, end), targets)
    # the same window padded to 10 positions whose logits are the head's bias (0 here)
    padded = QuestionAnsweringOutput(torch.cat([start, torch.zeros(1, 4)], 1), torch.cat([end, torch.zeros(1, 4)], 1))
    mask = torch.tensor([[1] * 6 + [0] * 4])
    from tests.helpers.tolerances import FP32_EPS, sum_tolerance

    # a log-sum-exp over 10 positions instead of 6: its sum's rounding (relative) is the log's (absolute)
    masked = task_loss("question-answering", None, padded, targets, mask)
    assert torch.allclose(masked, alone, rtol=FP32_EPS, atol=sum_tolerance(10, 1.0))
    assert task_loss("question-answering", None, padded, targets) > alone  # unmasked, padding takes a share

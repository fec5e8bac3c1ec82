"""Corpus readers: BERT format, plain text with the sentence splitter, JSONL, gzip, bad files."""

from __future__ import annotations

import gzip
import json

import pytest

from training.corpus import iter_sentences, read_documents, split_sentences


def test_bert_format_documents_and_gzip(tmp_path):
    text = "First sentence.\nSecond one.\n\n\n  \nOther doc.\n"
    plain = tmp_path / "a.txt"
    plain.write_text(text, encoding="utf-8")
    zipped = tmp_path / "a.bin"  # gzip is found by its magic bytes, not the name
    zipped.write_bytes(gzip.compress(text.encode("utf-8")))
    expected = [["First sentence.", "Second one."], ["Other doc."]]
    assert list(read_documents(plain)) == expected
    assert list(read_documents(zipped)) == expected


def test_sentence_splitter_english_and_chinese():
    text = 'Mr. Smith met Dr. J. Watson in the U.S. Army. "Really?" she asked. 3 days passed! 我爱北京。你呢？好的！OK.'
    assert split_sentences(text) == [
        "Mr. Smith met Dr. J. Watson in the U.S. Army.",
        '"Really?" she asked.',
        "3 days passed!",
        "我爱北京。",
        "你呢？",
        "好的！",
        "OK.",
    ]
    assert split_sentences("no end punctuation here") == ["no end punctuation here"]
    assert split_sentences("e.g. this stays whole. version 3.5 too.") == ["e.g. this stays whole. version 3.5 too."]


def test_plain_text_and_jsonl(tmp_path):
    plain = tmp_path / "p.txt"
    plain.write_text("One here. Two\nthere.\n\n第一句。第二句！\n", encoding="utf-8")
    assert list(read_documents(plain, "text")) == [["One here.", "Two there."], ["第一句。", "第二句！"]]
    lines = [json.dumps({"text": "A b. C d.\n\nNew para", "id": 1}), "", json.dumps({"body": "X y.", "text": ""})]
    jsonl = tmp_path / "d.jsonl.gz"
    jsonl.write_bytes(gzip.compress("\n".join(lines).encode("utf-8")))
    assert list(read_documents(jsonl)) == [["A b.", "C d.", "New para"]]
    (tmp_path / "e.jsonl").write_text(json.dumps({"body": "X y."}) + "\n", encoding="utf-8")
    assert list(read_documents(tmp_path / "e.jsonl", text_field="body")) == [["X y."]]
    assert list(iter_sentences([plain])) == ["One here. Two", "there.", "第一句。第二句！"]


def test_bad_files_raise_clear_errors(tmp_path):
    binary = tmp_path / "b.dat"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ValueError, match="not a text file"):
        list(read_documents(binary))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        list(read_documents(latin))
    late = tmp_path / "late.txt"
    late.write_bytes(b"ok line\n" * 20000 + b"bad \xff byte\n")
    with pytest.raises(ValueError, match="line 20001 is not valid UTF-8"):
        list(read_documents(late))
    truncated = tmp_path / "t.txt.gz"
    truncated.write_bytes(gzip.compress(b"line one\n" * 5000)[:-20])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        list(read_documents(truncated))
    bad_json = tmp_path / "x.jsonl"
    bad_json.write_text('{"text": "ok"}\n{broken\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        list(read_documents(bad_json))
    no_field = tmp_path / "y.jsonl"
    no_field.write_text('{"body": "ok"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="no 'text' field"):
        list(read_documents(no_field))
    with pytest.raises(FileNotFoundError):
        list(read_documents(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="unknown corpus format"):
        read_documents(no_field, "xml")
    (tmp_path / "empty.txt").write_bytes(b"")
    assert list(read_documents(tmp_path / "empty.txt")) == []


def test_lines_longer_than_one_read(tmp_path, monkeypatch):
    """Lines spanning many reads (and a character cut between two reads) come back whole, numbered right."""
    import training.corpus as corpus

    monkeypatch.setattr(corpus, "_READ_SIZE", 7)
    long = "word " * 40 + "née"
    path = tmp_path / "long.txt"
    path.write_text(f"{long}\r\nshort\n\n{long}\nlast without newline", encoding="utf-8")
    assert list(read_documents(path)) == [[long.strip(), "short"], [long, "last without newline"]]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"one\n" + b"x" * 70_000 + b"\xff tail\n")  # past the 64 KiB sniffed on opening
    with pytest.raises(ValueError, match="line 2 is not valid UTF-8"):
        list(read_documents(bad))


def test_jsonl_lone_surrogates_are_deleted(tmp_path):
    """`\\ud83d` (half of an emoji) is valid JSON but no tokenizer can take it; BERT's cleaning deletes it."""
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "cut emoji \\ud83d here. Whole \\ud83d\\ude00 one."}\n', encoding="utf-8")
    assert list(read_documents(path)) == [["cut emoji here.", "Whole \U0001f600 one."]]

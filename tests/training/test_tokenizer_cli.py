"""`bert tokenizer train`: trains a WordPiece vocabulary, writes vocab.txt + tokenizer.json, loads back."""

from __future__ import annotations

import gzip

from model.tokenizer import SPECIAL_TOKENS, load_tokenizer
from tests.training import data_testkit
from training.tokenizer_cli import main

corpus_file = data_testkit.corpus_file  # fixture


def test_train_writes_both_files_and_loads(tmp_path, corpus_file, capsys):
    zipped = tmp_path / "corpus.txt.gz"
    zipped.write_bytes(gzip.compress(corpus_file.read_bytes()))
    chinese = tmp_path / "zh.txt"
    chinese.write_text("我爱北京天安门。\n北京欢迎你！\n\n", encoding="utf-8")
    out = tmp_path / "tok"
    argv = ["train", "--input", str(zipped), str(chinese), "--vocab-size", "120", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert "trained" in capsys.readouterr().out
    vocab = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert len(vocab) <= 120 and any(t.startswith("##") for t in vocab) and "北" in vocab
    for path in (out, out / "vocab.txt", out / "tokenizer.json"):
        tok = load_tokenizer(path)
        assert tok.lowercase
        encoding = tok.encode("The Cat 北京")
        assert encoding.tokens[0] == "[CLS]" and "北" in encoding.tokens and "[UNK]" not in encoding.tokens
    assert main(argv) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_cased_and_no_cjk_split(tmp_path, corpus_file):
    out = tmp_path / "tok"
    argv = ["train", "--input", str(corpus_file), "--vocab-size", "200", "--out", str(out), "--no-progress"]
    assert main([*argv, "--cased", "--no-cjk-split"]) == 0
    tok = load_tokenizer(out)
    assert not tok.lowercase
    assert load_tokenizer(out / "vocab.txt").lowercase is False
    assert any(t[:1].isupper() for t in tok.get_vocab())
    assert tok.encode("北京").tokens[1:-1] == ["[UNK]"]  # one word, not one token per character


def test_bad_inputs(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    binary = tmp_path / "b.bin"
    binary.write_bytes(bytes(range(256)))
    out = str(tmp_path / "tok")
    for argv in (
        ["train", "--input", str(empty), "--vocab-size", "100", "--out", out],
        ["train", "--input", str(binary), "--vocab-size", "100", "--out", out],
        ["train", "--input", str(tmp_path / "missing.txt"), "--vocab-size", "100", "--out", out],
        ["train", "--input", str(empty), "--vocab-size", "3", "--out", out],
    ):
        assert main([*argv, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("bert tokenizer train: error:") and "\n" not in err
    assert main(["fit"]) == 2

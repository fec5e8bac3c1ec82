"""Named datasets: local data dir, download cache with sha256, checksum failure, offline message, readers.

Downloads are served from a local HTTP server on 127.0.0.1 (these machines have no internet).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest

from training import datasets as ds

SST2_TSV = "sentence\tlabel\na gorgeous , witty film \t1\ndull and lifeless \t0\nit 's a charmer \t1\n"

CONLL_IOB1 = """EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
met VBD I-VP O
Sweden NNP I-NP I-LOC
Norway NNP I-NP B-LOC

-DOCSTART- -X- O O"""  # this copy's quirk: the first -DOCSTART- sits at the end, without a newline


class _Server:
    """Serves files from a directory on 127.0.0.1 and counts the GET requests per path."""

    def __init__(self, root: Path):
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):  # noqa: N802 (http.server's name)
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    (root / "sst2").mkdir(parents=True)
    (root / "sst2" / "train.tsv").write_text(SST2_TSV, encoding="utf-8")
    server = _Server(root)
    yield server, root
    server.close()


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    for var in ("BERTKIT_DATA", "BERTKIT_DATA_MIRROR", "BERTKIT_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "cache"))


def _pin_sst2(monkeypatch, url: str, content: str) -> None:
    """Point the sst2 spec at the local server with the sha256 of `content`."""
    spec = ds.DATASETS["sst2"]
    file = dataclasses.replace(
        spec.splits["train"], url=url, sha256=hashlib.sha256(content.encode()).hexdigest(), size=len(content)
    )
    monkeypatch.setitem(ds.DATASETS, "sst2", dataclasses.replace(spec, splits={"train": file}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_data_dir_wins_and_needs_no_network(tmp_path, monkeypatch):
    (tmp_path / "data" / "sst2").mkdir(parents=True)
    (tmp_path / "data" / "sst2" / "train.tsv").write_text(SST2_TSV)
    monkeypatch.setenv("BERTKIT_OFFLINE", "1")
    path = ds.resolve_file("sst2", data_dir=tmp_path / "data")
    assert path == tmp_path / "data" / "sst2" / "train.tsv"
    monkeypatch.setenv("BERTKIT_DATA", str(tmp_path / "data"))
    assert [ex.label for ex in ds.load("sst2")] == [1, 0, 1]


def test_squad_accepts_the_even_dev_split_name(tmp_path):
    (tmp_path / "squad").mkdir()
    (tmp_path / "squad" / "train-from-dev-even.json").write_text('{"data": []}')
    assert ds.resolve_file("squad", data_dir=tmp_path, allow_download=False).name == "train-from-dev-even.json"


def test_download_checks_sha_and_caches(served, tmp_path, monkeypatch):
    server, _ = served
    _pin_sst2(monkeypatch, f"{server.url}/sst2/train.tsv", SST2_TSV)
    cache = tmp_path / "cache" / "datasets"
    path = ds.resolve_file("sst2", progress=False)
    assert path == cache / "sst2" / "train.tsv"
    assert path.read_text() == SST2_TSV
    assert server.hits == {"/sst2/train.tsv": 1}
    # Second use: served from the cache, no request.
    examples = ds.load("sst2", progress=False)
    assert [ex.text for ex in examples][0] == "a gorgeous , witty film"
    assert server.hits == {"/sst2/train.tsv": 1}
    # A corrupted cache entry is noticed (sha256 on every use) and fetched again.
    path.write_text("truncated")
    assert ds.resolve_file("sst2", progress=False).read_text() == SST2_TSV
    assert server.hits == {"/sst2/train.tsv": 2}


def test_mirror_env_replaces_the_source(served, monkeypatch):
    server, _ = served
    _pin_sst2(monkeypatch, "https://example.invalid/never-used.tsv", SST2_TSV)
    monkeypatch.setenv("BERTKIT_DATA_MIRROR", server.url + "/")
    assert ds.resolve_file("sst2", progress=False).read_text() == SST2_TSV
    assert server.hits == {"/sst2/train.tsv": 1}


def test_checksum_mismatch_is_refused_and_nothing_is_kept(served, tmp_path, monkeypatch):
    server, root = served
    _pin_sst2(monkeypatch, f"{server.url}/sst2/train.tsv", SST2_TSV)
    (root / "sst2" / "train.tsv").write_text(SST2_TSV.replace("witty", "tampered"))
    with pytest.raises(ds.ChecksumError, match="sha256 mismatch") as err:
        ds.resolve_file("sst2", progress=False)
    assert "\n" not in str(err.value)
    cache = tmp_path / "cache" / "datasets" / "sst2"
    assert list(cache.iterdir()) == []  # neither the file nor a .part


def test_offline_gives_one_line_with_what_to_do(monkeypatch, capsys):
    _pin_sst2(monkeypatch, f"http://127.0.0.1:{_free_port()}/sst2/train.tsv", SST2_TSV)
    with pytest.raises(ds.DatasetError) as err:
        ds.resolve_file("sst2", progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert "cannot download" in message and "BERTKIT_DATA" in message and "sst2/train.tsv" in message
    # The command line prints the same single line and exits 2, no traceback.
    assert ds.main(["fetch", "sst2"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "Traceback" not in stderr and "BERTKIT_DATA" in stderr


def test_offline_switch_skips_the_network(served, monkeypatch):
    server, _ = served
    _pin_sst2(monkeypatch, f"{server.url}/sst2/train.tsv", SST2_TSV)
    monkeypatch.setenv("BERTKIT_OFFLINE", "1")
    with pytest.raises(ds.DatasetError, match="downloads are off"):
        ds.resolve_file("sst2")
    assert server.hits == {}


def test_unknown_names_and_splits():
    with pytest.raises(ds.DatasetError, match="known: sst2"):
        ds.resolve_file("imdb")
    with pytest.raises(ds.DatasetError, match="no split"):
        ds.resolve_file("sst2", "test")


def test_conll_iob1_becomes_iob2(tmp_path):
    path = tmp_path / "eng.train"
    path.write_text(CONLL_IOB1)
    examples = ds.read_conll(path, iob1=True)
    assert [ex.tokens for ex in examples] == [
        ["EU", "rejects", "German", "call"],
        ["Peter", "Blackburn", "met", "Sweden", "Norway"],
    ]
    assert examples[0].tags == ["B-ORG", "O", "B-MISC", "O"]
    assert examples[1].tags == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]
    assert ds.entity_labels(examples) == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    # Round trip through the writer (tab separated, IOB2 kept as is).
    again = ds.read_conll(ds.write_conll(examples, tmp_path / "out.conll"))
    assert again == examples


def test_conll_bad_tag_names_the_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("Paris\tLOC\n")
    with pytest.raises(ds.DatasetError, match=r"bad.conll:1: tag must be"):
        ds.read_conll(path)


def test_sst2_reader_and_writer(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text(SST2_TSV)
    examples = ds.read_sst2(path)
    assert examples[1] == ds.TextExample("dull and lifeless", 0)
    assert ds.read_sst2(ds.write_sst2(examples, tmp_path / "again.tsv")) == examples
    path.write_text("text\tlabel\nx\t1\n")
    with pytest.raises(ds.DatasetError, match="header"):
        ds.read_sst2(path)


def test_squad_reader_writer_and_grouped_holdout(tmp_path):
    doc = {
        "version": "1.1",
        "data": [
            {
                "title": f"Article{a}",
                "paragraphs": [
                    {
                        "context": f"Context {a}.{p} mentions Denver Broncos.",
                        "qas": [
                            {
                                "id": f"{a}-{p}-{q}",
                                "question": f"Who {q}?",
                                "answers": [
                                    {"text": "Denver Broncos", "answer_start": len(f"Context {a}.{p} mentions ")}
                                ],
                            }
                            for q in range(2)
                        ],
                    }
                    for p in range(2)
                ],
            }
            for a in range(5)
        ],
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(doc))
    examples = ds.read_squad(path)
    assert len(examples) == 20
    assert examples[0].context[examples[0].answers[0]["answer_start"] :].startswith("Denver Broncos")
    train, held = ds.holdout_split(examples, 0.2, seed=1, group=lambda ex: ex.title)
    assert len(held) == 4 and len(train) == 16
    assert {ex.title for ex in held}.isdisjoint({ex.title for ex in train})
    assert ds.holdout_split(examples, 0.2, seed=1, group=lambda ex: ex.title) == (train, held)  # deterministic
    assert ds.read_squad(ds.write_squad(train, tmp_path / "train.json")) == train
    path.write_text('{"data": [{"paragraphs": [{"qas": []}]}]}')
    with pytest.raises(ds.DatasetError, match="not SQuAD"):
        ds.read_squad(path)

"""Named datasets (`sst2`, `conll2003`, `wnut17`, `squad`): find them locally or download them once.

Resolution order for each file of a dataset:

1. the data directory: `--data-dir DIR` (the `data_dir=` argument) or else `$BERTKIT_DATA`,
   laid out as `DIR/<dataset>/<file>` (e.g. `DIR/sst2/train.tsv`);
2. the download cache: `$BERTKIT_CACHE/datasets/<dataset>/<file>` (default `~/.cache/bertkit`),
   whose sha256 is checked on every use;
3. a download from the dataset's public source (or `$BERTKIT_DATA_MIRROR/<dataset>/<file>`),
   streamed to a `.part` file, checked against the pinned sha256, then moved into the cache.
   `BERTKIT_OFFLINE=1` skips this step.

Readers turn the files into plain examples: `TextExample` (SST-2), `TokenExample` (CoNLL-2003 in
IOB2, WNUT-17) and `QaExample` (SQuAD v1.1).

    python -m training.datasets fetch sst2 conll2003 --data-dir data
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.args import parse
from core.checksums import sha256_file

DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 16


class DatasetError(Exception):
    """A dataset could not be had; `str(err)` is one line saying what to do."""


class ChecksumError(DatasetError):
    """A downloaded file did not match its pinned sha256 (the file is discarded)."""


# --- specs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset: where it lies in a data directory and where it comes from."""

    filename: str  # name in the cache and the preferred name in a data directory
    url: str | None  # public source; None when the file can only be provided locally
    sha256: str | None  # pinned hash of the public file (checked on download and on cache hits)
    size: int | None = None  # bytes, for the progress bar when the server sends no length
    local_names: tuple[str, ...] = ()  # other accepted names in a data directory, tried in order


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str  # classify | ner | qa
    description: str
    licence: str
    splits: dict[str, DataFile] = field(default_factory=dict)


def _github_raw(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


_CONLL_REPO, _CONLL_COMMIT = "ZhixiuYe/HSCRF-pytorch", "86bb64890317b74517c5ad44b47c66635df327d8"
_SST2_REPO, _SST2_COMMIT = "eyalbd2/Reproducing-AutoPrompt", "6288fb5bec9c572f2492875ae0111df5b6daed11"
_WNUT_REPO, _WNUT_COMMIT = "leondz/emerging_entities_17", "e52a2d2a71ac1a051ca2d532eef28653c5c02603"

DATASETS: dict[str, DatasetSpec] = {
    "sst2": DatasetSpec(
        name="sst2",
        task="classify",
        description="SST-2 sentiment (GLUE), 67,349 phrases, labels negative/positive",
        licence="Stanford Sentiment Treebank research release via GLUE",
        splits={
            "train": DataFile(
                "train.tsv",
                _github_raw(_SST2_REPO, _SST2_COMMIT, "glue_data/SST-2/train_full.tsv"),
                "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
                3_806_081,
            ),
        },
    ),
    "conll2003": DatasetSpec(
        name="conll2003",
        task="ner",
        description="CoNLL-2003 English NER (PER/LOC/ORG/MISC), read as IOB2",
        licence="Reuters Corpus research-use terms; annotations by the CoNLL-2003 organisers",
        splits={
            "train": DataFile(
                "train.txt",
                _github_raw(_CONLL_REPO, _CONLL_COMMIT, "data/eng.train"),
                "bed631399cb0e859c4b446438ce57dfe0208792ca6106ef11620877355494c3a",
                3_281_526,
            ),
            "validation": DataFile(
                "valid.txt",
                _github_raw(_CONLL_REPO, _CONLL_COMMIT, "data/eng.testa"),
                "aa83a45b88e4952998156583e2ff5a8be7c1f04fb9efa3a29cd87fac2c883807",
                827_010,
            ),
        },
    ),
    "wnut17": DatasetSpec(
        name="wnut17",
        task="ner",
        description="WNUT-17 emerging entities (6 types), IOB2",
        licence="CC BY 4.0",
        splits={
            "train": DataFile(
                "train.conll",
                _github_raw(_WNUT_REPO, _WNUT_COMMIT, "wnut17train.conll"),
                "731820e13f71af324c6b55a1575ec2ce59fbaa2a0806f8f0400b98d56cd6a7a5",
                493_781,
            ),
            "validation": DataFile(
                "dev.conll",
                _github_raw(_WNUT_REPO, _WNUT_COMMIT, "emerging.dev.conll"),
                "e053b752b8155113ca66e7db08af5f2f5f43ab993694e4774f1ec5bad42312d8",
                114_749,
            ),
        },
    ),
    "squad": DatasetSpec(
        name="squad",
        task="qa",
        description="SQuAD v1.1 extractive QA (a data directory may hold the even-article half of dev instead)",
        licence="CC BY-SA 4.0",
        splits={
            "train": DataFile(
                "train-v1.1.json",
                "https://rajpurkar.github.io/SQuAD-explorer/dataset/train-v1.1.json",
                "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
                30_288_272,
                local_names=("train-from-dev-even.json",),
            ),
        },
    ),
}


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


# --- resolution ----------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    root = os.environ.get("BERTKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bertkit"
    )
    return Path(root) / "datasets"


def default_data_dir() -> Path | None:
    value = os.environ.get("BERTKIT_DATA")
    return Path(value) if value else None


def _find_local(data_dir: Path, spec: DatasetSpec, file: DataFile) -> Path | None:
    for name in (file.filename, *file.local_names):
        path = data_dir / spec.name / name
        if path.is_file():
            return path
    return None


def _source_url(spec: DatasetSpec, file: DataFile) -> str | None:
    mirror = os.environ.get("BERTKIT_DATA_MIRROR")
    if mirror:
        return f"{mirror.rstrip('/')}/{spec.name}/{file.filename}"
    return file.url


def download(url: str, dest: Path, sha256: str | None, size: int | None = None, progress: bool = True) -> Path:
    """Stream `url` into `dest` (atomically, via `dest.part`), checking the sha256 on the way.

    Raises DatasetError when the source cannot be reached and ChecksumError on a hash mismatch;
    in both cases nothing is left at `dest`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or size
            bar = _progress_bar(total, f"download {dest.parent.name}/{dest.name}", progress)
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
            bar.close()
    except (urllib.error.URLError, OSError, ValueError) as err:
        part.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise DatasetError(f"cannot download {url} ({reason}; offline?)") from err
    got = digest.hexdigest()
    if sha256 and got != sha256:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"sha256 mismatch for {url}: expected {sha256}, got {got}; the download was discarded")
    os.replace(part, dest)
    return dest


def _progress_bar(total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled)


def resolve_file(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    allow_download: bool | None = None,
    progress: bool = True,
) -> Path:
    """The local path of one split of a named dataset (see the module docstring for the order)."""
    spec = get_spec(name)
    if split not in spec.splits:
        raise DatasetError(f"dataset {name} has no split {split!r}; it has {', '.join(spec.splits)}")
    file = spec.splits[split]
    data_root = Path(data_dir) if data_dir else default_data_dir()
    if data_root is not None:
        found = _find_local(data_root, spec, file)
        if found is not None:
            return found
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = cache_root / spec.name / file.filename
    if cached.is_file():
        if file.sha256 is None or sha256_file(cached) == file.sha256:
            return cached
        cached.unlink()  # corrupt or stale: fetch it again below
    if allow_download is None:
        allow_download = os.environ.get("BERTKIT_OFFLINE", "") not in ("1", "true", "yes")
    url = _source_url(spec, file)
    wanted = f"{spec.name}/{file.filename}"
    if data_root is not None:
        hint = f"no {data_root / wanted}; put the file there or point --data-dir / BERTKIT_DATA elsewhere"
    else:
        hint = f"set BERTKIT_DATA or pass --data-dir to a directory holding {wanted}"
    if not allow_download or url is None:
        raise DatasetError(f"dataset {name} ({split}) is not available locally and downloads are off; {hint}")
    try:
        return download(url, cached, file.sha256, file.size, progress=progress)
    except ChecksumError:
        raise
    except DatasetError as err:
        raise DatasetError(f"dataset {name} ({split}) is not available locally and {err}; {hint}") from err


def resolve(name: str, **kwargs: Any) -> dict[str, Path]:
    """Every split of a named dataset, as {split: path}."""
    return {split: resolve_file(name, split, **kwargs) for split in get_spec(name).splits}


# --- examples and readers ------------------------------------------------------------------------


@dataclass
class TextExample:
    text: str
    label: int  # index into the dataset's label list


@dataclass
class TokenExample:
    tokens: list[str]
    tags: list[str]  # IOB2, one per token


@dataclass
class QaExample:
    id: str
    title: str
    question: str
    context: str
    answers: list[dict]  # [{"text": str, "answer_start": int}], first is the training target


SST2_LABELS = ["negative", "positive"]


def read_sst2(path: str | Path) -> list[TextExample]:
    """GLUE SST-2 TSV: header `sentence<TAB>label`, label 1 = positive."""
    examples = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:2] != ["sentence", "label"]:
            raise DatasetError(f"{path}: expected a 'sentence<TAB>label' header, got {header!r}")
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\n")
            if not line:
                continue
            text, _, label = line.rpartition("\t")
            if label not in ("0", "1"):
                raise DatasetError(f"{path}:{lineno}: label must be 0 or 1, got {label!r}")
            examples.append(TextExample(text.strip(), int(label)))
    return examples


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 (`I-` by default, `B-` only between touching entities) to IOB2 (`B-` starts every entity)."""
    out: list[str] = []
    for i, tag in enumerate(tags):
        if tag.startswith("I-"):
            prev = out[i - 1] if i else "O"
            if prev == "O" or prev[2:] != tag[2:]:
                tag = "B-" + tag[2:]
        out.append(tag)
    return out


def read_conll(path: str | Path, iob1: bool = False) -> list[TokenExample]:
    """CoNLL columns (token first, tag last, space or tab separated); `-DOCSTART-` lines are skipped."""
    examples: list[TokenExample] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            examples.append(TokenExample(list(tokens), iob1_to_iob2(tags) if iob1 else list(tags)))
        tokens.clear()
        tags.clear()

    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                flush()
                continue
            if line.startswith("-DOCSTART-"):
                flush()
                continue
            cols = line.split("\t") if "\t" in line else line.split(" ")
            if len(cols) < 2:
                raise DatasetError(f"{path}:{lineno}: expected 'token ... tag', got {line!r}")
            tag = cols[-1].strip()
            if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
                raise DatasetError(f"{path}:{lineno}: tag must be O, B-X or I-X, got {tag!r}")
            tokens.append(cols[0])
            tags.append(tag)
    flush()
    return examples


def read_squad(path: str | Path) -> list[QaExample]:
    """SQuAD v1.1 JSON (`data/paragraphs/qas/answers`)."""
    with open(path, encoding="utf-8") as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}: not valid JSON ({err})") from err
    examples = []
    try:
        for article in doc["data"]:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    if qa.get("is_impossible"):
                        continue
                    examples.append(
                        QaExample(qa["id"], article.get("title", ""), qa["question"], context, list(qa["answers"]))
                    )
    except (KeyError, TypeError) as err:
        raise DatasetError(f"{path}: not SQuAD v1.1 layout (missing {err})") from err
    return examples


def entity_labels(examples: Iterable[TokenExample]) -> list[str]:
    """Tag list for a token-classification head: `O` first, then B-/I- per type in sorted order."""
    types = sorted({tag[2:] for ex in examples for tag in ex.tags if tag != "O"})
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


_READERS: dict[str, Callable[[Path], list]] = {
    "sst2": read_sst2,
    "conll2003": lambda p: read_conll(p, iob1=True),
    "wnut17": read_conll,
    "squad": read_squad,
}


def load(name: str, split: str = "train", **kwargs: Any) -> list:
    """Examples of one split of a named dataset (resolving or downloading the file first)."""
    return _READERS[get_spec(name).name](resolve_file(name, split, **kwargs))


def holdout_split(
    examples: Sequence, fraction: float, seed: int = 0, group: Callable[[Any], str] | None = None
) -> tuple[list, list]:
    """Deterministic (train, held_out) split; with `group`, whole groups go to one side (no leakage)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    keys = sorted({group(ex) for ex in examples}) if group else list(range(len(examples)))
    random.Random(seed).shuffle(keys)
    n_held = max(1, round(len(keys) * fraction))
    held = set(keys[:n_held])
    train, heldout = [], []
    for i, ex in enumerate(examples):
        (heldout if (group(ex) if group else i) in held else train).append(ex)
    return train, heldout


# --- writers (the formats the fine-tuning commands read) -----------------------------------------


def write_sst2(examples: Iterable[TextExample], path: str | Path, label_names: Sequence[str] | None = None) -> Path:
    """`sentence<TAB>label` TSV; with `label_names` the label column holds names (e.g. SST2_LABELS)."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write("sentence\tlabel\n")
        for ex in examples:
            f.write(f"{ex.text}\t{label_names[ex.label] if label_names else ex.label}\n")
    return path


def write_conll(examples: Iterable[TokenExample], path: str | Path) -> Path:
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for ex in examples:
            f.writelines(f"{tok}\t{tag}\n" for tok, tag in zip(ex.tokens, ex.tags))
            f.write("\n")
    return path


def write_squad(examples: Iterable[QaExample], path: str | Path) -> Path:
    """SQuAD v1.1 JSON, one paragraph per distinct (title, context)."""
    articles: dict[str, dict[str, list]] = {}
    for ex in examples:
        qa = {"id": ex.id, "question": ex.question, "answers": ex.answers}
        articles.setdefault(ex.title, {}).setdefault(ex.context, []).append(qa)
    data = [
        {"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in paras.items()]}
        for title, paras in articles.items()
    ]
    path = Path(path)
    path.write_text(json.dumps({"version": "1.1", "data": data}, ensure_ascii=False), encoding="utf-8")
    return path


# --- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.datasets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="resolve or download datasets and print their paths")
    fetch.add_argument("names", nargs="+", choices=sorted(DATASETS))
    fetch.add_argument("--data-dir", help="local data directory (default: $BERTKIT_DATA)")
    fetch.add_argument("--cache-dir", help="download cache (default: $BERTKIT_CACHE/datasets or ~/.cache/bertkit)")
    sub.add_parser("list", help="list the named datasets")
    args = parse(parser, argv)
    if args.command == "list":
        for spec in DATASETS.values():
            print(f"{spec.name:<10} {spec.task:<9} {spec.description}")
        return 0
    status = 0
    for name in args.names:
        try:
            for split, path in resolve(name, data_dir=args.data_dir, cache_dir=args.cache_dir).items():
                print(f"{name}\t{split}\t{path}")
        except DatasetError as err:
            print(f"datasets: {err}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())

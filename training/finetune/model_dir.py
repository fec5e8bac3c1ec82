"""Find the model and tokenizer of `--model`: a model directory, or a run directory holding one."""

from __future__ import annotations

import re
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
PREFERRED = ("final", "best", "model", "hf")


def resolve_model_dir(path: str | Path) -> Path:
    """The directory with config.json: `path` itself, or the preferred / latest checkpoint below it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model directory {path} does not exist")
    if path.is_file():
        path = path.parent
    if (path / "config.json").exists():
        return path
    found = [p.parent for pattern in ("*/config.json", "*/*/config.json") for p in path.glob(pattern)]
    candidates = [p for p in found if not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if not candidates:
        raise FileNotFoundError(f"{path} holds no config.json (nor does any sub-directory): not a model directory")
    for name in PREFERRED:
        for candidate in candidates:
            if candidate.name == name:
                return candidate

    def step(p: Path) -> tuple[int, float]:
        numbers = re.findall(r"\d+", p.name)
        return (int(numbers[-1]) if numbers else -1, p.stat().st_mtime)

    return max(candidates, key=step)


def resolve_tokenizer_dir(model_dir: Path, given: str | Path) -> Path:
    """The model directory if it holds a tokenizer, else the nearest parent up to `given` that does."""
    for directory in [model_dir, *model_dir.parents]:
        if any((directory / name).exists() for name in TOKENIZER_FILES):
            return directory
        if directory == Path(given) or directory == Path(given).parent:
            break
    raise FileNotFoundError(f"no tokenizer.json or vocab.txt in {model_dir} or the run directory {given}")

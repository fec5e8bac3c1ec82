"""The house's layering, checked on every import statement (lazy ones inside functions included).

    cli/                      the only layer above both sides
    training/   service/      never import each other
    core/  model/             below both; core/ and service/ never import torch

A contract names a package (or one module) and the top-level modules it must never import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# (source: a package directory or a .py file, forbidden top-level modules, why)
CONTRACTS = [
    ("service", {"training", "cli", "torch", "transformers"}, "the service runs from a bundle, without torch"),
    ("training", {"service", "cli"}, "training stands on core/ and model/, never on the service"),
    ("model", {"training", "service", "cli"}, "the model is the bottom layer"),
    ("core", {"training", "service", "cli", "torch", "transformers"}, "core is shared by both sides, torch-free"),
    ("service/batching.py", {"fastapi", "onnxruntime", "starlette"}, "the batcher is testable without a model"),
]


def imported_modules(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, top-level module) of every import in the file, relative imports resolved to their package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # `from . import x` stays inside the file's own package
                found.append((node.lineno, path.relative_to(root).parts[0]))
            elif node.module:
                found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(source: str, forbidden: set[str], root: Path = REPO) -> list[str]:
    target = root / source
    files = [target] if target.suffix == ".py" else sorted(target.rglob("*.py"))
    return [
        f"{file.relative_to(root)}:{line} imports {module}"
        for file in files
        for line, module in imported_modules(file, root)
        if module in forbidden
    ]


@pytest.mark.parametrize(("source", "forbidden", "why"), CONTRACTS, ids=[c[0] for c in CONTRACTS])
def test_contract(source, forbidden, why):
    broken = violations(source, forbidden)
    assert not broken, f"{why}:\n" + "\n".join(broken)


def test_a_forbidden_import_is_caught(tmp_path):
    """The checker itself: a lazy import of training inside a service function is found."""
    package = tmp_path / "service"
    package.mkdir()
    (package / "handler.py").write_text("def f():\n    from training.tasks import ner\n    import torch.nn\n")
    assert violations("service", {"training", "torch"}, root=tmp_path) == [
        "service/handler.py:2 imports training",
        "service/handler.py:3 imports torch",
    ]

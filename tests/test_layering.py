"""Import rules between the package's layers, read from the source (ast), so a violation fails here
whether or not the import runs: models/ is below generation/ and grpo/, generation/ is below grpo/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "paddlemix_r1"

FORBIDDEN = {
    "models": ("paddlemix_r1.generation", "paddlemix_r1.grpo"),
    "generation": ("paddlemix_r1.grpo",),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, lazy ones inside functions included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # "from paddlemix_r1 import grpo" names the subpackage in the alias
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def violations(layer: str) -> list[str]:
    """One "file:line imports module" per import statement of ``layer`` that reaches a layer above it."""
    bad: dict[str, str] = {}
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for line, module in imported_modules(path):
            if any(module == p or module.startswith(p + ".") for p in FORBIDDEN[layer]):
                bad.setdefault(f"{path.relative_to(PACKAGE.parent)}:{line}", module)
    return [f"{where} imports {module}" for where, module in bad.items()]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_from_above(layer):
    assert violations(layer) == []


def test_the_check_sees_a_forbidden_import(tmp_path, monkeypatch):
    """The rule fails on a file that breaks it: absolute, lazy and relative forms."""
    fake = tmp_path / "paddlemix_r1"
    (fake / "models").mkdir(parents=True)
    (fake / "models" / "bad.py").write_text(
        "from paddlemix_r1.grpo.logprobs import completion_logprobs\n"
        "def f():\n    import paddlemix_r1.generation.engine\n"
        "from ..grpo import trainer\n"
        "from paddlemix_r1 import grpo\n", encoding="utf-8")
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    lines = sorted(int(v.split(":")[1].split()[0]) for v in violations("models"))
    assert lines == [1, 3, 4, 5]

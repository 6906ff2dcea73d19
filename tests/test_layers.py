"""The import graph runs one way: gateway -> adapters -> mappings, read from the source with `ast`."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What each layer must never import, TYPE_CHECKING blocks and imports inside functions included.
FORBIDDEN = {
    "adapters": ("gateway",),
    "mappings": ("gateway", "adapters"),
}


def imported_modules(root: Path, path: Path) -> list[tuple[int, str]]:
    """Every module a file imports (absolute names, relative ones resolved), with its line number."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append((node.lineno, ".".join([*base, node.module or ""]).rstrip(".")))
            else:
                found.append((node.lineno, node.module or ""))
    return sorted(found)


def violations(root: Path, layer: str) -> list[str]:
    """`file:line imports module` for each import that runs against the layer order."""
    bad: list[str] = []
    for path in sorted((root / layer).rglob("*.py")):
        for line, module in imported_modules(root, path):
            if module.split(".")[0] in FORBIDDEN[layer]:
                bad.append(f"{path.relative_to(root)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer: str) -> None:
    assert violations(ROOT, layer) == []


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    (tmp_path / "adapters" / "portal").mkdir(parents=True)
    probe = tmp_path / "adapters" / "portal" / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gateway.config import X\n"
                     "def f():\n    import gateway.logs\nfrom . import http\nfrom ..mllp import Frame\n",
                     encoding="utf-8")
    assert violations(tmp_path, "adapters") == ["adapters/portal/probe.py:3 imports gateway.config",
                                                "adapters/portal/probe.py:5 imports gateway.logs"]
    assert imported_modules(tmp_path, probe)[-2:] == [(6, "adapters.portal"), (7, "adapters.mllp")]

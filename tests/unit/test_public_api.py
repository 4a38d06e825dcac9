"""The public API: what `counter_service` exports, documents, and what its users import."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import counter_service

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
# Code that must build on the public API alone (design.md: ui/ and examples/).
PUBLIC_ONLY = [*sorted((ROOT / "ui").glob("*.py")), *sorted((ROOT / "examples").rglob("*.py"))]


@pytest.mark.parametrize("name", counter_service.__all__)
def test_every_exported_name_exists_and_is_documented_in_the_readme(name: str) -> None:
    exported = getattr(counter_service, name)
    assert f"`{name}" in README, f"{name} is exported but the README does not mention it"
    if inspect.isclass(exported) or inspect.isfunction(exported):
        assert inspect.getdoc(exported), f"{name} has no docstring"


def test_the_package_exports_nothing_beyond_all() -> None:
    public = {n for n in vars(counter_service) if not n.startswith("_")}
    modules = {n for n in public if inspect.ismodule(getattr(counter_service, n))}
    assert public - modules == set(counter_service.__all__)


def _imports_of(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
    return modules


@pytest.mark.parametrize("path", PUBLIC_ONLY, ids=lambda p: str(p.relative_to(ROOT)))
def test_ui_and_examples_import_only_the_public_api(path: Path) -> None:
    private = [m for m in _imports_of(path) if m.startswith("counter_service.")]
    assert private == [], f"{path.name} imports library internals: {private}"

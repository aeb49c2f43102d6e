"""The shape of the house: layers and acyclic packages (import-linter), module and function sizes.

These run with every `make test`, so CI fails when a lower layer starts importing a higher one,
when two modules import each other, or when a module or function outgrows the house style.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "varloss"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
# A function may exceed MAX_FUNCTION_LINES where a straight loop reads better than pieces,
# when its body says so in a comment containing this phrase.
LONG_FUNCTION_MARK = "reads straight through"


def test_import_linter_contracts_are_kept() -> None:
    # lint-imports as a process: it reads the contracts from pyproject.toml, like `make lint`.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


def _modules() -> list[Path]:
    return sorted(SOURCE.rglob("*.py"))


def test_no_module_is_longer_than_the_house_style() -> None:
    sizes = {path: len(path.read_text().splitlines()) for path in _modules()}
    too_long = {str(p.relative_to(ROOT)): n for p, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def _long_functions(path: Path) -> dict[str, int]:
    """Functions of `path` over the limit without the mark, with their lengths in lines."""
    text = path.read_text()
    lines = text.splitlines()
    found = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            body = "\n".join(lines[node.lineno - 1 : node.end_lineno])
            if length > MAX_FUNCTION_LINES and LONG_FUNCTION_MARK not in body:
                found[node.name] = length
    return found


def test_no_function_is_longer_than_the_house_style() -> None:
    too_long = {
        f"{path.relative_to(ROOT)}:{name}": length
        for path in _modules()
        for name, length in _long_functions(path).items()
    }
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


def test_the_size_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    long_one = tmp_path / "long.py"
    long_one.write_text(f"def long():\n{body}\n")
    assert _long_functions(long_one) == {"long": MAX_FUNCTION_LINES + 2}
    marked = tmp_path / "marked.py"
    marked.write_text(f"def marked():\n    # The loop {LONG_FUNCTION_MARK}.\n{body}\n")
    assert _long_functions(marked) == {}


def _imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_pages_read_records_and_never_import_a_pipeline() -> None:
    """The report renders what the pipelines wrote (varloss.records), never recomputes it: no
    module of varloss.report imports varloss.pipelines, and import-linter says so too."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in modules if m.startswith("varloss.pipelines"))
        for path in sorted((SOURCE / "report").rglob("*.py"))
        for modules in [_imported_modules(path)]
        if any(m.startswith("varloss.pipelines") for m in modules)
    }
    assert not offenders, f"report modules importing a pipeline: {offenders}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'source_modules = ["varloss.report"]' in pyproject
    assert 'forbidden_modules = ["varloss.pipelines"]' in pyproject
    # and the study page reads the per-family table from the records instead of computing it
    assert "varloss.records" in _imported_modules(SOURCE / "report" / "pages" / "study.py")

"""House rules for globe/, checked on the source (ast, no imports): modules of at most 600 lines (a package's
`__init__.py` aside), functions of at most 80, each public name defined in one module. (No import cycles:
tests/test_pipeline.py::test_no_import_cycles.)"""

from __future__ import annotations

import ast
import functools
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "globe"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
_CONSTANT = re.compile(r"[A-Z][A-Z0-9_]+")  # UPPER_CASE, two characters or more (a lone `T` is a type variable)


@functools.cache
def _sources() -> dict[str, tuple[str, ast.Module]]:
    """Each module of globe/ (relative path -> (text, syntax tree)), parsed once for every test here."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        out[path.relative_to(ROOT).as_posix()] = (text, ast.parse(text, filename=str(path)))
    return out


def _public_names(tree: ast.Module) -> list[str]:
    """The public functions, classes and UPPER_CASE constants a module defines at its top level (inside a top-level
    `if` / `try` too)."""
    names: list[str] = []
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            stack = list(targets)
            while stack:
                t = stack.pop()
                if isinstance(t, (ast.Tuple, ast.List)):
                    stack += t.elts
                elif isinstance(t, ast.Starred):
                    stack.append(t.value)
                elif isinstance(t, ast.Name) and _CONSTANT.fullmatch(t.id):
                    names.append(t.id)
        elif isinstance(node, ast.If):
            todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody + [n for h in node.handlers for n in h.body]
    return [n for n in names if not n.startswith("_")]


def test_modules_are_at_most_600_lines():
    long = [f"{path}: {len(text.splitlines())} lines" for path, (text, _) in _sources().items()
            if not path.endswith("/__init__.py") and len(text.splitlines()) > MAX_MODULE_LINES]
    assert not long, f"modules over the {MAX_MODULE_LINES}-line limit (split them along a seam): {long}"


def test_functions_are_at_most_80_lines():
    long = []
    for path, (_, tree) in _sources().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"functions over the {MAX_FUNCTION_LINES}-line limit (break them into helpers): {long}"


def test_each_public_name_is_defined_in_one_module():
    """A package's `__init__.py` may re-export its parts' names; modules define each public name once."""
    where: dict[str, list[str]] = defaultdict(list)
    for path, (_, tree) in _sources().items():
        if not path.endswith("/__init__.py"):
            for name in _public_names(tree):
                where[name].append(path)
    dups = {name: paths for name, paths in sorted(where.items()) if len(paths) > 1}
    assert not dups, f"public names defined in more than one module (at most one each; rename one): {dups}"


def test_the_rules_see_a_violation():
    """The checks above can fail: a long function, a guarded definition and destructured constants are seen."""
    source = "X_Y = 1\nif True:\n    def f():\n" + "        pass\n" * 90 + "_P = 2\nT = 3\nA, (B_C, *D_E) = 1, (2, 3)\n"
    tree = ast.parse(source)
    assert sorted(_public_names(tree)) == ["B_C", "D_E", "X_Y", "f"]
    f = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    assert f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES
    assert {"globe/cli.py", "globe/config/__init__.py"} <= set(_sources())

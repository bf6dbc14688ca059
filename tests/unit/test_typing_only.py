"""Names imported for mypy only are never used at run time.

The library imports :mod:`typing` (and aliases built from it) under ``TYPE_CHECKING = False`` /
``if TYPE_CHECKING:`` so that no program pays for it at start-up (tests/programs/
test_startup_imports.py). ``from __future__ import annotations`` keeps annotations as strings, so
such a name may appear in annotations only: anywhere else (a type alias at module level, a
``cast``, an ``isinstance``, a default value) it is a NameError when that line runs, which mypy
cannot see (for mypy the block is always taken). This reads every module's AST and lists each
such use, module-level and inside functions alike.
"""

from __future__ import annotations

import ast
import pathlib
from typing import FrozenSet, Iterator, List, Set, Tuple

import s6ipc

ROOT = pathlib.Path(s6ipc.__file__).parent


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _typing_only_names(tree: ast.Module) -> Set[str]:
    names: Set[str] = set()
    for node in tree.body:
        if _is_type_checking(node):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    names.update((a.asname or a.name).split(".")[0] for a in inner.names)
                elif isinstance(inner, ast.Assign):
                    names.update(t.id for t in inner.targets if isinstance(t, ast.Name))
    return names


def _imported_in(body: List[ast.stmt]) -> Set[str]:
    """Names a function imports itself (``import ctypes`` inside it): real at run time there."""
    return {(a.asname or a.name).split(".")[0] for stmt in body for node in ast.walk(stmt)
            if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}


Visit = Iterator[Tuple[ast.AST, FrozenSet[str]]]


def _runtime_nodes(node: ast.AST, local: FrozenSet[str] = frozenset()) -> Visit:
    """Every node Python evaluates (not annotations, not TYPE_CHECKING blocks), with the names
    the enclosing functions import themselves."""
    if isinstance(node, ast.stmt) and _is_type_checking(node):
        return
    if isinstance(node, ast.AnnAssign):
        yield from _runtime_nodes(node.target, local)
        if node.value is not None:
            yield from _runtime_nodes(node.value, local)
        return
    if isinstance(node, ast.arg):
        return
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        inner = local | _imported_in(node.body)
        for child in node.decorator_list + node.args.defaults + [d for d in node.args.kw_defaults if d]:
            yield from _runtime_nodes(child, local)
        for child in node.body:
            yield from _runtime_nodes(child, inner)
        return
    yield node, local
    for child in ast.iter_child_nodes(node):
        yield from _runtime_nodes(child, local)


def typing_only_used_at_run_time() -> List[Tuple[str, int, str]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = _typing_only_names(tree)
        if not names:
            continue
        for node, local in _runtime_nodes(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in names - local:
                found.append((path.relative_to(ROOT).as_posix(), node.lineno, node.id))
    return found


def test_names_for_mypy_only_are_not_used_at_run_time() -> None:
    assert typing_only_used_at_run_time() == []


def test_the_check_sees_a_module_level_alias_and_a_cast() -> None:
    tree = ast.parse("TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from typing import Callable, cast\n"
                     "Hook = Callable[[], None]\ndef f(x: Callable) -> None:\n    return cast(int, x)\n")
    names = _typing_only_names(tree)
    used = sorted(n.id for n, local in _runtime_nodes(tree)
                  if isinstance(n, ast.Name) and n.id in names - local)
    assert used == ["Callable", "cast"]  # the annotation's Callable is not counted
    tree = ast.parse("TYPE_CHECKING = False\nif TYPE_CHECKING:\n    import ctypes\n"
                     "def f() -> None:\n    import ctypes\n    ctypes.CDLL(None)\n")
    assert [n for n, local in _runtime_nodes(tree) if isinstance(n, ast.Name) and n.id not in local
            and n.id in _typing_only_names(tree)] == []  # a function that imports it itself

"""tests/unit mirrors the library: every module with logic has its unit tests at the mirrored path.

``src/s6ipc/PACKAGE/MODULE.py`` is tested in ``tests/unit/PACKAGE/test_MODULE.py`` (more files for
the same module are welcome: ``test_MODULE_*.py`` next to it). Checked on the source tree, nothing
imported. Not mirrored, each for its reason:

* ``programs/`` — each program is run as a program (tests/programs, against s6's binaries);
* ``cli.py`` and ``__main__.py`` — the multi-call entry point, run the same way;
* ``__init__.py`` of the top package — the Python API surface, which tests/unit/test_public_api.py
  checks name by name;
* the top-level compatibility modules (``s6ipc.intake``, ``s6ipc.errors``, …) and package
  ``__init__``\\ s without code: they only re-export or forward (:func:`has_code` says which). One that
  gains a function, a class or a statement with logic needs its test file like any module.

Run as ``python -m tests.unit.test_mirror`` to list what is missing.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import List

import s6ipc

SRC = Path(s6ipc.__file__).resolve().parent
UNIT = Path(__file__).resolve().parent

#: Paths (relative to src/s6ipc) never mirrored, with the folder of programs as a whole.
EXEMPT_FILES = {"cli.py", "__main__.py", "__init__.py"}
EXEMPT_FOLDERS = {"programs"}


def _only_forwarding(node: ast.stmt) -> bool:
    """Statements that hold no logic: the docstring, imports, ``__all__``/``TYPE_CHECKING`` and
    ``__getattr__ = forward_to(…)`` assignments, ``if TYPE_CHECKING:`` blocks of imports."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return True
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return isinstance(node.value.value, str)
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = {t.id for t in targets if isinstance(t, ast.Name)}
        if names and names <= {"__all__", "TYPE_CHECKING"}:
            return True
        value = node.value
        return (names == {"__getattr__"} and isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id == "forward_to")
    if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
        return all(_only_forwarding(n) for n in node.body + node.orelse)
    return False


def has_code(path: Path) -> bool:
    """Whether the module at *path* holds anything but re-exports and forwarding."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return not all(_only_forwarding(node) for node in tree.body)


def library_modules() -> List[Path]:
    """The modules that must have a mirrored test file (paths relative to src/s6ipc)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] in EXEMPT_FOLDERS or "__pycache__" in rel.parts:
            continue
        if len(rel.parts) == 1 and rel.name in EXEMPT_FILES:
            continue
        if (len(rel.parts) == 1 or rel.name == "__init__.py") and not has_code(path):
            continue  # a top-level compatibility module or a package __init__ that only forwards
        found.append(rel)
    return found


def mirrored_test(rel: Path) -> Path:
    """``PACKAGE/MODULE.py`` → ``tests/unit/PACKAGE/test_MODULE.py``."""
    return UNIT.joinpath(*rel.parts[:-1], f"test_{rel.stem}.py")


def missing() -> List[str]:
    return [f"src/s6ipc/{rel} → {mirrored_test(rel).relative_to(UNIT.parent.parent)}"
            for rel in library_modules() if not mirrored_test(rel).is_file()]


def test_every_library_module_has_its_mirrored_test_file() -> None:
    gaps = missing()
    assert not gaps, "library modules without unit tests at the mirrored path:\n" + "\n".join(gaps)


def test_the_rule_sees_the_library() -> None:
    modules = {str(rel) for rel in library_modules()}
    # a sample of each kind of thing the rule must keep, and must leave out
    assert {"base/errors.py", "sockets/unix.py", "chain/run.py", "integrations/uvicorn_drain.py"} <= modules
    assert not any(m.startswith("programs/") for m in modules)
    assert not {"cli.py", "__main__.py", "__init__.py", "intake.py", "activation.py"} & modules
    assert "sockets/__init__.py" not in modules   # docstring, import, __getattr__ = forward_to(…)


def test_the_package_folders_are_packages_here_too() -> None:
    for rel in library_modules():
        folder = mirrored_test(rel).parent
        if folder != UNIT:
            assert (folder / "__init__.py").is_file(), f"{folder} has no __init__.py"


def test_has_code_tells_forwarding_from_logic(tmp_path: Path) -> None:
    cases = {
        '"""doc"""\nfrom .x import *  # noqa\n': False,
        'from ..base.lazy import forward_to\n__getattr__ = forward_to(f"{__name__}.unix")\n': False,
        'TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from typing import Any\n__all__ = ["a"]\n': False,
        "def f() -> None:\n    pass\n": True,
        "class C:\n    pass\n": True,
        "X = 1\n": True,
        "if True:\n    import os\n": True,
        "__getattr__ = make(1)\n": True,
    }
    for i, (text, expected) in enumerate(cases.items()):
        path = tmp_path / f"m{i}.py"
        path.write_text(text)
        assert has_code(path) is expected, text


if __name__ == "__main__":
    print("\n".join(missing()) or "the mirror is whole")

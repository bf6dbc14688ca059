"""The public surface: ``s6ipc.NAME``, each library module's ``__all__``, the documented module paths.

- Every library module (all of ``src/s6ipc`` but the programs, ``cli``, ``__main__``, the
  compatibility modules and the package ``__init__``s that only document) has ``__all__``, right
  after its imports; every entry exists, none is private, and a name another module imports from it
  is in it (``__all__`` says what the module is for; what others use of it is part of that).
- The lazy map :data:`s6ipc._API` names, for each ``s6ipc.NAME``, a module whose ``__all__`` has it.
- The module paths the docs use (docs/python-api.md, docs/listen-fds.md, docs/uvicorn.md,
  docs/tcpserver-access.md, docs/ipcserver-access.md) still give the names the docs take from
  them: the compatibility modules re-export with ``import *``, so that is their target's ``__all__``.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

import s6ipc

SRC = Path(s6ipc.__file__).resolve().parent
DOCS = SRC.parent.parent / "docs"
SHIMS = ("intake", "readiness", "activation", "inet", "errors", "tcpaccess", "handoff", "uvicorn_drain")

#: What the docs take from each documented module path (a name per use; see the docs named above).
DOCUMENTED: Dict[str, Tuple[str, ...]] = {
    "s6ipc.intake": ("SOURCE_ORDER", "take_listener", "listening_socket"),
    "s6ipc.activation": ("PassedFd", "listen_fds", "select_listener", "adopt_systemd_socket"),
    "s6ipc.readiness": ("Notifier", "Readiness", "notify_ready", "watchdog_interval"),
    "s6ipc.errors": ("S6ipcError", "BadInput", "SystemFailure", "ExecFailure", "Unusable", "Refused"),
    "s6ipc.sockets": ("UNIX_FAMILIES", "IP_FAMILIES", "ANY_FAMILIES", "bind_unix_socket", "connect_unix",
                      "peer_credentials", "check_listening_stream"),
    "s6ipc.inet": ("parse_ip", "ip_fmt", "from_sockaddr"),
    "s6ipc.access": ("evaluate", "RulesSource", "parse_options"),
    "s6ipc.tcpaccess": ("evaluate", "SocketConnection", "parse_options", "FastTcpAccess"),
    "s6ipc.handoff": ("SCHEMES", "spawn_with_sockets", "append_sockets", "set_listen_pid", "check_fdname",
                      "daemon_variables"),
    "s6ipc.uvicorn_drain": ("DrainingServer",),
}


def library_files() -> List[Tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if len(parts) == 1 or parts[0] == "programs":
            continue  # the top (s6ipc/__init__ has its own __all__, the shims none), the programs
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(("s6ipc." + ".".join(parts), path))
    return out


def declared_all(path: Path) -> Tuple[List[str], ast.Module]:
    """The module's one ``__all__`` (a second assignment would silently replace the first: refused)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = [node for node in tree.body if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign))
             and any(isinstance(t, ast.Name) and t.id == "__all__"
                     for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))]
    assert len(found) <= 1, f"{path}: __all__ assigned {len(found)} times (lines {[n.lineno for n in found]})"
    if not found:
        return [], tree
    value = ast.literal_eval(found[0].value) if found[0].value is not None else None
    assert isinstance(value, list), f"{path}: __all__ is a list"
    return value, tree


def public_definitions(tree: ast.Module) -> Set[str]:
    names: Set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_")}


LIBRARY = library_files()


@pytest.mark.parametrize("name,path", LIBRARY, ids=[n for n, _ in LIBRARY])
def test_every_library_module_has_an_all_of_existing_public_names(name: str, path: Path) -> None:
    listed, tree = declared_all(path)
    if not listed:
        defined = public_definitions(tree)
        assert not defined, f"{name} defines {sorted(defined)} but has no __all__"
        return
    assert len(listed) == len(set(listed)), f"{name}: __all__ lists a name twice"
    assert not [n for n in listed if n.startswith("_")], f"{name}: private names in __all__"
    module = importlib.import_module(name)
    missing = [n for n in listed if not hasattr(module, n)]
    assert missing == [], f"{name}: __all__ names what the module lacks: {missing}"
    # right after the imports: nothing but the docstring and imports stands before it
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                for t in node.targets):
            break
        doc = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        # ``TYPE_CHECKING = False`` / ``if TYPE_CHECKING:`` imports typing's names for mypy only
        flag = isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["TYPE_CHECKING"]
        assert doc or flag or isinstance(node, (ast.Import, ast.ImportFrom, ast.If, ast.Try)), (
            f"{name}:{node.lineno}: __all__ goes right after the imports"
        )


def _imports_between_modules() -> List[Tuple[str, str, str]]:
    """(importer, module, name) for every ``from s6ipc.M import name`` (or relative) in src/s6ipc
    that runs: not those under ``if TYPE_CHECKING:`` (mypy's aliases are no public names)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        importer = "s6ipc." + ".".join(parts)
        package = ["s6ipc", *parts[:-1]]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for_mypy = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                    and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                    for inner in ast.walk(node)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or id(node) in for_mypy:
                continue
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("s6ipc"):
                found.extend((importer, module, a.name) for a in node.names if a.name != "*")
    return found


def test_names_other_modules_import_are_in_the_all_of_their_module() -> None:
    alls = {name: declared_all(path)[0] for name, path in LIBRARY}
    modules = {name for name, _ in LIBRARY}
    out = []
    for importer, module, name in _imports_between_modules():
        if module not in alls or f"{module}.{name}" in modules or importer == module:
            continue  # the top, a shim, a program; or a submodule taken from its package
        if not name.startswith("_") and name not in alls[module]:
            out.append(f"{importer} takes {name} from {module}, whose __all__ lacks it")
    assert out == [], "\n".join(sorted(set(out)))


def test_the_lazy_api_map_is_within_the_modules_all() -> None:
    alls = {name: declared_all(path)[0] for name, path in LIBRARY}
    out = []
    for name, module in s6ipc._API.items():
        listed = alls.get(f"s6ipc.{module}")
        if listed is None:
            out.append(f"s6ipc.{name} → s6ipc.{module}, which is not a library module")
        elif name not in listed:
            out.append(f"s6ipc.{name} → s6ipc.{module}, whose __all__ lacks it")
    assert out == [], "\n".join(out)
    assert set(s6ipc.__all__) == set(s6ipc._API) | {"__version__"}
    for name in s6ipc._API:
        assert getattr(s6ipc, name) is not None


@pytest.mark.parametrize("path", sorted(DOCUMENTED))
def test_documented_module_paths_give_what_the_docs_use(path: str) -> None:
    module = importlib.import_module(path)
    missing = [n for n in DOCUMENTED[path] if not hasattr(module, n)]
    assert missing == [], f"{path} no longer gives {missing}"
    star: Dict[str, object] = {}
    exec(f"from {path} import *", star)  # noqa: S102 - what `import *` gives is the point here
    if path.split(".")[1] in SHIMS:
        lost = [n for n in DOCUMENTED[path] if n not in star]
        assert lost == [], f"from {path} import * no longer gives {lost}"


def test_the_docs_use_no_other_name_of_a_documented_path() -> None:
    """Every ``s6ipc.PATH.NAME`` / ``from s6ipc.PATH import NAME`` in the docs is in DOCUMENTED."""
    paths = "|".join(SHIMS + ("sockets", "access"))
    pattern = re.compile(r"\bs6ipc\.(" + paths + r")\.([A-Za-z_]\w*)")
    from_pattern = re.compile(r"from s6ipc\.(" + paths + r") import ([\w, ]+)")
    used: Set[Tuple[str, str]] = set()
    for doc in sorted(DOCS.glob("*.md")):
        if doc.name == "architecture.md":
            continue  # it draws the modules themselves, not the compatibility paths
        text = doc.read_text(encoding="utf-8")
        used.update(pattern.findall(text))
        for path, names in from_pattern.findall(text):
            used.update((path, n.strip()) for n in names.split(",") if n.strip())
    submodules = {n.split(".")[-1] for n, _ in LIBRARY}
    unknown = sorted(f"s6ipc.{p}.{n}" for p, n in used
                     if n not in DOCUMENTED[f"s6ipc.{p}"] and n not in submodules)
    assert unknown == [], f"names the docs use that DOCUMENTED does not check: {unknown}"


# --- putting __all__ back after a merge ---------------------------------------------------------
#
# ``python -m tests.unit.test_public_api --reconcile`` brings every library module's ``__all__`` in
# line with its code: entries naming what the module no longer binds go, public definitions
# (classes, functions, assignments; not what it imports, not TypeVars or loggers) not yet listed
# are added in file order, and a module that defines public names and has no ``__all__`` gets one
# right after its imports. Where a merge conflicts only on ``__all__`` lines, take the other side
# and run this; then prune by hand what no user or other package needs (the tests above say what
# must stay).


def _leading_block_end(tree: ast.Module) -> int:
    """The last line of the docstring, the imports and ``TYPE_CHECKING`` blocks at the top."""
    end = 0
    for node in tree.body:
        doc = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        flag = isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["TYPE_CHECKING"]
        imports = isinstance(node, (ast.If, ast.Try)) and all(
            isinstance(n, (ast.Import, ast.ImportFrom, ast.Pass)) for n in ast.walk(node)
            if isinstance(n, ast.stmt) and n is not node
        )
        if not (doc or flag or imports or isinstance(node, (ast.Import, ast.ImportFrom))):
            break
        end = node.end_lineno or node.lineno
    return end


def _public_in_order(tree: ast.Module) -> List[str]:
    names: List[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found = [node.name]
        elif isinstance(node, ast.Assign):
            value = node.value
            if isinstance(value, ast.Call) and ast.unparse(value.func) in ("TypeVar", "logging.getLogger"):
                continue  # a type variable, a module's logger: not API
            found = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found = [node.target.id]
        else:
            continue
        names.extend(n for n in found if not n.startswith("_") and n != "TYPE_CHECKING" and n not in names)
    return names


def _bound(tree: ast.Module) -> Set[str]:
    """Every name the module binds at its top level, in if/try blocks too (imports included)."""
    names: Set[str] = set()

    def scan(body: List[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.If):
                scan(node.body)
                scan(node.orelse)
            elif isinstance(node, ast.Try):
                scan(node.body)
                scan(node.orelse)
                scan(node.finalbody)
                for handler in node.handlers:
                    scan(handler.body)

    scan(tree.body)
    return names


def _format_all(names: List[str]) -> str:
    one = "__all__ = [" + ", ".join(f'"{n}"' for n in names) + "]"
    if len(one) <= 110:
        return one + "\n"
    lines, line = [], "   "
    for name in names:
        item = f' "{name}",'
        if len(line) + len(item) > 110:
            lines.append(line)
            line = "   "
        line += item
    return "__all__ = [\n" + "\n".join([*lines, line]) + "\n]\n"


def reconcile_all() -> List[str]:
    """Rewrite the ``__all__`` of every library module that is out of line; their names."""
    changed = []
    for name, path in LIBRARY:
        listed, tree = declared_all(path)
        bound = _bound(tree)
        wanted = [n for n in listed if n in bound]
        wanted += [n for n in _public_in_order(tree) if n not in wanted]
        if wanted == listed or not wanted:
            continue
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        node = next((n for n in tree.body if isinstance(n, ast.Assign)
                     and [ast.unparse(t) for t in n.targets] == ["__all__"]), None)
        if node is not None:
            lines[node.lineno - 1:node.end_lineno] = [_format_all(wanted)]
        else:
            end = _leading_block_end(tree)
            lines[end:end] = ["\n", _format_all(wanted)]
        path.write_text("".join(lines), encoding="utf-8")
        changed.append(name)
    return changed


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--reconcile"]:
        sys.exit("usage: python -m tests.unit.test_public_api --reconcile")
    for name in reconcile_all():
        print(f"{name}: __all__ rewritten")

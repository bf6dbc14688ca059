"""The library's layering, checked on the source (the AST: nothing of s6ipc is imported here).

The packages of ``src/s6ipc`` stand in layers, lowest first::

    base < sockets < {access, daemon} < fdholder < serve < integrations < chain < programs < top

where ``top`` is ``cli``, ``__main__`` and the package's own ``__init__``. A module may import —
at the top of the file or inside a function, absolutely or relatively — only from its own package
or from a lower layer; two packages on the same layer never import each other. Beyond that:

- ``base/`` imports nothing of s6ipc but ``base/``, and only the standard library besides (an
  optional extra, ``systemd.daemon``, is imported inside ``try: … except ImportError``, on first use);
- no module of ``programs/`` imports another module of ``programs/`` (a program that needs another
  program's code needs it moved into the kit, ``chain/``);
- nothing below ``chain/`` calls ``os.exec*``, ``os._exit``, ``sys.exit`` or ``print``: the
  library returns (an ``Ending``, an error) and the program kit execs, exits and prints. The
  primitives the kit ends with are defined in ``base/`` (``execution.exec_argv``,
  ``Reporter.fatal``); below ``chain/`` nobody calls them (:data:`PRIMITIVES`).

The one thing the library takes from the top package is ``__version__`` (that ``__init__`` imports
nothing when loaded).

The top-level compatibility modules (``s6ipc.intake``, ``s6ipc.errors``, …) only re-export a module
that moved; they stand outside the layers.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import s6ipc

SRC = Path(s6ipc.__file__).resolve().parent

LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("base",),
    ("sockets",),
    ("access", "daemon"),
    ("fdholder",),
    ("serve",),
    ("integrations",),
    ("chain",),
    ("programs",),
    ("top",),
)
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}

# the one-line re-exports of module paths that moved (kept for a release); outside the layers
SHIMS = frozenset(
    {"intake", "readiness", "activation", "inet", "errors", "tcpaccess", "handoff", "uvicorn_drain"}
)
TOP_MODULES = frozenset({"__init__", "__main__", "cli"})

# what the library may take from the top package: constants of an __init__ that imports nothing
# when loaded (its API is lazy), so taking them drags nothing upward
TOP_CONSTANTS = frozenset({"s6ipc.__version__"})

# the layer from which a module may exec, exit or print (the program kit and above)
MAY_END = LAYER_OF["chain"]

# Python 3.9 has no sys.stdlib_module_names: the standard modules base/ may import there (base/
# needs few; a module missing here fails the test on 3.9 only, with its name)
_STDLIB_39 = frozenset([
    "__future__", "_signal", "_socket", "abc", "argparse", "array", "ast", "base64", "binascii", "bisect",
    "builtins",
    "calendar", "codecs", "collections", "contextlib", "copy", "ctypes", "dataclasses", "datetime",
    "enum", "errno", "fcntl", "functools", "gc", "getpass", "grp", "hashlib", "heapq", "importlib",
    "inspect", "io", "ipaddress", "itertools", "json", "locale", "logging", "math", "mmap", "operator",
    "os", "pathlib", "platform", "pwd", "random", "re", "resource", "select", "selectors", "shlex",
    "shutil", "signal", "socket", "stat", "string", "struct", "subprocess", "sys", "sysconfig", "tempfile",
    "textwrap", "threading", "time", "traceback", "types", "typing", "unicodedata", "warnings",
    "weakref",
])
STDLIB = frozenset(getattr(sys, "stdlib_module_names", _STDLIB_39))


@dataclass(frozen=True)
class Module:
    name: str  # dotted, without the leading "s6ipc."
    package: str  # its layer's package name, or "top" / "shim"
    path: Path

    @property
    def is_package_init(self) -> bool:
        return self.path.name == "__init__.py"


@dataclass(frozen=True)
class Import:
    target: str  # dotted, absolute ("s6ipc.base.errors", "os", …)
    line: int
    from_package: bool = False  # the package of a ``from PACKAGE import name`` (names follow)
    optional: bool = False  # inside ``try: … except ImportError`` (an optional extra)


def modules(root: Path = SRC) -> List[Module]:
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        package = ("shim" if parts[0] in SHIMS else "top") if len(parts) == 1 else parts[0]
        found.append(Module(".".join(parts), package, path))
    return found


def _catches_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError") for k in kinds):
            return True
    return False


def imports_of(module: Module) -> Iterator[Import]:
    """Every import statement of the module, wherever it stands, with its target made absolute.

    ``from . import x`` yields the package and the package's ``x`` (which may be a submodule)."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    # relative imports start from the module's package (an __init__'s own, a module's parent)
    here = ["s6ipc", *module.name.split(".")][:-1]

    def visit(node: ast.AST, optional: bool) -> Iterator[Import]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno, optional=optional)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield Import(target, node.lineno, from_package=True, optional=optional)
            for alias in node.names:
                if alias.name != "*":
                    yield Import(f"{target}.{alias.name}", node.lineno, optional=optional)
        if isinstance(node, ast.Try) and _catches_import_error(node):
            for child in node.body:
                yield from visit(child, True)
            for part in (node.handlers, node.orelse, node.finalbody):
                for child in part:
                    yield from visit(child, optional)
            return
        for child in ast.iter_child_nodes(node):
            yield from visit(child, optional)

    yield from visit(tree, False)


def package_of(target: str) -> Optional[str]:
    """The layer package of an absolute s6ipc module name; None outside s6ipc."""
    parts = target.split(".")
    if parts[0] != "s6ipc":
        return None
    if len(parts) == 1:
        return "top"
    if parts[1] in LAYER_OF:
        return parts[1]
    if parts[1] in SHIMS:
        return "shim"
    if parts[1] in TOP_MODULES:
        return "top"
    # s6ipc.NAME where NAME is something the top package answers lazily (s6ipc.Server)
    return "top"


def _one_per_statement(found: List[Tuple[Module, Import, str]]) -> List[str]:
    """One line per import statement (``from .x import a, b`` names x, not x.a and x.b)."""
    best = {}
    for module, imp, why in found:
        key = (module.name, imp.line)
        if key not in best or len(imp.target) < len(best[key][0]):
            best[key] = (imp.target, why)
    return sorted(f"s6ipc.{name}:{line} → {target} ({why})" for (name, line), (target, why) in best.items())


def layer_violations(root: Path = SRC) -> List[str]:
    out: List[Tuple[Module, Import, str]] = []
    for module in modules(root):
        if module.package == "shim":
            continue
        own = LAYER_OF[module.package]
        for imp in imports_of(module):
            target_package = package_of(imp.target)
            if target_package is None or target_package == module.package:
                continue
            if imp.target in TOP_CONSTANTS or (imp.target == "s6ipc" and imp.from_package):
                continue  # ``from .. import __version__``: a constant of a package that imports nothing
            if target_package == "shim":
                out.append((module, imp, f"layer {module.package} → a compatibility shim"))
            elif LAYER_OF[target_package] >= own:
                out.append((module, imp, f"layer {module.package} → layer {target_package}"))
    return _one_per_statement(out)


def test_every_module_belongs_to_a_layer_or_is_a_known_shim() -> None:
    strays = [
        m.name
        for m in modules()
        if m.package not in LAYER_OF and m.package != "shim"
    ]
    assert strays == [], "modules outside the layers (give each a package): " + ", ".join(strays)
    for name in SHIMS:
        assert (SRC / f"{name}.py").is_file(), f"the compatibility module s6ipc.{name} is gone"


def test_shims_only_reexport() -> None:
    for module in modules():
        if module.package != "shim":
            continue
        tree = ast.parse(module.path.read_text(encoding="utf-8"))
        body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert len(body) == 1 and isinstance(body[0], ast.ImportFrom), (
            f"s6ipc.{module.name} should be one `from .NEW import *` line"
        )
        assert [a.name for a in body[0].names] == ["*"], f"s6ipc.{module.name} re-exports by name"


def test_imports_point_down() -> None:
    violations = layer_violations()
    assert violations == [], "imports that do not point down:\n" + "\n".join(violations)


def test_base_imports_only_the_standard_library() -> None:
    out: List[Tuple[Module, Import, str]] = []
    for module in modules():
        if module.package != "base":
            continue
        for imp in imports_of(module):
            top = imp.target.split(".")[0]
            if top == "s6ipc":
                if package_of(imp.target) != "base" and imp.target not in TOP_CONSTANTS:
                    out.append((module, imp, "layer base → outside base"))
            elif top not in STDLIB and not imp.optional:
                out.append((module, imp, "layer base → not the standard library"))
    found = _one_per_statement(out)
    assert found == [], "base/ imports beyond the standard library:\n" + "\n".join(found)


def test_no_program_imports_another_program() -> None:
    out: List[Tuple[Module, Import, str]] = []
    for module in modules():
        if module.package != "programs" or module.is_package_init:
            continue
        for imp in imports_of(module):
            parts = imp.target.split(".")
            own = module.name.split(".")[1]
            if parts[:2] == ["s6ipc", "programs"] and len(parts) >= 3 and parts[2] != own:
                out.append((module, imp, "layer programs → layer programs"))
    found = _one_per_statement(out)
    assert found == [], "programs importing other programs:\n" + "\n".join(found)


# The few places below chain/ that end a process, each the definition of a primitive the kit calls
# or the end of a process the library forked (never the caller's process): (module, function).
PRIMITIVES = {
    ("base.execution", "exec_argv"): "the one exec (s6's PATH search); the kit calls it",
    ("base.messages", "Reporter.fatal"): "s6's strerr_dief, for the programs",
    ("base.messages", "Reporter.usage"): "s6's dieusage, for the programs",
    ("base.messages", "Reporter.die"): "strerr_dief with the error's exit code, for the programs",
    ("daemon.readiness", "spawn_detached"): "the detached grandchild's own os._exit after fork",
    ("base.execution", "spawn_bounded"): "the forked child's own exec, or its os._exit",
    ("fdholder.guardian", "guard"): "the forked guardian's own os._exit: it never returns into the daemon",
    ("serve.standin", "fork_stand_in"): "the forked stand-in's own os._exit: never back into the daemon",
}
# calls that end the caller when made: below chain/, only their own definitions make them
ENDING_CALLS = frozenset({"exec_argv", "die", "fatal", "usage"})


def _endings(module: Module) -> Iterator[Tuple[int, str, str]]:
    """The calls of the module that exec, exit or print — ``os.exec*``, ``os._exit``, ``sys.exit``,
    ``print``, spelled as attributes (``os.execv``) or as names imported from os/sys (``execv``), and
    the calls of the primitives that do (``exec_argv``, ``….die``): (line, call, enclosing function)."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"))
    from_os_sys = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("os", "sys") and not node.level:
            for alias in node.names:
                from_os_sys[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def ending(qualified: str) -> bool:
        return qualified.startswith("os.exec") or qualified in ("os._exit", "sys.exit")

    def visit(node: ast.AST, scope: Tuple[str, ...]) -> Iterator[Tuple[int, str, str]]:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = (*scope, child.name)
            if isinstance(child, ast.Call):
                func, where = child.func, ".".join(scope)
                if isinstance(func, ast.Name):
                    if func.id == "print":
                        yield child.lineno, "print", where
                    elif ending(from_os_sys.get(func.id, "")):
                        yield child.lineno, from_os_sys[func.id], where
                    elif func.id in ENDING_CALLS:
                        yield child.lineno, func.id, where
                elif isinstance(func, ast.Attribute):
                    owner = func.value.id if isinstance(func.value, ast.Name) else None
                    if owner in ("os", "sys") and ending(f"{owner}.{func.attr}"):
                        yield child.lineno, f"{owner}.{func.attr}", where
                    elif func.attr in ENDING_CALLS:
                        yield child.lineno, f"….{func.attr}", where
            yield from visit(child, inner)

    yield from visit(tree, ())


def test_the_library_never_execs_exits_or_prints() -> None:
    out, seen = [], set()
    for module in modules():
        if module.package == "shim" or LAYER_OF[module.package] >= MAY_END:
            continue
        for line, call, where in _endings(module):
            if (module.name, where) in PRIMITIVES:
                seen.add((module.name, where))
                continue
            out.append(f"s6ipc.{module.name}:{line} ({where or 'module'}) calls {call} "
                       f"(layer {module.package}, below chain)")
    assert out == [], "the library execs, exits or prints:\n" + "\n".join(sorted(out))
    assert seen == set(PRIMITIVES), f"stale PRIMITIVES entries: {set(PRIMITIVES) - seen}"


# --- the checker checks itself, on sources written for it -------------------------------------


def _fake(tmp_path: Path, name: str, source: str) -> Module:
    path = tmp_path.joinpath(*name.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return Module(name, name.split(".")[0] if "." in name else "top", path)


def test_relative_and_nested_imports_are_resolved(tmp_path: Path) -> None:
    module = _fake(
        tmp_path,
        "sockets.unix",
        "from ..base import errors\nfrom . import tcp\ndef f():\n    from ..serve.loop import Server\n"
        "    import s6ipc.chain.run\n",
    )
    targets = {i.target for i in imports_of(module)}
    assert {"s6ipc.base", "s6ipc.base.errors", "s6ipc.sockets.tcp", "s6ipc.serve.loop",
            "s6ipc.serve.loop.Server", "s6ipc.chain.run"} <= targets
    assert package_of("s6ipc.serve.loop.Server") == "serve"
    assert package_of("s6ipc.errors") == "shim"
    assert package_of("os.path") is None


def test_package_init_relative_imports_start_at_the_package(tmp_path: Path) -> None:
    module = _fake(tmp_path, "fdholder.__init__", "from .client import FdHolderClient\n")
    assert "s6ipc.fdholder.client" in {i.target for i in imports_of(module)}


def test_endings_are_found_however_spelled(tmp_path: Path) -> None:
    module = _fake(
        tmp_path,
        "serve.x",
        "import os, sys\nfrom os import execve as ev\ndef f():\n    os.execv('a', [])\n    ev('a', [], {})\n"
        "    sys.exit(1)\n    os._exit(0)\n    print('x')\n    os.exit_code = 1\n",
    )
    assert sorted(call for _, call, _ in _endings(module)) == [
        "os._exit", "os.execv", "os.execve", "print", "sys.exit"
    ]
    assert {where for _, _, where in _endings(module)} == {"f"}


def test_primitive_calls_are_endings_too(tmp_path: Path) -> None:
    module = _fake(
        tmp_path,
        "serve.y",
        "from ..base.execution import exec_argv\nclass A:\n    def g(self):\n        exec_argv(['x'])\n"
        "        self.messages.die(e)\n",
    )
    assert sorted((call, where) for _, call, where in _endings(module)) == [
        ("exec_argv", "A.g"), ("….die", "A.g")
    ]


def test_optional_imports_and_the_version_are_told_apart(tmp_path: Path) -> None:
    module = _fake(
        tmp_path,
        "base.z",
        "from .. import __version__\ntry:\n    import systemd.daemon\nexcept ImportError:\n    pass\n"
        "import yaml\nfrom .. import Server\n",
    )
    found = {(i.target, i.optional, i.from_package) for i in imports_of(module)}
    assert ("systemd.daemon", True, False) in found
    assert ("yaml", False, False) in found
    assert ("s6ipc", False, True) in found
    assert ("s6ipc.Server", False, False) in found


def test_upward_and_sideways_imports_are_reported(tmp_path: Path) -> None:
    _fake(tmp_path, "base.a", "def f():\n    from ..serve import loop\n")
    _fake(tmp_path, "access.b", "from ..daemon.readiness import Notifier\nfrom ..base import a\n")
    _fake(tmp_path, "serve.c", "from .. import __version__\nfrom ..fdholder import client\n")
    _fake(tmp_path, "fdholder.d", "from ..errors import BadInput\nimport s6ipc\n")
    _fake(tmp_path, "errors", "from .base.a import *\n")
    assert layer_violations(tmp_path) == [
        "s6ipc.access.b:1 → s6ipc.daemon.readiness (layer access → layer daemon)",
        "s6ipc.base.a:2 → s6ipc.serve (layer base → layer serve)",
        "s6ipc.fdholder.d:1 → s6ipc.errors (layer fdholder → a compatibility shim)",
        "s6ipc.fdholder.d:2 → s6ipc (layer fdholder → layer top)",
    ]

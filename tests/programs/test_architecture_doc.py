"""The docs name only what exists: module paths, source files, and architecture.md's folders and names.

A page that names a moved or renamed module, class or function sends a reader (or a user's
import) to nothing. These checks read docs/*.md and the sources (only the dotted paths are
imported, as a user would):

- every ``s6ipc.X.Y…`` written in docs/*.md resolves: the longest importable module prefix, then
  attributes (``s6ipc.NAME`` placeholders in capitals are skipped);
- every repository path (``src/…``, ``tests/…``, ``bench/…``, ``docs/…``, ``scripts/…``) and every
  backticked module file (``serve/intake.py``, ``peers.py``: relative to src/s6ipc or tests/) exists;
- docs/architecture.md's folder table lists, for each folder of src/s6ipc, exactly the modules it
  has (no stale one, none missing), and what it names in parentheses beside a module is defined
  in that folder;
- every code name architecture.md puts in backticks — a class (``FdStore``), a function
  (``exec_into``), a method (``Lifecycle.replace``) — is defined in src/s6ipc (or, for the tests'
  helpers it names, in tests/);
- its drawing of the layers is the order tests/unit/test_layering.py enforces.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "s6ipc"
DOCS = sorted((ROOT / "docs").glob("*.md"))
ARCHITECTURE = ROOT / "docs" / "architecture.md"

#: Backticked words of architecture.md that look like code names but name something else.
NOT_CODE = {
    # environment variables and errno names, programs and folders, words of the live view and logs
    "ENOEXEC", "LISTEN_FDS", "NOTIFY_SOCKET", "PATH", "WATCHDOG_PID", "WATCHDOG_USEC", "NAME", "_",
    "allow", "started", "starting", "s6ipc", "links", "ipcserver", "ipcserverd", "fdholderd",
    "tcpserverd", "tcpserver4d", "execve",
    # skalibs' C function the option scanner follows (base/options.py says so)
    "subgetopt",
}

#: Standard modules architecture.md names, or names members of (``os.environ``, ``os._exit``).
STANDARD_MODULES = {"os", "sys", "signal", "socket", "select", "fcntl", "typing", "dataclasses"}


def _placeholder(word: str) -> bool:
    return any(part in ("NAME", "X", "Y") for part in re.split(r"[./]", word))


def dotted_names() -> Iterator[Tuple[str, str]]:
    for page in DOCS:
        for name in sorted(set(re.findall(r"s6ipc(?:\.[A-Za-z_][A-Za-z0-9_]*)+", page.read_text()))):
            if not _placeholder(name):
                yield page.name, name


def _resolve(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("page,name", list(dotted_names()))
def test_every_dotted_s6ipc_name_in_the_docs_resolves(page: str, name: str) -> None:
    assert _resolve(name), f"docs/{page} names {name}, which does not exist"


_MODULE_FILES = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")]
_TEST_FILES = [p.relative_to(ROOT / "tests").as_posix() for p in (ROOT / "tests").rglob("*.py")]


#: What a run makes (bench/run.py's unpacked trees; ignored by git): named by the docs, never in a clone.
GENERATED = ("bench/build/",)


def _path_exists(word: str) -> bool:
    word = word.rstrip(".,:;")
    if word.startswith(GENERATED):
        return True
    if word.startswith(("src/", "tests/", "bench/", "docs/", "scripts/")):
        return (ROOT / word).exists()
    if word.startswith("s6ipc/"):
        return (ROOT / "src" / word).exists()
    return any(f == word or f.endswith("/" + word) for f in _MODULE_FILES + _TEST_FILES)


def named_paths() -> Iterator[Tuple[str, str]]:
    for page in DOCS:
        text = page.read_text()
        words = set(re.findall(r"(?<![\w/.-])(?:src|tests|bench|docs|scripts)/[\w./-]*[\w/]", text))
        words |= set(re.findall(r"`([\w/-]*[\w-]+\.py)", text))
        for word in sorted(words):
            if not _placeholder(word):
                yield page.name, word


@pytest.mark.parametrize("page,path", list(named_paths()))
def test_every_file_the_docs_name_exists(page: str, path: str) -> None:
    assert _path_exists(path), f"docs/{page} names {path}, which does not exist"


def _definitions(paths: List[Path]) -> Set[str]:
    """Every name defined in *paths*: classes, functions, module and class assignments, attributes
    assigned on ``self``, and ``Class.member`` for each member of a class."""
    names: Set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            if isinstance(node, ast.ClassDef):
                for inner in ast.walk(node):
                    member = None
                    if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        member = inner.name
                    elif isinstance(inner, ast.Attribute) and isinstance(inner.ctx, ast.Store):
                        member = inner.attr
                    elif isinstance(inner, ast.AnnAssign) and isinstance(inner.target, ast.Name):
                        member = inner.target.id
                    elif isinstance(inner, ast.Assign):
                        for target in inner.targets:
                            if isinstance(target, ast.Name):
                                names.add(f"{node.name}.{target.id}")
                    if member is not None:
                        names.add(f"{node.name}.{member}")
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return names


def _code_word(word: str) -> str:
    """``exec_into``, ``to_state()``, ``main(reporter, args)``, ``Lifecycle.replace`` → the name;
    "" for anything else (a file name, a dotted ``s6ipc.…`` path, a standard module's name)."""
    word = re.sub(r"\(.*\)$", "", word)
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?", word) or word.endswith(".py"):
        return ""
    head = word.split(".")[0]
    if head in STANDARD_MODULES or ("." in word and head == "s6ipc"):
        return ""
    return word


def _known(word: str, defined: Set[str], modules: Dict[str, Set[str]]) -> bool:
    """Whether code word *word* names something defined: ``Class.member`` and ``name`` in
    *defined*, ``module.name`` in that module (*modules*: stem → its definitions), and
    ``instance.member`` (``peer.describe``) as a member of some class."""
    if word in defined or word in modules or word in NOT_CODE:
        return True
    head, _, member = word.partition(".")
    if not member:
        return False
    if head in modules:
        return member in modules[head]
    if head[0].islower():
        return any(name.endswith("." + member) for name in defined)
    return False


def folder_rows() -> Dict[str, str]:
    """architecture.md's folder table: {folder: its modules cell}."""
    rows = {}
    for line in ARCHITECTURE.read_text().splitlines():
        match = re.match(r"\| `(\w+)/` \| [^|]+ \| (.+) \|$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def _split_cell(cell: str) -> Tuple[List[str], List[str]]:
    """(backticked words outside parentheses, those inside): modules, and names beside them."""
    outer: List[str] = []
    inner: List[str] = []
    depth = 0
    for piece in re.split(r"(`[^`]*`|[()])", cell):
        if piece == "(":
            depth += 1
        elif piece == ")":
            depth -= 1
        elif piece.startswith("`"):
            (inner if depth else outer).append(piece.strip("`"))
    return outer, inner


def test_the_folder_table_names_every_folder() -> None:
    folders = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    assert set(folder_rows()) == folders


@pytest.mark.parametrize("folder", sorted(folder_rows()))
def test_the_folder_table_lists_exactly_the_modules_of_each_folder(folder: str) -> None:
    outer, inner = _split_cell(folder_rows()[folder])
    files = sorted(p for p in (SRC / folder).glob("*.py") if p.name != "__init__.py")
    modules = {p.stem for p in files}
    if folder == "programs":  # one module per program: the row names the families, which exist
        listed = {w[:-3] for w in outer + inner if w.endswith(".py")}
        assert listed and listed <= modules, f"programs/: no such module {sorted(listed - modules)}"
        inner = [w for w in inner if not w.endswith(".py")]
    else:
        listed = {w for w in outer}
        assert sorted(listed - modules) == [], f"{folder}/: the table names modules it does not have"
        assert sorted(modules - listed) == [], f"{folder}/: modules missing from the table"
    defined = _definitions(files)
    stems = {stem: _definitions([p for p in files if p.stem == stem]) for stem in modules}
    stale = [w for w in inner if _code_word(w) and not _known(_code_word(w), defined, stems)]
    assert stale == [], f"{folder}/: the table names what the folder does not define"


def test_every_code_name_in_architecture_md_is_defined() -> None:
    files = sorted(SRC.rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    defined = _definitions(files)
    stems: Dict[str, Set[str]] = {}
    for path in files:
        stems.setdefault(path.stem, set()).update(_definitions([path]))
    words = set(re.findall(r"`([^`\s]+(?:\([^`]*\))?)`", ARCHITECTURE.read_text()))
    stale = sorted(w for w in words if _code_word(w) and not _known(_code_word(w), defined, stems))
    assert stale == [], f"docs/architecture.md names code that does not exist: {stale}"


def test_the_layer_drawing_is_the_order_the_layering_test_enforces() -> None:
    """The drawing of "The folders are the layers", top to bottom, against
    tests/unit/test_layering.py's LAYERS (bottom to top; folders on one floor share a line)."""
    from tests.unit.test_layering import LAYERS

    text = ARCHITECTURE.read_text()
    start = text.index("## The folders are the layers")
    block = text[text.index("```", start) + 3:]
    block = block[:block.index("```")]
    floors: List[Tuple[str, ...]] = []
    for line in block.splitlines():
        folders = tuple(sorted(re.findall(r"(?:^|\s)([a-z]+)/(?=\s|$)", line)))
        if folders:
            floors.append(folders)
    enforced = [tuple(sorted(floor)) for floor in LAYERS if floor != ("top",)]
    assert floors[::-1] == enforced


#: The one-line re-exports kept for a release (docs/architecture.md): the library's own text names
#: the new paths, never these.
COMPAT_SHIMS = {"intake", "readiness", "activation", "inet", "errors", "tcpaccess", "handoff",
                "uvicorn_drain"}


def source_dotted_names() -> Iterator[Tuple[str, str]]:
    """Every ``s6ipc.X.Y`` the library's docstrings and comments name (not the shims themselves)."""
    for path in sorted(SRC.rglob("*.py")):
        if path.parent == SRC and path.stem in COMPAT_SHIMS:
            continue
        text = path.read_text()
        for name in sorted(set(re.findall(r"s6ipc(?:\.[A-Za-z_][A-Za-z0-9_]*)+", text))):
            if not _placeholder(name) and "__main__" not in name:
                yield path.relative_to(SRC).as_posix(), name


#: Where the library must name a compatibility path itself: the preflight's list of the modules
#: that stand on an extra includes the uvicorn shim (importing it imports uvicorn too).
NAMES_A_SHIM = {("cli.py", "s6ipc.uvicorn_drain")}


@pytest.mark.parametrize("module,name", list(source_dotted_names()))
def test_every_dotted_s6ipc_name_in_the_sources_resolves_to_its_new_home(module: str, name: str) -> None:
    parts = name.split(".")
    assert len(parts) < 2 or parts[1] not in COMPAT_SHIMS or (module, name) in NAMES_A_SHIM, \
        f"{module} names {name}: a compatibility path"
    assert _resolve(name), f"{module} names {name}, which does not exist"

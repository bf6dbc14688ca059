"""Build-time step of the package: man pages generated from docs/ with pandoc (Debian's ``pandoc``).

Everything else is in pyproject.toml. Each program page docs/NAME.md (a program of
src/s6ipc/chain/registry.py, or a console script ``s6ipc-NAME`` of pyproject.toml) becomes
``man1/s6ipc-NAME.1``; every other page becomes ``man7/s6ipc-NAME.7`` (docs/README.md, the index,
becomes ``s6ipc.7``). They are installed as data files under the installation prefix's
``share/man``: ``/usr/local/share/man`` for a system-wide install, ``VENV/share/man`` for a venv,
which man-db finds through PATH (``VENV/bin`` → ``VENV/share/man``).

Without pandoc the package builds without man pages and says so, unless ``S6IPC_REQUIRE_MAN=1``
(``make wheel`` sets it), which makes a missing pandoc an error.
"""

from __future__ import annotations

import ast
import glob
import os
import re
import shutil
import subprocess
import sys
from typing import List, Tuple

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join("build", "man")


def _version() -> str:
    with open(os.path.join(HERE, "src", "s6ipc", "__init__.py")) as f:
        for line in f:
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip("\"'")
    return "?"


def _program_names() -> List[str]:
    """The program names of s6ipc (``PROGRAMS`` in src/s6ipc/chain/registry.py, read as data)."""
    with open(os.path.join(HERE, "src", "s6ipc", "chain", "registry.py")) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PROGRAMS" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def _command_pages() -> List[str]:
    """Pages of the extra console scripts ``s6ipc-NAME`` of pyproject.toml (docs/NAME.md, section 1)."""
    with open(os.path.join(HERE, "pyproject.toml")) as f:
        return re.findall(r'^s6ipc-([a-z0-9-]+) = "', f.read(), flags=re.M)


def man_pages() -> List[Tuple[str, List[str]]]:
    """Generate the pages into build/man; return setuptools data_files entries."""
    pages = sorted(glob.glob(os.path.join(HERE, "docs", "*.md")))
    pandoc = shutil.which("pandoc")
    if pandoc is None or not pages:
        why = "pandoc is not installed (apt-get install pandoc)" if pandoc is None else "no docs/ directory"
        if os.environ.get("S6IPC_REQUIRE_MAN") == "1":
            sys.exit(f"setup.py: fatal: cannot build the man pages: {why}")
        print(f"setup.py: warning: building without man pages: {why}", file=sys.stderr)
        return []
    sections: dict = {"1": [], "7": []}
    os.makedirs(os.path.join(HERE, OUT), exist_ok=True)
    programs = set(_program_names()) | set(_command_pages())
    for page in pages:
        name = os.path.basename(page)[:-3]
        section = "1" if name in programs else "7"
        title = "s6ipc" if name == "README" else f"s6ipc-{name}"
        out = os.path.join(OUT, f"{title}.{section}")
        subprocess.run([pandoc, "--standalone", "--from", "gfm", "--to", "man",
                        "--metadata", f"title={title.upper()}", "--metadata", f"section={section}",
                        "--metadata", f"footer=s6ipc {_version()}", "--metadata", "header=s6ipc manual",
                        "--output", os.path.join(HERE, out), page], check=True)
        sections[section].append(out)
    return [(f"share/man/man{s}", files) for s, files in sections.items() if files]


setup(data_files=man_pages())

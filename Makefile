# s6ipc — see README.md. Everything runs from a venv built from Debian's /usr/bin/python3, so that
# stages running after a privilege drop can still exec the interpreter. Where the venv goes, and
# whether the package is installed editable or as a copy, is scripts/venv-dir's answer: .venv in a
# checkout every user can traverse, /var/cache/s6ipc/venv-HASH otherwise (a clone in root's home).
SYSTEM_PYTHON ?= /usr/bin/python3
VENV_SPEC := $(shell scripts/venv-dir)
VENV ?= $(word 1,$(VENV_SPEC))
INSTALL_MODE ?= $(word 2,$(VENV_SPEC))
PY := $(VENV)/bin/python
S6IPC := $(VENV)/bin/s6ipc
DEMO_SOCKET ?= run/demo.sock
# Pythons of `make test-pythons` (default: pyenv's, 3.9 and later); each gets a venv in $(VENV)-pythons/
PYTHONS ?=

# Debian packages: what the demo needs; what building the systemd extra (python-systemd, a C
# extension) needs; what the test suite needs beyond both.
RUN_PACKAGES := python3 python3-venv
SYSTEMD_EXTRA_PACKAGES := libsystemd-dev pkg-config gcc libc6-dev python3-dev
TEST_PACKAGES := $(RUN_PACKAGES) $(SYSTEMD_EXTRA_PACKAGES) make s6 s6-doc execline systemd strace procps \
	iproute2 pandoc man-db git nginx curl ucspi-tcp runit haproxy openssl pipx prometheus

ifeq ($(INSTALL_MODE),copy)
# a copy of the package, reinstalled whenever src/ or docs/ change (nobody cannot read the checkout)
EDITABLE :=
PACKAGE := --no-deps --force-reinstall .
PACKAGE_SOURCES := $(shell find src docs -name '*.py' -o -name '*.md') setup.py
else
EDITABLE := -e
PACKAGE := -e .
PACKAGE_SOURCES :=
endif

# plain `make`: the demo's venv (installing python3 and python3-venv first when root)
.DEFAULT_GOAL := venv

.PHONY: run test check test-pythons bench lint system-packages venv test-venv wheel install clean

# The demo's venv: the package alone, no extra.
$(VENV)/.run: pyproject.toml $(PACKAGE_SOURCES)
	@scripts/ensure-system-packages $(RUN_PACKAGES)
	@test -x $(SYSTEM_PYTHON) || { echo "make: fatal: $(SYSTEM_PYTHON) not found: run make as root, or apt-get install $(RUN_PACKAGES)" >&2; exit 111; }
	umask 022 && mkdir -p $(dir $(VENV)) && { test -x $(PY) || $(SYSTEM_PYTHON) -m venv $(VENV); }
	umask 022 && $(PY) -m pip install -q $(PACKAGE)
	@touch $@

# The test venv: the test extra, and the systemd extra when what it builds with is there.
$(VENV)/.test: $(VENV)/.run
	@scripts/ensure-system-packages $(TEST_PACKAGES)
	@extras=test; if scripts/systemd-extra-check $(SYSTEM_PYTHON); then extras=test,systemd; fi; \
	  echo "$(PY) -m pip install -q $(EDITABLE) '.[$$extras]'"; \
	  umask 022 && $(PY) -m pip install -q $(EDITABLE) ".[$$extras]"
	@touch $@

venv: $(VENV)/.run

test-venv: $(VENV)/.test

system-packages:
	@scripts/ensure-system-packages $(TEST_PACKAGES)

run: venv
	@mkdir -p $(dir $(DEMO_SOCKET))
	@echo "serving $(DEMO_SOCKET) with examples/whoami (stop with Ctrl-C); from another terminal:"
	@echo "  $(S6IPC) ipcclient $(DEMO_SOCKET) sh -c 'cat <&6'"
	@exec $(S6IPC) ipcserver -v -c 100 $(DEMO_SOCKET) $(CURDIR)/examples/whoami

# The whole suite (about 4-6 minutes on 2 cores).
test: system-packages test-venv
	$(PY) -m pytest -q -p no:cacheprovider tests

# The fast unit tests with the existing venv: installs nothing.
check:
	@test -x $(PY) -a -f $(VENV)/.test || { echo "make: fatal: no test venv at $(VENV): run make test-venv (or make test) first" >&2; exit 111; }
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

# The suite on every Python in PYTHONS, except what needs another user to exec the interpreter.
test-pythons: system-packages
	scripts/test-pythons $(VENV)-pythons $(PYTHONS)

lint: test-venv
	$(VENV)/bin/ruff check src tests bench setup.py
	$(VENV)/bin/mypy

bench: system-packages test-venv
	$(PY) bench/run.py

# A wheel and an sdist in DIST (dist/), man pages included (python -m build; pandoc makes the pages).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DIST ?= dist
WHEEL := $(DIST)/s6ipc-$(VERSION)-py3-none-any.whl
wheel: venv
	@scripts/ensure-system-packages pandoc
	umask 022 && $(PY) -m pip install -q build
	umask 022 && S6IPC_REQUIRE_MAN=1 $(PY) -m build --outdir $(DIST) .

# The system-wide install the unit files expect: a venv in PREFIX from the wheel (with the systemd
# extra when it can be built), BINDIR/s6ipc (and s6ipc-uvicorn) a link to its script, the man pages
# linked into MANDIR.
PREFIX ?= /opt/s6ipc
BINDIR ?= /usr/local/bin
MANDIR ?= /usr/local/share/man
install: wheel
	umask 022 && $(SYSTEM_PYTHON) -m venv $(PREFIX)
	umask 022 && $(PREFIX)/bin/python -m pip install -q --force-reinstall --no-deps $(WHEEL)
	@if scripts/systemd-extra-check $(SYSTEM_PYTHON); then umask 022 && \
	  $(PREFIX)/bin/python -m pip install -q '$(WHEEL)[systemd]'; fi
	mkdir -p $(BINDIR) $(MANDIR)/man1 $(MANDIR)/man7
	ln -sf $(PREFIX)/bin/s6ipc $(BINDIR)/s6ipc
	ln -sf $(PREFIX)/bin/s6ipc-uvicorn $(BINDIR)/s6ipc-uvicorn
	for page in $(PREFIX)/share/man/man1/s6ipc-*.1 $(PREFIX)/share/man/man7/s6ipc*.7; do \
	  ln -sf $$page $(MANDIR)/$$(basename $$(dirname $$page))/; done
	$(BINDIR)/s6ipc --version
	@echo "man pages: $(MANDIR)/man1/s6ipc-*.1, $(MANDIR)/man7/s6ipc*.7 (man s6ipc-ipcserverd, man 7 s6ipc)"
	@command -v man >/dev/null || echo "no man command here: apt-get install man-db to read them"

clean:
	rm -rf $(VENV) $(VENV)-pythons run bench/build build dist

# -- the TCP demo (issue 11): the same service on a loopback TCP port ---------------------------------
DEMO_TCP_IP ?= 127.0.0.1
DEMO_TCP_PORT ?= 8080
.PHONY: run-tcp
run-tcp: venv
	@echo "serving $(DEMO_TCP_IP):$(DEMO_TCP_PORT) with examples/tcp-whoami; connect from another terminal with:"
	@echo "  $(S6IPC) tcpclient -H $(DEMO_TCP_IP) $(DEMO_TCP_PORT) sh -c 'cat <&6'   (or: tcpclient -RH from ucspi-tcp)"
	exec $(S6IPC) tcpserver -v -c 100 $(DEMO_TCP_IP) $(DEMO_TCP_PORT) $(CURDIR)/examples/tcp-whoami

# s6ipc — see README.md. Everything runs from a venv built from Debian's /usr/bin/python3, so that
# stages running after a privilege drop can still exec the interpreter.
SYSTEM_PYTHON ?= /usr/bin/python3
VENV ?= .venv
PY := $(VENV)/bin/python
S6IPC := $(VENV)/bin/s6ipc
DEMO_SOCKET ?= run/demo.sock

.PHONY: run test bench lint docs system-packages venv clean

system-packages:
	@scripts/ensure-system-packages

$(VENV)/.installed: pyproject.toml
	@test -x $(SYSTEM_PYTHON) || { echo "make: $(SYSTEM_PYTHON) not found (apt-get install python3)"; exit 1; }
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	@if pkg-config --exists libsystemd 2>/dev/null; then $(PY) -m pip install -q -e '.[test,systemd]'; \
	  else echo "make: libsystemd-dev missing: the python-systemd extra is not installed"; fi
	@touch $@

venv: system-packages $(VENV)/.installed

run: venv
	@mkdir -p $(dir $(DEMO_SOCKET))
	@echo "serving $(DEMO_SOCKET) with examples/whoami; connect from another terminal with:"
	@echo "  $(S6IPC) ipcclient $(DEMO_SOCKET) sh -c 'cat <&6'"
	exec $(S6IPC) ipcserver -v -c 100 $(DEMO_SOCKET) $(CURDIR)/examples/whoami

test: venv
	$(PY) -m pytest -q -p no:cacheprovider tests

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench: venv
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) run bench/build

# -- the TCP demo (issue 11): the same service on a loopback TCP port ---------------------------------
DEMO_TCP_IP ?= 127.0.0.1
DEMO_TCP_PORT ?= 8080
.PHONY: run-tcp
run-tcp: venv
	@echo "serving $(DEMO_TCP_IP):$(DEMO_TCP_PORT) with examples/tcp-whoami; connect from another terminal with:"
	@echo "  $(S6IPC) tcpclient -H $(DEMO_TCP_IP) $(DEMO_TCP_PORT) sh -c 'cat <&6'   (or: tcpclient -RH from ucspi-tcp)"
	exec $(S6IPC) tcpserver -v -c 100 $(DEMO_TCP_IP) $(DEMO_TCP_PORT) $(CURDIR)/examples/tcp-whoami

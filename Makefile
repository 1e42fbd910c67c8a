# The README's quick start is `make run` and `make test`; both set up .venv
# on first use, so a fresh clone needs nothing but Python 3.11+ and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.yaml
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean screenshots

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "firstline needs Python 3.11 or newer (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# pyspf's sdist carries RFC 7208's test suite (tests/test_spf_rfc7208.py);
	# tolerated when offline: the test then skips (and fails under CI).
	-$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: -d $(VENV)/sdist \
		"pyspf==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("pyspf"))')"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/firstline serve -c $(CONFIG)

# The ClamAV backend is tested against Debian's clamd (tests/support/clamd_server.py);
# installed here when we can (root with apt-get), else the tests say why they skip.
CLAMD_STAMP := $(VENV)/.clamd-checked
$(CLAMD_STAMP): | $(STAMP)
	@if command -v clamd >/dev/null 2>&1 || [ -x /usr/sbin/clamd ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing clamav-daemon for the antivirus tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clamav-daemon >/dev/null) \
			|| echo "note: could not install clamav-daemon; the clamd tests will skip"; \
	else echo "note: clamd not found (apt-get install clamav-daemon); the clamd tests will skip"; fi
	@touch $@

# The console's browser tests drive Debian's chromium through Playwright
# (tests/test_console_browser.py; `playwright install` cannot download here).
CHROMIUM_STAMP := $(VENV)/.chromium-checked
$(CHROMIUM_STAMP): | $(STAMP)
	@if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the console's browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "note: could not install chromium; the browser tests will skip"; \
	else echo "note: chromium not found (apt-get install chromium); the browser tests will skip"; fi
	@touch $@

# bench/ingest.py also drives Postfix's smtp-source (a C client, so the load
# generator does not eat the server's core); Debian ships it in postfix. Installed
# when we can, unless another MTA would be replaced, and its daemon is not left running.
SMTP_SOURCE_STAMP := $(VENV)/.smtp-source-checked
$(SMTP_SOURCE_STAMP): | $(STAMP)
	@if command -v smtp-source >/dev/null 2>&1 || [ -x /usr/sbin/smtp-source ]; then :; \
	elif [ -e /usr/sbin/sendmail ]; then \
		echo "note: another MTA is installed; not replacing it with postfix: bench/ingest.py uses its own load generator only"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing postfix for smtp-source (the ingest benchmark's C client)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null \
			&& { systemctl disable --now postfix >/dev/null 2>&1 || postfix stop >/dev/null 2>&1 || true; }) \
			|| echo "note: could not install postfix; bench/ingest.py uses its own load generator only"; \
	else echo "note: smtp-source not found (apt-get install postfix); bench/ingest.py uses its own load generator only"; fi
	@touch $@

test: $(STAMP) $(CLAMD_STAMP) $(CHROMIUM_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Renew the console screenshots in docs/console/ (the README shows one).
screenshots: $(STAMP) $(CHROMIUM_STAMP)
	FIRSTLINE_SCREENSHOTS=docs/console $(BIN)/python -m pytest -q tests/test_console_browser.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) $(SMTP_SOURCE_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info

# The Python client's checks (clients/python). Included from the top Makefile, which
# defines CARGO; alone: `make -f Makefile -f clients/python/client.mk test-client-python`.

.PHONY: test-client-python

# The top Makefile's: how target/debug/ternd is made (not at all under `make test`).
BUILD_TERND ?= $(CARGO) build -p tern-broker --bin ternd

# Its own environment: a venv in target/py-client with requirements-dev.txt's pinned tools
# (from PyPI) and the client itself, editable; made once, remade when the requirements or
# the package's metadata change.
PY_CLIENT_ENV := target/py-client
PY_CLIENT_DIR := clients/python

$(PY_CLIENT_ENV)/.installed: $(PY_CLIENT_DIR)/requirements-dev.txt $(PY_CLIENT_DIR)/pyproject.toml
	python3 -m venv $(PY_CLIENT_ENV)
	$(PY_CLIENT_ENV)/bin/pip install --quiet --disable-pip-version-check -r $(PY_CLIENT_DIR)/requirements-dev.txt
	$(PY_CLIENT_ENV)/bin/pip install --quiet --disable-pip-version-check -e $(PY_CLIENT_DIR)
	touch $@

## test-client-python: ruff (format and lint), mypy --strict and pytest on clients/python,
## against target/debug/ternd (built first)
test-client-python: $(PY_CLIENT_ENV)/.installed
	$(BUILD_TERND)
	cd $(PY_CLIENT_DIR) && ../../$(PY_CLIENT_ENV)/bin/ruff format --check . \
		&& ../../$(PY_CLIENT_ENV)/bin/ruff check . \
		&& ../../$(PY_CLIENT_ENV)/bin/mypy --strict \
		&& ../../$(PY_CLIENT_ENV)/bin/pytest -q -p no:cacheprovider

# make test  - create .venv if absent, install gradlint with its test extra, run pytest
# make demo  - run gradlint on the bundled example, then the auditor demo
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# -qq: pip prints errors only (setuptools' informational boxes about editable installs are not errors)
PIP    := $(BIN)/python -m pip -qq

.PHONY: test demo lint-demo audit-demo docs doc-outputs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install --upgrade pip
	@# the distribution was called `gradlint` before it became `tf-gradlint`: drop an old editable install
	@if $(BIN)/python -m pip show gradlint >/dev/null 2>&1; then $(PIP) uninstall --yes gradlint; fi
	@# ... and its metadata in the checkout, which flake8 would find as a second copy of the plugin
	rm -rf gradlint.egg-info
	$(PIP) install -e '.[test]'
	@# tf_keras (legacy Keras 2) must not pull its own TensorFlow: install it beside tensorflow-cpu
	$(PIP) install --no-deps tf-keras==2.21.0
	touch $(STAMP)

test: $(STAMP)
	GRADLINT_REQUIRE_DEPS=1 $(BIN)/python -m pytest -q

demo: lint-demo audit-demo

# exit status 1 means "findings", which is what the example is for; 2 (an error) still fails
lint-demo: $(STAMP)
	@echo "== gradlint check fixtures/example/   (the example has four planted bugs)"
	@$(BIN)/gradlint check fixtures/example/; status=$$?; test $$status -le 1

audit-demo: $(STAMP)
	@echo "== auditor: training a small model with two planted bugs, then its clean twin, under auditor.watch()"
	@$(BIN)/python fixtures/example/audit_demo.py

docs: $(STAMP)
	$(BIN)/python -m gradlint.docs

doc-outputs: $(STAMP)
	$(BIN)/python tests/linter/doc_outputs.py --update

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .gradlint_cache

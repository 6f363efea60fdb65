# make test  - create .venv if absent, install gradlint with its test extra, run pytest
# make demo  - run gradlint on the bundled example (and the auditor demo)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: test demo lint-demo audit-demo docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# tf_keras (legacy Keras 2) must not pull its own TensorFlow: install it beside tensorflow-cpu
	$(BIN)/python -m pip install --quiet --no-deps tf-keras==2.21.0
	touch $(STAMP)

test: $(STAMP)
	GRADLINT_REQUIRE_DEPS=1 $(BIN)/python -m pytest -q

demo: lint-demo audit-demo

lint-demo: $(STAMP)
	@echo "== gradlint check fixtures/example/"
	-$(BIN)/gradlint check fixtures/example/

audit-demo: $(STAMP)
	@echo "== auditor: training a small model with a planted bug under auditor.watch()"
	$(BIN)/python fixtures/example/audit_demo.py

docs: $(STAMP)
	$(BIN)/python -m gradlint.docs

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

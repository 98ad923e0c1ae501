# Two entry points (the README's first two commands):
#   make demo   set up the environment (idempotent) and run the main job
#   make test   set up the environment (idempotent) and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: setup demo test

setup:
	bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py

# pytest exits 5 when it collects no test: that is a failure here, not a pass.
test: setup
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

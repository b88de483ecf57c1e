# The two commands a newcomer needs are `make demo` and `make test`; both set themselves up.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test bench clean

setup:
	@bash scripts/bootstrap.sh

# The whole rig on emulated devices, learning, then the results table and report path.
demo: setup
	@bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench.run_all $(BENCH_ARGS)

clean:
	rm -rf runs .pytest_cache .hypothesis

# The two commands a newcomer needs are `make demo` and `make test`; both set themselves up.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test bench gpu-check clean

setup:
	@bash scripts/bootstrap.sh

# The whole rig on emulated devices, learning, then the results table and report path.
demo: setup
	@bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench.run_all $(BENCH_ARGS)

# The GPU box's path in one table (< 5 min on one H100/H200; tiny CPU mode without CUDA): docs/deploy.md.
gpu-check: setup
	$(PY) -m bench.gpu $(GPU_CHECK_ARGS)

clean:
	rm -rf runs .pytest_cache .hypothesis

# The two quickstart commands (README): `make demo` and `make test`.
# Both first install .venv from requirements/cpu.lock (idempotent, seconds when up to date).
PY := .venv/bin/python

.PHONY: setup demo stop test lint lock

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

stop:
	@bash scripts/stop.sh

test: setup
	$(PY) -m pytest -m "not gpu or gpu" -p no:cacheprovider

lint: setup
	.venv/bin/ruff check rlt_core flows tasks deployments tests benchmarks

# Re-resolve the lock (needs PyPI; the CPU torch wheel comes from pip's find-links folder).
lock:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 \
	  $$(for fl in $$(pip config get global.find-links 2>/dev/null); do echo --find-links $$fl; done) \
	  -o requirements/cpu.lock
	uv pip compile pyproject.toml --extra gpu --extra dev --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -o requirements/gpu.lock

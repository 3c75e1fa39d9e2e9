# Two commands do all the set-up on a fresh machine:  `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
# geoclip (GeoCLIP's pretrained location encoder, a peer in the probes) requires torchvision, which
# would drag in a CUDA torch: installed without its dependencies (what it needs is listed beside it).
NODEPS_PKGS := geoclip==1.3.0
NODEPS_NEEDS := geopy pandas tqdm huggingface-hub

.PHONY: install demo test test-fast lint typecheck bench clean

install: $(STAMP)

# Re-runs only when the project's declared dependencies change: fast when already done.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e '.[earth,files,eval,dev]' 'torch==$(TORCH_VERSION)'
	$(PIP) install -q $(NODEPS_NEEDS) 'torch==$(TORCH_VERSION)'
	$(PIP) install -q --no-deps $(NODEPS_PKGS)
	@$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('$(TORCH_VERSION)') else f'torch {v} was installed instead of $(TORCH_VERSION)')"
	@! $(PIP) show -q torchvision 2>/dev/null || { echo 'torchvision crept in (CUDA build): removing it'; $(PIP) uninstall -y -q torchvision; }
	@# DeepSpeed JIT-builds its CPU communication op at its first start (50-100 s of silence inside the first
	@# training run); building it here keeps that out of `unigeoclip train`. A no-op where it is not used (GPUs).
	$(PY) -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
	@touch $(STAMP)

# The whole pipeline on the real-Earth sample: `make demo QUICK=1` for a smoke run, PORT=N for another port.
demo: install
	$(VENV)/bin/unigeoclip demo $(if $(QUICK),--quick) $(if $(PORT),--port $(PORT)) $(if $(OUT),--out $(OUT))

test: install
	$(PY) -m pytest -q --durations=15

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/bench_loss.py
	$(PY) benchmarks/bench_coords.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

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

.PHONY: install test-tools demo test test-fast lint typecheck bench clean cluster-up cluster-down

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
	@touch $(STAMP)

# The whole pipeline on the real-Earth sample: `make demo QUICK=1` for a smoke run, PORT=N for another port,
# KEEP_SERVING=1 to keep the service and its map explorer up at the end (until Ctrl-C), VERBOSE=1 for Ray's own output.
demo: install
	$(VENV)/bin/unigeoclip demo $(if $(QUICK),--quick) $(if $(PORT),--port $(PORT)) $(if $(OUT),--out $(OUT)) \
		$(if $(KEEP_SERVING),--keep-serving) $(if $(VERBOSE),--verbose)

# What the tests run for real beside Python: Prometheus and its Pushgateway (Debian's packages; the cluster
# tests scrape the local cluster with them) and Chromium (Debian's; Playwright drives it in the map explorer's
# browser test). Installed once, with apt (as root, or through sudo).
TEST_TOOLS := prometheus prometheus-pushgateway chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
test-tools:
	@command -v prometheus >/dev/null && command -v prometheus-pushgateway >/dev/null && command -v chromium >/dev/null || { \
		echo "installing Debian's $(TEST_TOOLS) for the tests"; \
		$(APT) install -y -q --no-install-recommends $(TEST_TOOLS) >/dev/null 2>&1 \
		|| { $(APT) update -q >/dev/null && $(APT) install -y -q --no-install-recommends $(TEST_TOOLS) >/dev/null; }; }

test: install test-tools
	$(PY) -m pytest -q --durations=40

test-fast: install test-tools
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/bench_loss.py
	$(PY) benchmarks/bench_coords.py

# The cluster of ray_cluster.yaml on this machine (ray_cluster.local.yaml): a 0-CPU head whose real Ray
# autoscaler starts and stops local worker nodes on demand (Ray's fake multi-node provider). Submit jobs
# to it with RAY_ADDRESS=http://127.0.0.1:8265 ray job submit --working-dir . -- python jobs/...
# (docs/cluster.md). The dashboard and the job API listen on loopback only.
# Token authentication on (Ray 2.60's default for a local Ray): clients need RAY_AUTH_MODE=token.
CLUSTER_ENV := PATH=$(CURDIR)/$(VENV)/bin:$$PATH RAY_FAKE_CLUSTER=1 AUTOSCALER_UPDATE_INTERVAL_S=1 RAY_AUTH_MODE=token
cluster-up: install
	@$(VENV)/bin/ray get-auth-token --generate >/dev/null     # ~/.ray/auth_token, kept if it exists
	$(CLUSTER_ENV) $(VENV)/bin/ray start --head --num-cpus=0 --autoscaling-config=ray_cluster.local.yaml \
		--dashboard-host=127.0.0.1 --disable-usage-stats
	@echo "cluster up, 0 worker nodes: export RAY_ADDRESS=http://127.0.0.1:8265 RAY_AUTH_MODE=token; ray job submit ..."

cluster-down:
	$(VENV)/bin/ray stop --force

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Two entry points: `make serve` and `make test`. Both create .venv, install with the
# constraints file (which pins torch==2.13.0, the CPU wheel), and build the demo models once.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MODELS_DIR ?= models
HTTP_PORT ?= 8080
GRPC_PORT ?= 8081
INSTALLED := $(VENV)/.installed
# Python caches a module's bytecode when it first imports it; with PYTHONDONTWRITEBYTECODE set (some
# machines set it globally) every process would compile torch, transformers and kserve again:
# 11.3 s for their import instead of 5.4 s.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: serve test install system-deps models list clean-models manifests image image-install-check

# Serves at once while the demo models build in the background (log: build.log): each model is
# loaded as soon as its build finishes (--watch); until then the index shows it LOADING with the
# build's progress. A model that is already built is served within seconds.
# The browsable API is on: http://localhost:$(HTTP_PORT)/docs (Swagger UI) and /redoc, served offline.
serve: install
	@mkdir -p $(MODELS_DIR)
	@echo "building the demo models in the background (tail -f build.log); serving each one as soon as it is built"
	@$(PY) tools/build_models.py --models-dir $(MODELS_DIR) > build.log 2>&1 &
	$(PY) -m predictors serve --models-dir $(MODELS_DIR) --watch 2 --http_port $(HTTP_PORT) --grpc_port $(GRPC_PORT) --enable_docs_url true

# Every test runs: a skip (a missing tool or input) fails `make test` (PREDICTORS_NO_SKIPS).
# The container images build in the background beside the demo models (tools/prepare_tests.sh).
# Two pytest workers, a test file each at a time (pytest-xdist): alone, the suite keeps one of two
# CPUs busy on average (it waits on servers, containers and pip); two workers took it from 12.7 to
# 8.1 minutes on 2 cores (docs/build.md). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: install system-deps
	bash tools/prepare_tests.sh $(MODELS_DIR)
	$(VENV)/bin/lint-imports
	PREDICTORS_NO_SKIPS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Debian packages the tests use for real (installed when root on Debian, else named).
system-deps:
	bash tools/install_system_deps.sh

install: $(INSTALLED)

$(PY):
	$(PYTHON) -m venv $(VENV)

# uv installs the pinned versions pip would, with pip's own configuration (tools/install.py): into a
# fresh venv from empty caches on 2 cores, 28 s against pip's 120 s. Then one process imports what
# the server and the build use, caching their bytecode (not all 26,000 files: compileall took 53 s).
$(INSTALLED): pyproject.toml constraints.txt | $(PY)
	$(PY) tools/install.py --python $(PY) -- --quiet -c constraints.txt -e '.[build,test]'
	touch $@

# Builds every demo model folder; reuses the artifacts cached under ~/.cache/predictors.
models: install
	$(PY) tools/build_models.py --models-dir $(MODELS_DIR)

list: install
	$(PY) -m predictors list --models-dir $(MODELS_DIR)

clean-models:
	git clean -fdX $(MODELS_DIR)

# Re-render manifests/ from models/*/predictor.yaml (sizes measured by tools/measure_deploy.py).
manifests: install
	$(PY) -m predictors manifests render

# Both images with podman (or docker): predictors:<version> (models from storageUri) and
# predictors:demo (models/ baked in). Cached: an unchanged tree rebuilds nothing. See docs/image.md.
image: models system-deps
	bash tools/image/build.sh all

# The Dockerfile's pip steps for real in a fresh venv (no Docker needed); make test does a dry run.
image-install-check: install
	IMAGE_INSTALL_FULL=1 $(PY) -m pytest tests/unit/deploy/test_dockerfile.py -k install_steps -q

# syntax=docker/dockerfile:1
# CPU image for the predictors KServe runtime.
#
#   docker build -t predictors:0.1.0 .                          # models come from storageUri (/mnt/models)
#   docker build -t predictors:demo --build-arg BAKE_MODELS=true .   # self-contained demo: models/ baked in
#   docker run -p 8080:8080 -p 8081:8081 predictors:demo          # serves every baked model
#
# The KServe manifests (manifests/) run it as
#   python -m predictors --model_name NAME --model_dir /mnt/models --http_port 8080 --grpc_port 8081
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG BAKE_MODELS=false

# ---- the runtime dependency list, read from pyproject.toml --------------------------------------
# Its own stage so that the dependency layer below is rebuilt only when this list (or a pin)
# changes, not whenever pyproject.toml's extras or the package's source change.
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > requirements.txt

# ---- build: a virtualenv with the CPU torch wheel and the dependencies, nothing else ------------
FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# torch from the CPU-only index first (no CUDA libraries), pinned to the version constraints.txt pins.
RUN pip install --no-cache-dir --no-deps --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
# The dependencies from PyPI, every version pinned by constraints.txt; the installed torch satisfies it.
COPY constraints.txt ./
COPY --from=requirements /src/requirements.txt ./
RUN pip install --no-cache-dir --constraint constraints.txt --requirement requirements.txt \
    && pip check \
    && python -c "import torch; assert not torch.cuda.is_available() and '+cpu' in torch.__version__, torch.__version__"
# What a server never runs: torch's C++ headers, CMake files and test binaries (torch_shm_manager
# stays) and pandas' test suite.
RUN site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
    && rm -rf "$site/torch/include" "$site/torch/share" "$site/torch/test" "$site/pandas/tests" \
    && find "$site/torch/bin" -type f ! -name torch_shm_manager -delete

# ---- the package alone, apart from the virtualenv: a source change rebuilds only this ----------
FROM builder AS package
COPY pyproject.toml README.md ./
COPY predictors ./predictors
RUN pip install --no-cache-dir --no-deps --constraint constraints.txt --target /opt/package/site-packages . \
    && mv /opt/package/site-packages/bin /opt/package/bin \
    && PYTHONPATH=/opt/package/site-packages python -c "import predictors.cli, predictors.serving.transport.server"

# ---- demo models, only when BAKE_MODELS=true ----------------------------------------------------
FROM ${PYTHON_IMAGE} AS models-false
RUN mkdir -p /models

FROM ${PYTHON_IMAGE} AS models-true
COPY models /models

# A build stage chosen by the build argument, not an image: there is no tag to pin.
# hadolint ignore=DL3006
FROM models-${BAKE_MODELS} AS models

# ---- runtime: slim base + the virtualenv; no compiler, no pip cache, not root --------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="predictors" \
      org.opencontainers.image.description="KServe V2 predictors for text models (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
# DL3064 flags TOKENIZERS_PARALLELISM for the word TOKEN; it is a thread switch, not a secret.
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/huggingface \
    OMP_NUM_THREADS=1 \
    TOKENIZERS_PARALLELISM=false
RUN groupadd --system --gid 1000 predictors \
    && useradd --system --uid 1000 --gid 1000 --home-dir /home/predictors --create-home --shell /usr/sbin/nologin predictors
COPY --from=builder /opt/venv /opt/venv
# The package's layer after the dependencies' (the venv's site-packages; the image is Python 3.11).
COPY --from=package /opt/package/site-packages /opt/venv/lib/python3.11/site-packages/
COPY --from=package /opt/package/bin /opt/venv/bin/
COPY --from=models /models /app/models
WORKDIR /app
USER 1000:1000
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "predictors"]
# Without arguments: serve the baked demo models. KServe passes container-mode args instead.
CMD ["--models-dir", "/app/models", "--http_port", "8080", "--grpc_port", "8081"]

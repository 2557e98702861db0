#!/usr/bin/env bash
# `make image`: builds the project's Dockerfile twice with podman (or docker):
#   predictors:<version>   models come from storageUri (/mnt/models), as the manifests run it
#   predictors:demo        BAKE_MODELS=true, the demo models in models/ baked in
# Usage: tools/image/build.sh [plain|demo|all]   (default all)
#
# The base: PYTHON_IMAGE if set; else, as root with debootstrap (no registry needed), the local
# Debian bookworm build from tools/image/base.sh; else the Dockerfile's python:3.11-slim-bookworm.
# pip inside the build uses this machine's pip configuration (tools/image/pip_build_config.py).
# Layers are cached by the engine: an unchanged rebuild takes seconds.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
which=${1:-all}
PY=${PYTHON:-$root/.venv/bin/python}
[ -x "$PY" ] || PY=python3
CACHE=${PREDICTORS_CACHE:-$HOME/.cache/predictors}/image
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$root/pyproject.toml" | head -1)
torch_version=$(sed -n 's/^torch==\([^ ]*\)$/\1/p' "$root/constraints.txt")

if command -v podman >/dev/null; then
    engine=podman
    export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    engine=docker
else
    echo "make image needs podman (or a running Docker engine)." >&2
    echo "  Debian/Ubuntu: sudo apt-get install podman runc debootstrap uidmap slirp4netns" >&2
    echo "  (make system-deps installs them when run as root on Debian)" >&2
    echo "  With Docker elsewhere: docker build -t predictors:$version ." >&2
    exit 1
fi

if [ -z "${PYTHON_IMAGE:-}" ] && [ "$engine" = podman ] && [ "$(id -u)" = 0 ] && command -v debootstrap >/dev/null; then
    PYTHON_IMAGE=$(bash "$here/base.sh")
fi

flags=()
if [ "$engine" = podman ]; then
    # this machine's package index, certificate bundle and CPU torch wheel, mounted for RUN steps only
    "$PY" "$here/pip_build_config.py" "$CACHE/pip" --python "$PY" --torch-version "$torch_version"
    mapfile -t flags < "$CACHE/pip/build-args"
fi
[ -n "${PYTHON_IMAGE:-}" ] && flags+=("--build-arg=PYTHON_IMAGE=$PYTHON_IMAGE")

build() {  # tag bake
    local started=$SECONDS
    echo "== $engine build -t predictors:$1 (BAKE_MODELS=$2)" >&2
    "$engine" build --layers --tag "predictors:$1" --build-arg "BAKE_MODELS=$2" "${flags[@]}" "$root" >&2
    local size
    size=$("$engine" image inspect --format '{{.Size}}' "predictors:$1")
    echo "predictors:$1  $((size / 1000000)) MB  built in $((SECONDS - started))s"
}

if [ "$which" = plain ] || [ "$which" = all ]; then
    build "$version" false
fi
if [ "$which" = demo ] || [ "$which" = all ]; then
    for model in news-topic pii-ner review-sentiment sentence-embedding; do
        if [ ! -f "$root/models/$model/config.json" ]; then
            echo "predictors:demo bakes models/ in, and models/$model is not built: run make models first" >&2
            exit 1
        fi
    done
    build demo true
fi

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

# One build at a time: `make test` starts the builds in the background and the container tests run
# this script again, which then waits here and finds the images up to date.
mkdir -p "$CACHE"
exec 9>"$CACHE/build.lock"
flock 9

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

# The build context's files the Dockerfile COPYs (models/ only into the demo image); with the build
# flags they make an image's input digest, kept as a label: an unchanged tree skips the build,
# even the engine's own layer-cache checks (tests/unit/deploy/test_dockerfile.py holds this list
# to the Dockerfile's COPY lines). The models' build records are hashed without their timings and
# dates (file_digests.py): a fresh build of the same recipe makes the same files, and the same image.
CONTEXT_INPUTS=(Dockerfile .dockerignore pyproject.toml README.md constraints.txt predictors)
inputs_digest() {  # extra paths...
    (cd "$root" && {
        printf '%s\n' "${flags[@]}" "$@"
        find "${CONTEXT_INPUTS[@]}" "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
            | sort -z | xargs -0 "$PY" "$here/file_digests.py"
    } | sha256sum | cut -c1-16)
}

build() {  # tag bake [extra input paths]
    local started=$SECONDS tag=$1 bake=$2 digest
    shift 2
    digest=$(inputs_digest "$@")
    if [ "$("$engine" image inspect --format '{{index .Config.Labels "predictors.build-inputs"}}' "predictors:$tag" 2>/dev/null)" = "$digest" ]; then
        echo "predictors:$tag  $(($("$engine" image inspect --format '{{.Size}}' "predictors:$tag") / 1000000)) MB  up to date (inputs $digest)"
        return
    fi
    local replaced
    replaced=$("$engine" image inspect --format '{{.Id}}' "predictors:$tag" 2>/dev/null || true)
    echo "== $engine build -t predictors:$tag (BAKE_MODELS=$bake)" >&2
    "$engine" build --layers --tag "predictors:$tag" --build-arg "BAKE_MODELS=$bake" \
        --label "predictors.build-inputs=$digest" "${flags[@]}" "$root" >&2
    # The image the tag held is left untagged: remove it and its own layers (the layers the new
    # image shares stay), or each rebuild keeps about a GB. Still in use by a container: kept.
    if [ -n "$replaced" ] && [ "$replaced" != "$("$engine" image inspect --format '{{.Id}}' "predictors:$tag")" ]; then
        if "$engine" image rm "$replaced" >/dev/null 2>&1; then
            echo "removed the image predictors:$tag held before (${replaced:0:12})" >&2
        fi
    fi
    local size
    size=$("$engine" image inspect --format '{{.Size}}' "predictors:$tag")
    echo "predictors:$tag  $((size / 1000000)) MB  built in $((SECONDS - started))s"
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
    build demo true models
fi

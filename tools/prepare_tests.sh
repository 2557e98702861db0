#!/usr/bin/env bash
# `make test`'s set-up: the demo models, with the container images building beside them.
#
# The image build is disk- and network-bound (a Debian base, pip installs) and the model build
# CPU-bound (fine-tuning), so on a fresh machine they overlap instead of adding up: the plain image
# builds while the models train, and the demo image (which bakes models/ in) starts once they are
# built and goes on while the first tests run. The container tests run tools/image/build.sh too;
# it waits for a build in progress (a lock) and then finds the image up to date. A failed
# background build is not fatal here: the tests build again and report what fails. Both builds run at
# nice 19: at the same priority they took CPU from the fine-tuning and from the first tests.
set -euo pipefail
cd "$(dirname "$0")/.."
models_dir=${1:-models}
PY=.venv/bin/python
logs=${PREDICTORS_CACHE:-$HOME/.cache/predictors}/image
mkdir -p "$logs"

images=false
if command -v podman >/dev/null 2>&1; then
    images=true
    echo "building the plain container image in the background (log: $logs/build-plain.log)"
    nice -n 19 bash tools/image/build.sh plain > "$logs/build-plain.log" 2>&1 &
    plain=$!
fi

"$PY" tools/build_models.py --models-dir "$models_dir"

if $images; then
    if ! wait "$plain"; then
        echo "note: the background image build failed (the container tests will build it again):" >&2
        tail -5 "$logs/build-plain.log" >&2
    fi
    if [ "$models_dir" = models ]; then
        echo "building the demo container image in the background (log: $logs/build-demo.log)"
        nohup nice -n 19 bash tools/image/build.sh demo > "$logs/build-demo.log" 2>&1 &
    fi
fi

#!/usr/bin/env bash
# `make test`'s set-up: the demo models, with the container images building beside them.
#
# The image build is disk- and network-bound (a Debian base, pip installs) and the model build
# CPU-bound (fine-tuning), so on a fresh machine they overlap instead of adding up: the plain image
# builds while the models train, and the demo image (which bakes models/ in) is queued once they are
# built and goes on while the tests run. The tests do not wait for either: tools/image/build.sh
# takes one lock, so the demo build starts when the plain one ends, and the container tests, which
# run build.sh too, wait for both and then find the images up to date (waiting here for a plain
# build still going kept the whole suite idle: 41 s in a cold run). A failed background build is
# not fatal here: the tests build again and report what fails. Both builds run at nice 19: at the
# same priority they took CPU from the fine-tuning and from the tests.
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
    if ! kill -0 "$plain" 2>/dev/null && ! wait "$plain"; then
        echo "note: the background image build failed (the container tests will build it again):" >&2
        tail -5 "$logs/build-plain.log" >&2
    fi
    if [ "$models_dir" = models ]; then
        echo "queueing the demo container image build in the background, after the plain one (log: $logs/build-demo.log)"
        nohup nice -n 19 bash tools/image/build.sh demo > "$logs/build-demo.log" 2>&1 &
    fi
fi

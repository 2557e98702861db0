#!/usr/bin/env bash
# System tools the test suite uses for real (kubectl is expected on the machine; see README).
# Installs the Debian packages that are missing when run as root on Debian/Ubuntu; elsewhere it
# prints what to install and exits 0, and the tests that need a missing tool skip with the reason.
set -euo pipefail

# Debian package -> a command it provides (checked before installing).
PACKAGES=(
    "podman:podman"  # the image build (make image) and the container rehearsal (tests/integration/test_container_rehearsal.py)
    "runc:runc"  # podman's runtime here (tools/image/containers.conf): crun fails on these cgroup set-ups
    "debootstrap:debootstrap"  # the local python:3.11 bookworm base image, no registry needed (tools/image/base.sh)
    "prometheus:promtool"  # prometheus + promtool: metrics lint, rule tests, a real scrape (tests/integration/test_prometheus.py)
    "redis-server:redis-server"  # the Redis response cache backend (tests/integration/test_cache_redis.py)
    "chromium:chromium"  # /docs and CORS in a real browser, driven by playwright (tests/integration/test_browser.py)
)

missing=()
for entry in "${PACKAGES[@]}"; do
    package="${entry%%:*}"
    command="${entry##*:}"
    command -v "$command" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "note: missing system packages (tests that need them will skip): ${missing[*]}"
    echo "      install them with your package manager, e.g. sudo apt-get install ${missing[*]}"
fi

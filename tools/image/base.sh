#!/usr/bin/env bash
# Builds the local stand-in for python:3.11-slim-bookworm from Debian's own packages, for machines
# that cannot pull from a container registry: debootstrap --variant=minbase bookworm + python3
# (3.11) + python3-venv, security updates applied, apt/doc/man caches trimmed, imported with
# `podman import`. Prints the image name. The root file system tarball is cached under
# $PREDICTORS_CACHE/image keyed by this script's content (its package list), and the image is
# tagged with the same key, so a second run does nothing.
set -euo pipefail

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# What the runtime needs beyond minbase: the interpreter, venv (the Dockerfile's builder runs
# `python -m venv`), `python` on the PATH as in the official image, TLS roots, /etc/services.
INCLUDE=python3,python3-venv,python-is-python3,ca-certificates,netbase
IMAGE_NAME=${BASE_IMAGE_NAME:-localhost/predictors-python}
CACHE=${PREDICTORS_CACHE:-$HOME/.cache/predictors}/image
PODMAN=(podman ${PODMAN_GLOBAL_ARGS:-})

key=$(cat "$0" | sha256sum | cut -c1-12)
image="$IMAGE_NAME:3.11-$SUITE-$key"
if "${PODMAN[@]}" image exists "$image"; then
    echo "$image"
    exit 0
fi

for tool in debootstrap podman; do
    if ! command -v "$tool" >/dev/null; then
        echo "base.sh: $tool is missing; install it with: sudo apt-get install podman runc debootstrap" >&2
        exit 1
    fi
done
[ "$(id -u)" = 0 ] || { echo "base.sh: debootstrap needs root (run as root, or pull python:3.11-slim-bookworm instead)" >&2; exit 1; }

mkdir -p "$CACHE"
tarball="$CACHE/base-$SUITE-$key.tar"
if [ ! -f "$tarball" ]; then
    root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    echo "base.sh: debootstrap $SUITE into $root (a few minutes)" >&2
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$root" "$MIRROR" >&2
    cat > "$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
SOURCES
    chroot "$root" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get -y -qq upgrade >&2
    chroot "$root" apt-get clean
    # Caches and documentation the image never reads (the official slim images drop the same).
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
        "$root"/var/log/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/locale/* "$root"/usr/share/lintian "$root"/tmp/* \
        "$root"/root/.cache
    find "$root/usr/lib/python3.11" -name __pycache__ -type d -prune -exec rm -rf {} +
    tar --numeric-owner --xattrs -C "$root" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
fi
"${PODMAN[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase $SUITE + $INCLUDE" \
    "$tarball" "$image" >&2
echo "$image"

#!/usr/bin/env bash
# Builds the cluster's local images without any registry and imports them into
# the cluster's containerd (namespace k8s.io):
#   localhost/lameduck/pause:3.10     static C pause (images/pause.c)
#   localhost/lameduck/busybox:test   Debian's static busybox with applet links
# Archives are cached in ${LAMEDUCK_CACHE}/images/. Usage:
#   images.sh build            build the archives only
#   images.sh import           build if needed, then import (containerd must run)
#   images.sh load FILE.tar... import any OCI/docker archive (e.g. from mkimage.py)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMG_DIR="$LAMEDUCK_CACHE/images"
PAUSE_TAR="$IMG_DIR/pause-3.10.tar"
BUSYBOX_TAR="$IMG_DIR/busybox-test.tar"

build_images() {
  preflight
  mkdir -p "$IMG_DIR"
  local src="$CLUSTER_SRC_DIR/images" tmp
  if [ ! -s "$PAUSE_TAR" ] || [ "$src/pause.c" -nt "$PAUSE_TAR" ] || [ "$src/mkimage.py" -nt "$PAUSE_TAR" ]; then
    tmp=$(mktemp -d)
    gcc -static -Os -Wall -Werror -o "$tmp/pause" "$src/pause.c" 2>&1 ||
      die "gcc -static failed; install with: apt-get install -y gcc libc6-dev"
    strip "$tmp/pause"
    mkdir -p "$tmp/rootfs"; install -m 0755 "$tmp/pause" "$tmp/rootfs/pause"
    python3 "$src/mkimage.py" --name "$PAUSE_IMAGE" --rootfs "$tmp/rootfs" \
      --entrypoint '["/pause"]' --user 65535:65535 -o "$PAUSE_TAR" >&2
    rm -rf "$tmp"
  fi
  if [ ! -s "$BUSYBOX_TAR" ] || [ /bin/busybox -nt "$BUSYBOX_TAR" ] || [ "$src/mkimage.py" -nt "$BUSYBOX_TAR" ]; then
    tmp=$(mktemp -d); local r="$tmp/rootfs"
    mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/root" "$r/www" "$r/proc" "$r/sys" "$r/dev" "$r/var"
    chmod 1777 "$r/tmp"
    install -m 0755 /bin/busybox "$r/bin/busybox"
    local a
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"; done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$r/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' > "$r/etc/group"
    echo 'lameduck busybox test image' > "$r/www/index.html"
    python3 "$src/mkimage.py" --name "$BUSYBOX_IMAGE" --rootfs "$r" --cmd '["sh"]' -o "$BUSYBOX_TAR" >&2
    rm -rf "$tmp"
  fi
}

load() {
  [ -S "$CONTAINERD_SOCK" ] || die "containerd socket $CONTAINERD_SOCK not found; run up.sh first"
  local f
  for f in "$@"; do
    log "importing $f"
    ctr -n k8s.io --address "$CONTAINERD_SOCK" images import --snapshotter "$SNAPSHOTTER" "$f" >&2
  done
}

case "${1:-import}" in
  build) build_images ;;
  import) build_images; load "$PAUSE_TAR" "$BUSYBOX_TAR" ;;
  load) shift; load "$@" ;;
  *) die "usage: images.sh build|import|load FILE..." ;;
esac

#!/usr/bin/env bash
# Readies the cluster for Prometheus as users run it, next to the Prometheus Operator (which the
# e2e test tests/e2e/tests/prometheus_operator.rs starts itself, as a process on this machine):
#   images  builds and imports, from the binaries build.sh put in the cache (no registry, no base
#           image; both are static Go binaries), laid out as upstream's images are:
#             localhost/lameduck/prometheus:<version>                  /bin/prometheus
#             localhost/lameduck/prometheus-config-reloader:<version>  /bin/prometheus-config-reloader
#   crds    applies the operator's CRDs (monitoring.coreos.com) from the pinned module's
#           example/prometheus-operator-crd/ in the Go module cache, and waits until they are served
# Archives are cached in ${LAMEDUCK_CACHE}/images/. Usage: monitoring.sh [images|crds|all]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMG_DIR="$LAMEDUCK_CACHE/images"
PROMETHEUS_TAR="$IMG_DIR/prometheus-$PROMETHEUS_VERSION.tar"
RELOADER_TAR="$IMG_DIR/prometheus-config-reloader-$PROMETHEUS_OPERATOR_VERSION.tar"

# image NAME TAR BINARY WORKDIR : one static binary in /bin, its entrypoint, run as nobody as
# upstream's images do (the operator's pods override the user anyway).
image() {
  local name=$1 tar=$2 bin=$3 workdir=$4 tmp r
  [ -x "$bin" ] || die "$bin is missing; run $CLUSTER_SRC_DIR/build.sh first"
  if [ -s "$tar" ] && [ "$tar" -nt "$bin" ] && [ "$tar" -nt "$CLUSTER_SRC_DIR/images/mkimage.py" ]; then
    return
  fi
  tmp=$(mktemp -d); r="$tmp/rootfs"
  mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r$workdir"
  chmod 1777 "$r/tmp"
  install -m 0755 "$bin" "$r/bin/$(basename "$bin")"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$r/etc/group"
  python3 "$CLUSTER_SRC_DIR/images/mkimage.py" --name "$name" --rootfs "$r" \
    --entrypoint "[\"/bin/$(basename "$bin")\"]" --user 65534:65534 --workdir "$workdir" -o "$tar" >&2
  rm -rf "$tmp"
}

images() {
  mkdir -p "$IMG_DIR"
  image "$PROMETHEUS_IMAGE" "$PROMETHEUS_TAR" "$PROMETHEUS_BIN_DIR/prometheus" /prometheus
  image "$CONFIG_RELOADER_IMAGE" "$RELOADER_TAR" "$PROMETHEUS_OPERATOR_BIN_DIR/prometheus-config-reloader" /
  bash "$CLUSTER_SRC_DIR/images.sh" load "$PROMETHEUS_TAR" "$RELOADER_TAR"
}

crds() {
  local dir
  need_go
  # `go mod download` answers from the module cache when build.sh has filled it.
  dir=$(cd "$CLUSTER_SRC_DIR/prometheus" &&
    go mod download github.com/prometheus-operator/prometheus-operator &&
    go list -m -f '{{.Dir}}' github.com/prometheus-operator/prometheus-operator)/example/prometheus-operator-crd
  [ -d "$dir" ] || die "no CRDs at $dir"
  log "applying the Prometheus Operator $PROMETHEUS_OPERATOR_VERSION CRDs from $dir"
  # Server-side: the Prometheus CRD is larger than the last-applied annotation allows.
  kubectl_ apply --server-side --force-conflicts --field-manager=lameduck-e2e -f "$dir" >&2
  kubectl_ wait --for condition=Established --timeout=60s -f "$dir" >&2
}

case "${1:-all}" in
  images) images ;;
  crds) crds ;;
  all) images; crds ;;
  *) die "usage: monitoring.sh [images|crds|all]" ;;
esac

#!/usr/bin/env bash
# Builds the Kubernetes binaries (and etcd, helm, Prometheus, the Prometheus Operator and its
# config reloader) for the local e2e cluster from the upstream Go modules pinned in go.mod,
# helm/go.mod and prometheus/go.mod, into a version-keyed cache:
#   ${LAMEDUCK_CACHE:-$HOME/.cache/lameduck}/k8s-<version>/bin/
#   ${LAMEDUCK_CACHE:-$HOME/.cache/lameduck}/helm-<version>/bin/
#   ${LAMEDUCK_CACHE:-$HOME/.cache/lameduck}/prometheus-<version>/bin/
#   ${LAMEDUCK_CACHE:-$HOME/.cache/lameduck}/prometheus-operator-<version>/bin/
# Binaries already in the cache are skipped. Usage: build.sh [--force] [NAME...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi

ALL=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd helm
  prometheus prometheus-operator prometheus-config-reloader)
targets=("$@")
((${#targets[@]})) || targets=("${ALL[@]}")

need_go
# Not needed to compile, but checked here so a fresh machine learns at once
# everything up.sh will need.
preflight

mkdir -p "$K8S_BIN_DIR" "$HELM_BIN_DIR" "$PROMETHEUS_BIN_DIR" "$PROMETHEUS_OPERATOR_BIN_DIR"
start=$(date +%s)
log "k8s $K8S_VERSION -> $K8S_BIN_DIR; helm $HELM_VERSION -> $HELM_BIN_DIR; $(go version)"
log "prometheus $PROMETHEUS_VERSION -> $PROMETHEUS_BIN_DIR; prometheus-operator $PROMETHEUS_OPERATOR_VERSION -> $PROMETHEUS_OPERATOR_BIN_DIR"

export CGO_ENABLED=0
# Version stamp as upstream's hack/lib/version.sh would set it.
ldk8s="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldk8s+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  ldk8s+=" -X $pkg.gitMajor=$(echo "${K8S_VERSION#v}" | cut -d. -f1) -X $pkg.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
done
# Prometheus and the operator stamp their version as their Makefiles (promu) do; the module zip
# carries no git revision, and a fixed date keeps the build reproducible.
ldprom() { # version
  local v=github.com/prometheus/common/version
  echo "-s -w -X $v.Version=${1#v} -X $v.Branch=HEAD -X $v.BuildUser=lameduck -X $v.BuildDate=19700101-00:00:00"
}

build_one() {
  local name=$1 dir pkg out ld t0 tags=""
  case "$name" in
    helm) dir="$CLUSTER_SRC_DIR/helm"; pkg=helm.sh/helm/v3/cmd/helm; out="$HELM_BIN_DIR/helm"
          ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy|kubectl)
          dir="$CLUSTER_SRC_DIR"; pkg="k8s.io/kubernetes/cmd/$name"; out="$K8S_BIN_DIR/$name"; ld="$ldk8s" ;;
    etcd) # the etcd server version k8s.io/kubernetes requires (go.mod), not Debian's 3.4
          dir="$CLUSTER_SRC_DIR"; pkg=go.etcd.io/etcd/server/v3; out="$K8S_BIN_DIR/etcd"; ld="-s -w" ;;
    prometheus)
          # Kubernetes discovery only (and the file/static/http ones Prometheus always has), by
          # upstream's own plugin tags: the other discoverers' SDKs (AWS, Azure, GCE, ...) took
          # 497 s more to build here, and the Prometheus Operator's configs for ServiceMonitors
          # and PrometheusRules use none of them. No
          # `builtinassets` tag: the module has no compiled web UI (web/ui/static is built with
          # npm upstream), so the UI pages 404 while the HTTP API, all the tests use, works.
          dir="$CLUSTER_SRC_DIR/prometheus"; pkg=github.com/prometheus/prometheus/cmd/prometheus
          out="$PROMETHEUS_BIN_DIR/prometheus"; ld="$(ldprom "$PROMETHEUS_VERSION")"
          tags="remove_all_sd,enable_kubernetes_sd" ;;
    prometheus-operator)
          dir="$CLUSTER_SRC_DIR/prometheus"; pkg=github.com/prometheus-operator/prometheus-operator/cmd/operator
          out="$PROMETHEUS_OPERATOR_BIN_DIR/prometheus-operator"; ld="$(ldprom "$PROMETHEUS_OPERATOR_VERSION")" ;;
    prometheus-config-reloader)
          dir="$CLUSTER_SRC_DIR/prometheus"
          pkg=github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader
          out="$PROMETHEUS_OPERATOR_BIN_DIR/prometheus-config-reloader"; ld="$(ldprom "$PROMETHEUS_OPERATOR_VERSION")" ;;
    *) die "unknown binary $name (known: ${ALL[*]})" ;;
  esac
  if [ "$force" = 0 ] && [ -x "$out" ]; then
    log "skip $name (cached: $out)"
    return
  fi
  t0=$(date +%s)
  log "building $name ($pkg) ..."
  (cd "$dir" && nice -n 10 go build -trimpath -tags "$tags" -ldflags "$ld" -o "$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
  log "built $name in $(($(date +%s) - t0))s"
}

for t in "${targets[@]}"; do build_one "$t"; done
log "build.sh done in $(($(date +%s) - start))s"

# Shared settings for the lameduck e2e cluster scripts. Sourced, not run.
# The variables are used by the scripts that source this file.
# shellcheck shell=bash disable=SC2034

CLUSTER_SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Kubernetes version: read from go.mod so there is one place to bump it.
# modver GOMOD MODULE : the version GOMOD requires of MODULE.
modver() {
  awk -v m="$2" '($1 == "require" && $2 == m) {print $3; exit} ($1 == m && $2 ~ /^v/) {print $2; exit}' "$1"
}
K8S_VERSION="$(modver "$CLUSTER_SRC_DIR/go.mod" k8s.io/kubernetes)"
HELM_VERSION="$(modver "$CLUSTER_SRC_DIR/helm/go.mod" helm.sh/helm/v3)"
# Prometheus 3.x publishes its Go module as v0.3MM.P for release v3.MM.P.
PROMETHEUS_MODULE_VERSION="$(modver "$CLUSTER_SRC_DIR/prometheus/go.mod" github.com/prometheus/prometheus)"
PROMETHEUS_VERSION="$(echo "$PROMETHEUS_MODULE_VERSION" |
  awk -F. '/^v0\.[1-9][0-9][0-9]\.[0-9]+$/ {printf "v%d.%d.%s", int($2 / 100), $2 % 100, $3}')"
PROMETHEUS_OPERATOR_VERSION="$(modver "$CLUSTER_SRC_DIR/prometheus/go.mod" github.com/prometheus-operator/prometheus-operator)"
if [ -z "$K8S_VERSION" ] || [ -z "$HELM_VERSION" ] || [ -z "$PROMETHEUS_VERSION" ] || [ -z "$PROMETHEUS_OPERATOR_VERSION" ]; then
  echo "lib.sh: cannot read the k8s.io/kubernetes, helm, Prometheus or Prometheus Operator version from the go.mod files" >&2
  exit 1
fi

LAMEDUCK_CACHE="${LAMEDUCK_CACHE:-$HOME/.cache/lameduck}"
K8S_BIN_DIR="$LAMEDUCK_CACHE/k8s-$K8S_VERSION/bin"
HELM_BIN_DIR="$LAMEDUCK_CACHE/helm-$HELM_VERSION/bin"
PROMETHEUS_BIN_DIR="$LAMEDUCK_CACHE/prometheus-$PROMETHEUS_VERSION/bin"
PROMETHEUS_OPERATOR_BIN_DIR="$LAMEDUCK_CACHE/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION/bin"

CLUSTER_DIR="${LAMEDUCK_CLUSTER_DIR:-/var/tmp/lameduck-cluster}"
PKI_DIR="$CLUSTER_DIR/pki"
LOG_DIR="$CLUSTER_DIR/logs"
RUN_DIR="$CLUSTER_DIR/run"
KUBECONFIG_PATH="$CLUSTER_DIR/admin.kubeconfig"

CONTAINERD_SOCK="$RUN_DIR/containerd/containerd.sock"
NODE_NAME="${LAMEDUCK_NODE_NAME:-lameduck-node}"
# The node's address: a /32 on a port-less bridge that up.sh creates, so
# nothing outside this machine is ever addressed.
NODE_IP="${LAMEDUCK_NODE_IP:-10.243.0.1}"
NODE_BRIDGE="lameduck-node0"
CNI_BRIDGE="lameduck-cni0"
SERVICE_CIDR="10.96.0.0/16"
SERVICE_IP="10.96.0.1"
POD_CIDR="10.244.0.0/24"
CLUSTER_DNS_DOMAIN="cluster.local"
APISERVER_PORT=6443
ETCD_CLIENT_PORT=2379
ETCD_PEER_PORT=2380

# Sandbox knobs (env overrides) for machines where the defaults cannot work.
SNAPSHOTTER="${LAMEDUCK_SNAPSHOTTER:-overlayfs}"
CGROUPS_PER_QOS="${LAMEDUCK_CGROUPS_PER_QOS:-true}"
ENFORCE_NODE_ALLOCATABLE="${LAMEDUCK_ENFORCE_NODE_ALLOCATABLE:-[\"pods\"]}"
LOCAL_STORAGE_ISOLATION="${LAMEDUCK_LOCAL_STORAGE_ISOLATION:-true}"

PAUSE_IMAGE="localhost/lameduck/pause:3.10"
BUSYBOX_IMAGE="localhost/lameduck/busybox:test"
# Tagged with the upstream release they are built from, so a version bump is a new image.
PROMETHEUS_IMAGE="localhost/lameduck/prometheus:$PROMETHEUS_VERSION"
CONFIG_RELOADER_IMAGE="localhost/lameduck/prometheus-config-reloader:$PROMETHEUS_OPERATOR_VERSION"

# Debian packages the cluster needs (command -> package).
declare -A DEB_FOR_CMD=(
  [etcd]=etcd-server
  [containerd]=containerd
  [ctr]=containerd
  [runc]=runc
  [iptables]=iptables
  [openssl]=openssl
  [busybox]=busybox-static
  [gcc]=gcc
  [jq]=jq
  [ip]=iproute2
  [containerd-shim-runc-v2]=containerd
  [python3]=python3
  [curl]=curl
  [readelf]=binutils
)
DEB_PACKAGES="etcd-server containerd runc containernetworking-plugins iptables openssl busybox-static gcc libc6-dev binutils python3 curl iproute2 procps prometheus"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# need_cmds CMD... : fail with the exact apt-get line when something is missing.
need_cmds() {
  local missing=() pkgs="" c p
  for c in "$@"; do
    if ! command -v "$c" >/dev/null 2>&1; then
      missing+=("$c")
      p="${DEB_FOR_CMD[$c]:-$c}"
      [[ " $pkgs " == *" $p "* ]] || pkgs+="${pkgs:+ }$p"
    fi
  done
  if ((${#missing[@]})); then
    die "missing ${missing[*]}; install with: apt-get install -y $pkgs"
  fi
}

# preflight : everything the cluster needs at run time, reported at once with
# the exact apt-get line (install-deps.sh installs the lot).
preflight() {
  local missing=() pkgs="" c p
  add() { missing+=("$1"); [[ " $pkgs " == *" $2 "* ]] || pkgs+="${pkgs:+ }$2"; }
  [ -x "$K8S_BIN_DIR/etcd" ] || command -v etcd >/dev/null 2>&1 || add etcd etcd-server
  for c in containerd containerd-shim-runc-v2 ctr runc iptables openssl python3 gcc readelf ip curl; do
    command -v "$c" >/dev/null 2>&1 || add "$c" "${DEB_FOR_CMD[$c]:-$c}"
  done
  for p in bridge host-local loopback portmap; do
    [ -x "/usr/lib/cni/$p" ] || add "/usr/lib/cni/$p" containernetworking-plugins
  done
  [ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -n "$(find /usr/lib -maxdepth 2 -name libc.a -print -quit 2>/dev/null)" ] ||
    add libc.a libc6-dev
  if [ ! -x /bin/busybox ] || ! file_is_static /bin/busybox; then add "static /bin/busybox" busybox-static; fi
  if ((${#missing[@]})); then
    die "missing ${missing[*]}; install with: apt-get install -y $pkgs   (or run $CLUSTER_SRC_DIR/install-deps.sh)"
  fi
}

# need_go : a Go new enough for every go.mod here (the highest `go` line wins).
need_go() {
  local want v
  want=$(awk '$1 == "go" {print $2}' "$CLUSTER_SRC_DIR"/go.mod "$CLUSTER_SRC_DIR"/*/go.mod | sort -V | tail -n1)
  command -v go >/dev/null 2>&1 ||
    die "missing go >= $want: Debian's golang-go (1.19) is too old; this machine kind ships Go in /usr/local/go"
  v=$(go env GOVERSION); v=${v#go}
  if [ "$(printf '%s\n%s\n' "$want" "$v" | sort -V | head -n1)" != "$want" ]; then
    die "go $v is older than $want (the highest go line of $CLUSTER_SRC_DIR/*/go.mod)"
  fi
}

file_is_static() {
  # A static binary has no PT_INTERP program header.
  ! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'INTERP'
}

kubectl_() { "$K8S_BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

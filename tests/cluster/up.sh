#!/usr/bin/env bash
# Starts the single-node e2e cluster (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd, kubelet, kube-proxy) from the binaries build.sh put
# in the cache, with all state and logs under $CLUSTER_DIR
# (${LAMEDUCK_CLUSTER_DIR:-/var/tmp/lameduck-cluster}). Components already running
# are left alone, so running it on an up cluster is a no-op. Prints the admin
# kubeconfig path on stdout when the node is Ready.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

t_start=$(date +%s)
exec 3>&2
[ "$(id -u)" = 0 ] || die "up.sh must run as root (containerd, kubelet, iptables)"

# ---- preflight -------------------------------------------------------------
preflight
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  [ -x "$K8S_BIN_DIR/$b" ] || die "missing $K8S_BIN_DIR/$b; run: $CLUSTER_SRC_DIR/build.sh"
done

mkdir -p "$CLUSTER_DIR" "$LOG_DIR" "$RUN_DIR"

# ---- process helpers ---------------------------------------------------------
pidfile() { echo "$RUN_DIR/$1.pid"; }
# running NAME : the pid file names a live process whose binary is NAME (a stale
# pid file after a reboot may name some other process).
running() {
  local p
  p=$(cat "$(pidfile "$1")" 2>/dev/null) || return 1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ "$(basename "$(readlink "/proc/$p/exe" 2>/dev/null)")" = "$1" ]
}
# start NAME CMD... : run detached, log to $LOG_DIR/NAME.log, unless already running.
start() {
  local name=$1; shift
  if running "$name"; then
    log "$name already running (pid $(cat "$(pidfile "$name")"))"
    return 0
  fi
  log "starting $name"
  echo "=== $(date -u +%FT%TZ) $*" >> "$LOG_DIR/$name.log"
  setsid "$@" >> "$LOG_DIR/$name.log" 2>&1 < /dev/null 3>&- &
  echo $! > "$(pidfile "$name")"
  started_any=1
}
# wait_for WHAT TIMEOUT CMD... : poll CMD until it succeeds.
wait_for() {
  local what=$1 timeout=$2 deadline; shift 2
  deadline=$(($(date +%s) + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      die "timed out after ${timeout}s waiting for $what (logs: $LOG_DIR)"
    fi
    sleep 0.5
  done
}
# write_file FILE : stdin -> FILE, touching FILE only when the content changes
# (kube-proxy exits when its config file changes under it).
write_file() {
  local new
  new=$(mktemp "$1.XXXXXX")
  cat > "$new"
  if cmp -s "$new" "$1"; then rm -f "$new"; else mv "$new" "$1"; fi
}
# check_alive NAME : die (on the real stderr, also from inside wait_for) if NAME exited.
check_alive() { running "$1" || die "$1 exited; see $LOG_DIR/$1.log: $(tail -n 5 "$LOG_DIR/$1.log")" 2>&3; }
started_any=0

# ---- host networking ---------------------------------------------------------
# The node needs a non-loopback address (Endpoints may not be 127.0.0.0/8) that
# only this machine has: a port-less bridge holding NODE_IP/32.
if ! ip -br addr show dev "$NODE_BRIDGE" 2>/dev/null | grep -q "$NODE_IP/32"; then
  log "host: $NODE_BRIDGE with $NODE_IP/32"
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || ip link add "$NODE_BRIDGE" type bridge
  ip addr add "$NODE_IP/32" dev "$NODE_BRIDGE" 2>/dev/null || true
fi
ip link set "$NODE_BRIDGE" up
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || log "warning: bridge-nf-call-iptables not settable"
# Pods get a resolver that goes nowhere (no cluster DNS in this test cluster).
[ -s "$CLUSTER_DIR/resolv.conf" ] || printf 'nameserver 127.0.0.1\noptions ndots:1 timeout:1 attempts:1\n' > "$CLUSTER_DIR/resolv.conf"

# ---- PKI ----------------------------------------------------------------------
"$CLUSTER_SRC_DIR/pki.sh"

# ---- etcd (loopback only) -------------------------------------------------------
# etcd: the one build.sh compiled (the version Kubernetes pins), else Debian's.
ETCD_BIN="$K8S_BIN_DIR/etcd"
[ -x "$ETCD_BIN" ] && [ "${LAMEDUCK_ETCD:-}" != debian ] || ETCD_BIN=$(command -v etcd)
start etcd "$ETCD_BIN" --name lameduck --data-dir "$CLUSTER_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "lameduck=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
  --quota-backend-bytes 2147483648 --auto-compaction-retention 1h --logger zap --log-level warn

# ---- containerd ------------------------------------------------------------------
CTRD_DIR="$CLUSTER_DIR/containerd"
# Without CAP_SYS_RESOURCE a process cannot lower its oom_score_adj.
if grep -q '^CapEff:' /proc/self/status &&
   (( (0x$(awk '/^CapEff:/ {print $2}' /proc/self/status) >> 24) & 1 )); then
  RESTRICT_OOM_SCORE_ADJ=false
else
  RESTRICT_OOM_SCORE_ADJ=true
  log "no CAP_SYS_RESOURCE: containerd restrict_oom_score_adj = true"
fi
CNI_CONF_DIR="$CLUSTER_DIR/cni/net.d"
mkdir -p "$CTRD_DIR/root" "$RUN_DIR/containerd" "$CNI_CONF_DIR" "$CLUSTER_DIR/cni/ipam"
write_file "$CTRD_DIR/config.toml" <<EOF
version = 2
root = "$CTRD_DIR/root"
state = "$RUN_DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$RUN_DIR/containerd/containerd.sock.ttrpc"
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD_DIR/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  max_container_log_line_size = 16384
  netns_mounts_under_state_dir = true
  # Sandboxes here lack CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj
  # below our own (the pause container asks for -998): clamp instead of failing.
  restrict_oom_score_adj = $RESTRICT_OOM_SCORE_ADJ
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$SNAPSHOTTER"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
        Root = "$RUN_DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1
EOF

portmap=""
[ -x /usr/lib/cni/portmap ] && portmap=',
    { "type": "portmap", "capabilities": { "portMappings": true } }'
write_file "$CNI_CONF_DIR/10-lameduck.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "lameduck",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CLUSTER_DIR/cni/ipam",
        "ranges": [[{ "subnet": "$POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    }$portmap
  ]
}
EOF

start containerd containerd --config "$CTRD_DIR/config.toml"

# ---- kube-apiserver ------------------------------------------------------------------
P=$PKI_DIR
start kube-apiserver "$K8S_BIN_DIR/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address 0.0.0.0 --secure-port "$APISERVER_PORT" --advertise-address "$NODE_IP" \
  --service-cluster-ip-range "$SERVICE_CIDR" --service-node-port-range 30000-32767 \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --allow-privileged=true --anonymous-auth=true \
  --client-ca-file "$P/ca.crt" --tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" \
  --kubelet-client-certificate "$P/apiserver-kubelet-client.crt" --kubelet-client-key "$P/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$P/ca.crt" --kubelet-preferred-address-types InternalIP \
  --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DNS_DOMAIN" \
  --service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key" \
  --api-audiences "https://kubernetes.default.svc.$CLUSTER_DNS_DOMAIN" \
  --requestheader-client-ca-file "$P/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$P/front-proxy-client.crt" --proxy-client-key-file "$P/front-proxy-client.key" \
  --endpoint-reconciler-type lease --profiling=false

# ---- wait for etcd + apiserver, then the controllers ----------------------------------------
wait_for "etcd" 30 curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
check_alive etcd
readyz() {
  curl -fsS --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null 2>&1 ||
    { check_alive kube-apiserver; return 1; }
}
wait_for "kube-apiserver /readyz" 120 readyz

start kube-controller-manager "$K8S_BIN_DIR/kube-controller-manager" \
  --kubeconfig "$P/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$P/controller-manager.kubeconfig" --authorization-kubeconfig "$P/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
  --controllers '*' --service-account-private-key-file "$P/sa.key" --root-ca-file "$P/ca.crt" \
  --cluster-signing-cert-file "$P/ca.crt" --cluster-signing-key-file "$P/ca.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" --allocate-node-cidrs=false \
  --cluster-name lameduck --profiling=false

start kube-scheduler "$K8S_BIN_DIR/kube-scheduler" \
  --kubeconfig "$P/scheduler.kubeconfig" \
  --authentication-kubeconfig "$P/scheduler.kubeconfig" --authorization-kubeconfig "$P/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false --profiling=false

# ---- images (the sandbox image must be there before the first pod) ------------------------
wait_for "containerd socket" 30 ctr --address "$CONTAINERD_SOCK" version
check_alive containerd
if ! ctr -n k8s.io --address "$CONTAINERD_SOCK" images ls -q | grep -qx "$PAUSE_IMAGE" ||
   ! ctr -n k8s.io --address "$CONTAINERD_SOCK" images ls -q | grep -qx "$BUSYBOX_IMAGE"; then
  "$CLUSTER_SRC_DIR/images.sh" import
fi

# ---- kubelet -------------------------------------------------------------------------------
KUBELET_DIR="$CLUSTER_DIR/kubelet"
mkdir -p "$KUBELET_DIR"
write_file "$KUBELET_DIR/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $P/ca.crt }
authorization:
  mode: Webhook
tlsCertFile: $P/kubelet-serving.crt
tlsPrivateKeyFile: $P/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupsPerQOS: $CGROUPS_PER_QOS
enforceNodeAllocatable: $ENFORCE_NODE_ALLOCATABLE
failSwapOn: false
clusterDomain: $CLUSTER_DNS_DOMAIN
resolvConf: $CLUSTER_DIR/resolv.conf
podLogsDir: $CLUSTER_DIR/pod-logs
podPidsLimit: -1
maxPods: 110
serializeImagePulls: false
# Local images cannot be pulled again: never garbage-collect them, and do not
# evict pods for disk pressure on a shared developer disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
localStorageCapacityIsolation: $LOCAL_STORAGE_ISOLATION
rotateCertificates: false
serverTLSBootstrap: false
registerNode: true
shutdownGracePeriod: 0s
EOF
start kubelet "$K8S_BIN_DIR/kubelet" \
  --config "$KUBELET_DIR/config.yaml" --kubeconfig "$P/kubelet.kubeconfig" \
  --root-dir "$KUBELET_DIR/root" --cert-dir "$KUBELET_DIR/pki" \
  --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
  --pod-infra-container-image "$PAUSE_IMAGE" --v 1

# ---- kube-proxy ------------------------------------------------------------------------------
mkdir -p "$CLUSTER_DIR/kube-proxy"
write_file "$CLUSTER_DIR/kube-proxy/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $P/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  masqueradeAll: false
  localhostNodePorts: false
EOF
start kube-proxy "$K8S_BIN_DIR/kube-proxy" --config "$CLUSTER_DIR/kube-proxy/config.yaml"

# ---- wait for the node -----------------------------------------------------------------------
# A node object left from an earlier run may still say Ready: also require the
# kubelet's own healthz and a Ready heartbeat from this kubelet process.
kubelet_since=$(date -u -d "@$(stat -c %Y "$RUN_DIR/kubelet.pid")" +%FT%TZ)
node_ready() {
  check_alive kubelet; check_alive kube-controller-manager; check_alive kube-scheduler; check_alive containerd
  curl -fsS http://127.0.0.1:10248/healthz >/dev/null 2>&1 || return 1
  local st
  st=$(kubectl_ get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}' 2>/dev/null) || return 1
  [ "${st%% *}" = True ] && [[ ! "${st#* }" < "$kubelet_since" ]]
}
wait_for "node $NODE_NAME Ready" 180 node_ready
sa_ready() { kubectl_ -n default get serviceaccount default; }
wait_for "ServiceAccount default/default" 60 sa_ready
check_alive kube-proxy

if [ "$started_any" = 1 ]; then
  log "cluster up in $(($(date +%s) - t_start))s (k8s $K8S_VERSION, state $CLUSTER_DIR)"
else
  log "cluster already up (checked in $(($(date +%s) - t_start))s)"
fi
log "export KUBECONFIG=$KUBECONFIG_PATH"
echo "$KUBECONFIG_PATH"

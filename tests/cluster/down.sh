#!/usr/bin/env bash
# Stops the e2e cluster that up.sh started. Pods' containers are killed (the
# kubelet recreates or cleans them on the next up). Usage:
#   down.sh          stop everything, keep state (certs, etcd data, images)
#   down.sh --wipe   also delete $CLUSTER_DIR, the bridges and iptables rules
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

wipe=0
[ "${1:-}" = "--wipe" ] && wipe=1
t0=$(date +%s)

pidfile() { echo "$RUN_DIR/$1.pid"; }
# stop NAME... : SIGTERM them all, wait up to 10s, then SIGKILL what is left.
stop() {
  local name pid pids=()
  for name in "$@"; do
    pid=$(cat "$(pidfile "$name")" 2>/dev/null) || continue
    rm -f "$(pidfile "$name")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
       [ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" = "$name" ]; then
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for _ in $(seq 1 100); do
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && break; pid=""; done
    [ -z "${pid:-}" ] && return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not stop in 10s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  sleep 0.2
}

ctr_() { ctr -n k8s.io --address "$CONTAINERD_SOCK" "$@"; }

stop kube-proxy kubelet
# Kill the pods' processes while containerd still runs so the shims exit.
if [ -S "$CONTAINERD_SOCK" ] && ctr_ version >/dev/null 2>&1; then
  tasks=$(ctr_ tasks ls -q 2>/dev/null || true)
  if [ -n "$tasks" ]; then
    log "killing $(echo "$tasks" | wc -l) container task(s)"
    for t in $tasks; do ctr_ tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    for t in $tasks; do
      for _ in $(seq 1 50); do
        st=$(ctr_ tasks ls 2>/dev/null | awk -v id="$t" '$1==id {print $3}')
        [ -z "$st" ] || [ "$st" = STOPPED ] && break
        sleep 0.1
      done
      ctr_ tasks delete "$t" >/dev/null 2>&1 || true
    done
  fi
fi
stop containerd kube-scheduler kube-controller-manager
stop kube-apiserver
stop etcd

# Shims that outlived containerd (they belong to our containerd namespace/socket).
for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null || true); do
  log "killing leftover shim $p"
  kill -KILL "$p" 2>/dev/null || true
done

if [ "$wipe" = 1 ]; then
  [ -x "$K8S_BIN_DIR/kube-proxy" ] && "$K8S_BIN_DIR/kube-proxy" --cleanup >/dev/null 2>&1 || true
  # Unmount whatever containerd/kubelet left under the state dir, deepest first.
  awk -v d="$CLUSTER_DIR/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  # (Pod network namespaces are mounted under the state dir too:
  # containerd's netns_mounts_under_state_dir.)
  # What kubelet and containerd keep at fixed host paths: /var/log/containers
  # links into our pod-logs, and libcni's cached results for our network.
  find /var/log/containers -maxdepth 1 -lname "$CLUSTER_DIR/*" -delete 2>/dev/null || true
  rm -f /var/lib/cni/results/lameduck-* 2>/dev/null || true
  # The kubelet's (now empty) pod cgroups, deepest first (cgroup v1 and v2).
  for h in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  for br in "$CNI_BRIDGE" "$NODE_BRIDGE"; do ip link del "$br" 2>/dev/null || true; done
  case "$CLUSTER_DIR" in
    /|/var|/var/tmp|/tmp|"$HOME") die "refusing to wipe $CLUSTER_DIR" ;;
  esac
  log "wiping $CLUSTER_DIR"
  rm -rf "$CLUSTER_DIR"
fi
log "cluster down in $(($(date +%s) - t0))s"

#!/usr/bin/env bash
# The one-command demo: builds what is needed, starts the local single-node cluster, installs
# lameduck with its Helm chart, and shows a meshed Job stuck without lameduck and completing with
# it, then the metrics that show it. Run as root; a second run reuses every build (a minute or so).
#   bash deploy/demo/run.sh          # leaves the cluster running; stop it with tests/cluster/down.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
source tests/cluster/lib.sh
steps=7
n=0
started=$(date +%s)
step_started=$started
# Minutes and seconds, for people waiting on a first run's long builds.
since() { local s=$(( $(date +%s) - $1 )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
# Each step says how long the one before it took, and how long the run has taken so far.
step() {
  [ "$n" -gt 0 ] && printf '    step %d took %s (%s so far)\n' "$n" "$(since "$step_started")" "$(since "$started")" >&2
  n=$((n + 1)); step_started=$(date +%s)
  printf '\n\033[1m[%d/%d] %s\033[0m\n' "$n" "$steps" "$*" >&2
}

step "Debian packages (containerd, runc, CNI plugins, etcd, prometheus ...)"
bash tests/cluster/install-deps.sh

step "Kubernetes $K8S_VERSION and helm $HELM_VERSION (built from Go modules once, ~10 min; then cached)"
# The cluster and helm only: the Prometheus builds are for the e2e suite.
bash tests/cluster/build.sh kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd helm

step "start the local cluster"
bash tests/cluster/up.sh
source tests/cluster/env.sh

step "build lameduck (cargo, release: 6 to 7 minutes the first time) and import its images"
bash tests/e2e/build-images.sh

ns=lameduck-demo
step "a meshed Job without lameduck (namespace $ns)"
kubectl delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$ns" >/dev/null
kubectl -n "$ns" apply -f deploy/demo/meshed-job.yaml
# The app exits after 3s; give the Job time to show it will not finish by itself.
for _ in $(seq 1 60); do
  app=$(kubectl -n "$ns" get pods -l batch.kubernetes.io/job-name=report \
    -o 'jsonpath={.items[0].status.containerStatuses[?(@.name=="app")].state.terminated.exitCode}' 2>/dev/null || true)
  [ -n "$app" ] && break
  sleep 1
done
[ -n "$app" ] || die "the demo Job's app did not run"
sleep 5
kubectl -n "$ns" get job report
kubectl -n "$ns" get pods -l batch.kubernetes.io/job-name=report \
  -o 'custom-columns=POD:.metadata.name,PHASE:.status.phase,APP:.status.containerStatuses[?(@.name=="app")].state.terminated.reason,PROXY_RUNNING_SINCE:.status.containerStatuses[?(@.name=="lameduck-proxy")].state.running.startedAt'
log "the app exited 0 long ago, but the proxy still runs: the Job is stuck"

step "helm install lameduck (namespace lameduck-system)"
helm upgrade --install lameduck deploy/lameduck --namespace lameduck-system --create-namespace \
  --set operator.logFormat=plain --wait --timeout 3m
kubectl -n lameduck-system get deploy,pods -o wide

step "a ShutdownPolicy: lameduck finishes the stuck Job"
kubectl -n "$ns" apply -f deploy/demo/policy.yaml
if ! kubectl -n "$ns" wait --for=condition=Complete job/report --timeout=120s; then
  kubectl -n "$ns" get events
  die "the Job did not complete"
fi
kubectl -n "$ns" get job report
kubectl -n "$ns" get pods -l batch.kubernetes.io/job-name=report \
  -o 'custom-columns=POD:.metadata.name,PHASE:.status.phase,APP_EXIT:.status.containerStatuses[?(@.name=="app")].state.terminated.exitCode,PROXY_EXIT:.status.containerStatuses[?(@.name=="lameduck-proxy")].state.terminated.exitCode'
kubectl -n "$ns" get events --field-selector reportingComponent=lameduck-operator \
  -o 'custom-columns=REASON:.reason,MESSAGE:.message'
kubectl -n "$ns" get shutdownpolicies

echo >&2
log "the operator's metrics (from each replica; the leader does the work):"
for ip in $(kubectl -n lameduck-system get pods -l app.kubernetes.io/name=lameduck -o 'jsonpath={.items[*].status.podIP}'); do
  echo "--- $ip:9090/metrics"
  curl -fsS "http://$ip:9090/metrics" | grep -E '^lameduck_(leader|shutdown_attempts_total|shutdowns_total|stuck_pods|pods_observed)' || true
done
printf '    step %d took %s\n' "$n" "$(since "$step_started")" >&2
log "done in $(since "$started"). The cluster keeps running (KUBECONFIG=$KUBECONFIG_PATH);"
log "stop it with: bash tests/cluster/down.sh"

#!/usr/bin/env bash
# Proves the cluster can do what lameduck's e2e tests need, with kubectl and helm only:
#   a) a busybox pod runs and `kubectl exec` returns output
#   b) `kubectl port-forward` to a pod port (busybox httpd) carries a request
#   c) an ephemeral container (`kubectl debug --target`) runs in a pod
#   d) a plain Job completes
#   e) a Job with a classic never-exiting sidecar stays Running after main exits
#   f) the same with a native sidecar (init container, restartPolicy: Always) completes
#   g) a pod reaches the API server through the `kubernetes` Service ClusterIP
#   h) a ClusterIP Service reaches its pod from the host (the API server's path
#      to webhooks) and from another pod (kube-proxy iptables rules)
#   i) helm installs and uninstalls a chart
#   j) pod deletion runs the preStop hook, then SIGTERM ends the container
#      well before terminationGracePeriodSeconds
# Uses namespace lameduck-smoke (recreated). Prints "N passed, N failed".
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NS=lameduck-smoke
k() { kubectl_ -n "$NS" "$@"; }
passed=0 failed=0
ok() { log "PASS $1"; passed=$((passed + 1)); }
bad() { log "FAIL $1"; failed=$((failed + 1)); }

kubectl_ delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl_ create namespace "$NS" >/dev/null
# The namespace's default ServiceAccount is created asynchronously.
for _ in $(seq 1 60); do k get sa default >/dev/null 2>&1 && break; sleep 0.5; done

k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  selector: { app: web }
  ports: [{ port: 80, targetPort: 8080 }]
---
apiVersion: v1
kind: Pod
metadata: { name: client }
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - { name: main, image: $BUSYBOX_IMAGE, imagePullPolicy: Never, command: ["sleep", "3600"] }
---
apiVersion: v1
kind: Pod
metadata: { name: web, labels: { app: web } }
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"]
    ports: [{ containerPort: 8080 }]
---
apiVersion: v1
kind: Pod
metadata: { name: term }
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: main
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.2; done"]
    lifecycle: { preStop: { exec: { command: ["sleep", "2"] } } }
---
apiVersion: batch/v1
kind: Job
metadata: { name: plain }
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - { name: main, image: $BUSYBOX_IMAGE, imagePullPolicy: Never, command: ["sh", "-c", "echo plain job done"] }
---
apiVersion: batch/v1
kind: Job
metadata: { name: classic-sidecar }
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - { name: main, image: $BUSYBOX_IMAGE, imagePullPolicy: Never, command: ["sh", "-c", "echo main done"] }
      - { name: sidecar, image: $BUSYBOX_IMAGE, imagePullPolicy: Never, command: ["sleep", "3600"] }
---
apiVersion: batch/v1
kind: Job
metadata: { name: native-sidecar }
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      initContainers:
      - { name: sidecar, image: $BUSYBOX_IMAGE, imagePullPolicy: Never, restartPolicy: Always, command: ["sleep", "3600"] }
      containers:
      - { name: main, image: $BUSYBOX_IMAGE, imagePullPolicy: Never, command: ["sh", "-c", "sleep 2; echo main done"] }
---
apiVersion: v1
kind: Pod
metadata: { name: apicheck }
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: ["sh", "-c", "echo -n \$KUBERNETES_SERVICE_HOST:\$KUBERNETES_SERVICE_PORT' '; wget -q -O - --no-check-certificate https://\$KUBERNETES_SERVICE_HOST:\$KUBERNETES_SERVICE_PORT/version; rc=\$?; echo; echo wget-exit=\$rc"]
EOF

# a) exec
if k wait --for=condition=Ready pod/web --timeout=90s >/dev/null &&
   out=$(k exec web -c main -- sh -c 'echo exec-ok from $(hostname)') && [[ "$out" == exec-ok* ]]; then
  log "  exec output: $out"; ok "a) pod runs, kubectl exec works"
else
  k describe pod web | tail -n 20 >&2; bad "a) pod/exec"
fi

# b) port-forward
port=18080
"$K8S_BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" -n "$NS" port-forward pod/web "$port:8080" > "$LOG_DIR/smoke-port-forward.log" 2>&1 &
pf=$!
body=""
for _ in $(seq 1 40); do
  body=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/" 2>/dev/null) && break
  sleep 0.25
done
kill "$pf" 2>/dev/null; wait "$pf" 2>/dev/null
if [ "$body" = "lameduck busybox test image" ]; then
  log "  port-forward body: $body"; ok "b) port-forward"
else
  cat "$LOG_DIR/smoke-port-forward.log" >&2; bad "b) port-forward (got '$body')"
fi

# c) ephemeral container targeting the main container's process namespace
if k debug pod/web -c debugger --image="$BUSYBOX_IMAGE" --image-pull-policy=Never --profile=general --target=main -- \
     sh -c 'echo ephemeral-ok; ps -o pid,comm | grep -q httpd && echo sees-httpd' >/dev/null; then
  for _ in $(seq 1 60); do
    st=$(k get pod web -o 'jsonpath={.status.ephemeralContainerStatuses[?(@.name=="debugger")].state.terminated.reason}')
    [ -n "$st" ] && break; sleep 0.5
  done
  logs=$(k logs web -c debugger 2>&1)
  if [[ "$logs" == *ephemeral-ok*sees-httpd* ]]; then
    log "  ephemeral container ($st): $(echo "$logs" | tr '\n' ' ')"; ok "c) ephemeral container"
  else
    bad "c) ephemeral container: state '$st', logs: $logs"
  fi
else
  bad "c) kubectl debug failed"
fi

# d) plain Job
if k wait --for=condition=Complete job/plain --timeout=90s >/dev/null; then
  log "  job/plain: $(k get pods -l job-name=plain -o 'jsonpath={.items[0].status.phase}'), logs: $(k logs job/plain)"
  ok "d) plain Job completes"
else
  bad "d) plain Job"
fi

# e) classic sidecar keeps the Job pod Running
main_done=""
for _ in $(seq 1 120); do
  main_done=$(k get pods -l job-name=classic-sidecar -o 'jsonpath={.items[0].status.containerStatuses[?(@.name=="main")].state.terminated.exitCode}' 2>/dev/null)
  [ -n "$main_done" ] && break; sleep 0.5
done
sleep 5
phase=$(k get pods -l job-name=classic-sidecar -o 'jsonpath={.items[0].status.phase}')
complete=$(k get job classic-sidecar -o 'jsonpath={.status.conditions[?(@.type=="Complete")].status}')
if [ "$main_done" = 0 ] && [ "$phase" = Running ] && [ "$complete" != True ]; then
  log "  classic-sidecar: main exit=$main_done, 5s later pod phase=$phase, Job Complete='${complete}'"
  ok "e) classic sidecar keeps the Job Running"
else
  bad "e) classic sidecar: main exit='$main_done' phase='$phase' complete='$complete'"
fi

# f) native sidecar
if k wait --for=condition=Complete job/native-sidecar --timeout=90s >/dev/null; then
  log "  job/native-sidecar: pod $(k get pods -l job-name=native-sidecar -o 'jsonpath={.items[0].status.phase}'), sidecar exit $(k get pods -l job-name=native-sidecar -o 'jsonpath={.items[0].status.initContainerStatuses[0].state.terminated.exitCode}')"
  ok "f) native sidecar Job completes"
else
  bad "f) native sidecar Job"
fi

# g) pod -> kubernetes Service ClusterIP -> kube-apiserver
for _ in $(seq 1 120); do
  p=$(k get pod apicheck -o 'jsonpath={.status.phase}'); [ "$p" = Succeeded ] || [ "$p" = Failed ] && break; sleep 0.5
done
out=$(k logs apicheck 2>&1)
if [[ "$out" == *gitVersion* ]]; then
  log "  apicheck: $(echo "$out" | tr -d ' \n' | cut -c1-160)"; ok "g) pod reaches the API server via the kubernetes Service"
else
  bad "g) apicheck: phase '$p', output: $out"
fi

# h) Services: host -> ClusterIP -> pod, and pod -> ClusterIP -> pod
ip=$(k get svc web -o 'jsonpath={.spec.clusterIP}')
for _ in $(seq 1 40); do
  [ -n "$(k get endpointslices -l kubernetes.io/service-name=web -o 'jsonpath={.items[*].endpoints[*].addresses[0]}')" ] && break
  sleep 0.25
done
from_host=$(curl -fsS --max-time 5 "http://$ip/" 2>&1)
k wait --for=condition=Ready pod/client --timeout=60s >/dev/null
# (Debian's static busybox wget segfaults with -T, hence `timeout`.)
from_pod=$(k exec client -- timeout 5 wget -q -O - "http://$ip:80/" 2>&1)
if [ "$from_host" = "lameduck busybox test image" ] && [ "$from_pod" = "$from_host" ]; then
  log "  service web $ip:80 -> pod: from host '$from_host', from pod '$from_pod'"
  ok "h) ClusterIP Service from host and from a pod"
else
  bad "h) service $ip: from host '$from_host', from pod '$from_pod'"
fi

# i) helm
HELM="$HELM_BIN_DIR/helm"
if [ -x "$HELM" ]; then
  chart=$(mktemp -d)
  mkdir -p "$chart/templates"
  printf 'apiVersion: v2\nname: smoke\nversion: 0.1.0\n' > "$chart/Chart.yaml"
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  hello: {{ .Values.hello | quote }}\n' > "$chart/templates/cm.yaml"
  printf 'hello: world\n' > "$chart/values.yaml"
  if "$HELM" --kubeconfig "$KUBECONFIG_PATH" -n "$NS" install smoke "$chart" --wait --timeout 60s >/dev/null &&
     [ "$(k get configmap smoke-cm -o 'jsonpath={.data.hello}')" = world ] &&
     "$HELM" --kubeconfig "$KUBECONFIG_PATH" -n "$NS" uninstall smoke --wait >/dev/null; then
    log "  $("$HELM" version --short) installed and uninstalled chart smoke"
    ok "i) helm install/uninstall"
  else
    bad "i) helm"
  fi
  rm -rf "$chart"
else
  bad "i) helm not built ($HELM); run build.sh"
fi

# j) graceful termination: preStop (2s) then SIGTERM, far less than the 20s grace
k wait --for=condition=Ready pod/term --timeout=60s >/dev/null
t0=$(date +%s.%N)
k delete pod term --wait=true >/dev/null
took=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
if python3 -c "import sys; sys.exit(0 if 2 <= $took < 12 else 1)"; then
  log "  pod term deleted in ${took}s (preStop sleep 2, grace 20s)"; ok "j) preStop then SIGTERM"
else
  bad "j) pod term deletion took ${took}s (want 2..12s)"
fi

if [ "${KEEP:-0}" != 1 ]; then kubectl_ delete namespace "$NS" --wait=false >/dev/null; fi
echo "smoke: $passed passed, $failed failed"
[ "$failed" = 0 ]

#!/usr/bin/env bash
# lameduck-operator's benchmark on the local cluster; prints figures, asserts nothing.
#   1. decisions: 10,000 and 100,000 run-to-completion pods of mixed owners (Job, another kind,
#      none) on a node with no kubelet, statuses written at 500 pods/s, operator in --dry-run with
#      the webhook and its admitted-pods watch on, as the chart runs it: status write -> recorded
#      decision (p50/p99/max), and RSS.
#   2. kubelet: real Jobs, lameduck-managed vs native sidecar: main exit -> pod Succeeded.
# Needs the cluster (tests/cluster/up.sh) and the images (tests/e2e/build-images.sh).
# Usage: crates/operator/bench/run.sh [--quick]   (--quick: 1,000 pods and 3 kubelet runs)
# The 100,000-pod run takes about half an hour here, most of it creating and deleting pods.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
source tests/cluster/env.sh
cargo build --release -q -p lameduck-operator -p lameduck-e2e --bins
sizes=(10000 100000) runs=5
if [ "${1:-}" = "--quick" ]; then sizes=(1000) runs=3; fi
for pods in "${sizes[@]}"; do
  target/release/lameduck-bench-operator decisions --pods "$pods" --rate 500 --webhook
done
target/release/lameduck-bench-operator kubelet --runs "$runs"

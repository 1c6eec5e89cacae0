#!/usr/bin/env bash
# Benchmarks lameduck-proxy and prints figures (no pass/fail on timing):
#   1. wrk, HTTP/1.1 keep-alive, 64 connections: the app directly, through lameduck-proxy, and
#      through nginx as a reverse proxy with upstream keepalive; rounds alternate targets.
#   2. idle RSS, and RSS with 10,000 idle keep-alive connections.
#   3. drain under load: SIGTERM mid-run, accepted requests lost (must be 0), last response to exit.
# Everything runs on 127.0.0.1. Usage: bash crates/proxy/bench/run.sh [seconds-per-run] [rounds]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
duration=${1:-10}
rounds=${2:-3}

need() {
  command -v "$1" >/dev/null && return
  echo "installing $2 (Debian package)" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need wrk wrk
need nginx nginx-light

cargo build --release -q -p lameduck-proxy --bins --examples
work=$(mktemp -d)
app=18181 via_nginx=18182 via_lameduck=18183
cat >"$work/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$app; keepalive 64; }
  # The app: a fixed 6-byte answer, as fast as nginx can make it.
  server { listen 127.0.0.1:$app; location / { return 200 "hello\n"; } }
  server {
    listen 127.0.0.1:$via_nginx;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
nginx -c "$work/nginx.conf" -p "$work"
target/release/lameduck-proxy --inbound-addr "127.0.0.1:$via_lameduck" --inbound-target "127.0.0.1:$app" \
  --outbound-addr 127.0.0.1:18184 --admin-addr 127.0.0.1:18185 --log-level warn &
proxy=$!
cleanup() { kill "$proxy" 2>/dev/null || true; nginx -c "$work/nginx.conf" -p "$work" -s stop 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:18185/ready" >/dev/null && break; sleep 0.05; done

# wrk's latency lines ("50%  1.23ms") to milliseconds.
to_ms() { awk '{v=$2; u=v; sub(/[0-9.]+/,"",u); sub(/[a-z]+$/,"",v); m=(u=="us")?0.001:(u=="s")?1000:1; printf "%.3f", v*m}'; }
declare -A rps p50 p99
for round in $(seq "$rounds"); do
  for name in direct lameduck nginx; do
    case $name in direct) port=$app ;; lameduck) port=$via_lameduck ;; nginx) port=$via_nginx ;; esac
    out=$(wrk -t2 -c64 -d"${duration}s" --latency "http://127.0.0.1:$port/")
    r=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    a=$(grep -E '^ +50%' <<<"$out" | to_ms)
    b=$(grep -E '^ +99%' <<<"$out" | to_ms)
    errors=$(grep -E 'Socket errors|Non-2xx' <<<"$out" || true)
    printf 'round %s %-9s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms %s\n' "$round" "$name" "$r" "$a" "$b" "$errors"
    rps[$name]+="$r "; p50[$name]+="$a "; p99[$name]+="$b "
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR%2)? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
echo
echo "median of $rounds rounds (wrk -t2 -c64 -d${duration}s, HTTP/1.1 keep-alive, 2 cores shared by client, proxy and app):"
for name in direct lameduck nginx; do
  printf '  %-9s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms\n' "$name" \
    "$(median <<<"${rps[$name]}")" "$(median <<<"${p50[$name]}")" "$(median <<<"${p99[$name]}")"
done
awk -v l="$(median <<<"${rps[lameduck]}")" -v n="$(median <<<"${rps[nginx]}")" \
  -v lp="$(median <<<"${p99[lameduck]}")" -v np="$(median <<<"${p99[nginx]}")" \
  'BEGIN { printf "  lameduck/nginx: throughput x%.2f, p99 x%.2f\n", l/n, lp/np }'
echo
echo "idle proxy RSS (this run): $(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$proxy/status")"
kill "$proxy"; wait "$proxy" 2>/dev/null || true
target/release/examples/idle_connections 10000
target/release/examples/drain_under_load 64 3

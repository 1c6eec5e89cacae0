#!/usr/bin/env bash
# Benchmarks lameduck-proxy and prints figures (no pass/fail on timing):
#   1. wrk, HTTP/1.1 keep-alive, 64 connections: the app directly, through lameduck-proxy (one
#      thread, and `--cores 2`), and through nginx as a reverse proxy with upstream keepalive (one
#      worker, and `auto`); rounds alternate targets and rotate their order.
#   2. idle RSS, and RSS with 10,000 idle keep-alive connections.
#   3. drain under load: SIGTERM mid-run, accepted requests lost (must be 0), last response to exit.
# Everything runs on 127.0.0.1. Usage: bash crates/proxy/bench/run.sh [seconds-per-run] [rounds]
# Run it on a quiet machine: the client, the proxies and the app share its cores.
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
app=18181 nginx1=18182 nginx_auto=18183 lameduck=18184 lameduck2=18187
# Three nginx instances, so the proxy under test never shares an event loop with the app:
# the app, nginx as a proxy with one worker (lameduck-proxy runs one thread), and with `auto`.
nginx_conf() { # name workers body
  mkdir -p "$work/$1"
  cat >"$work/$1/nginx.conf" <<CONF
worker_processes $2;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
events { worker_connections 4096; }
http { access_log off; $3 }
CONF
  nginx -c "$work/$1/nginx.conf" -p "$work/$1"
}
nginx_conf app 1 "server { listen 127.0.0.1:$app; location / { return 200 \"hello\\n\"; } }"
proxy_block="upstream app { server 127.0.0.1:$app; keepalive 64; }"
location='location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }'
nginx_conf nginx1 1 "$proxy_block server { listen 127.0.0.1:$nginx1; $location }"
nginx_conf nginx_auto auto "$proxy_block server { listen 127.0.0.1:$nginx_auto; $location }"
target/release/lameduck-proxy --inbound-addr "127.0.0.1:$lameduck" --inbound-target "127.0.0.1:$app" \
  --outbound-addr 127.0.0.1:18185 --admin-addr 127.0.0.1:18186 --log-level warn &
proxy=$!
# And with two worker threads (`--cores 2`), the match for nginx's `auto` on this machine.
target/release/lameduck-proxy --inbound-addr "127.0.0.1:$lameduck2" --inbound-target "127.0.0.1:$app" \
  --outbound-addr 127.0.0.1:18188 --admin-addr 127.0.0.1:18189 --log-level warn --cores 2 &
proxy2=$!
cleanup() {
  kill "$proxy" "$proxy2" 2>/dev/null || true
  for name in app nginx1 nginx_auto; do nginx -c "$work/$name/nginx.conf" -p "$work/$name" -s stop 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
for admin in 18186 18189; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/ready" >/dev/null && break; sleep 0.05; done
done

# CPU seconds (user + system) used so far by a process and its children's threads, in clock ticks.
ticks() { local total=0 pid; for pid in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done; echo "$total"; }
workers() { pgrep -P "$(cat "$work/$1/nginx.pid")" | tr '\n' ' '; }
hz=$(getconf CLK_TCK)
# wrk's latency lines ("50%  1.23ms") to milliseconds.
to_ms() { awk '{v=$2; u=v; sub(/[0-9.]+/,"",u); sub(/[a-z]+$/,"",v); m=(u=="us")?0.001:(u=="s")?1000:1; printf "%.3f", v*m}'; }
# CPU per request (the proxy's own user + system time over the requests it served) is the steadier
# figure when other tenants of the host make req/s swing: on a CPU-bound 2-core machine it is what
# throughput follows.
declare -A rps p50 p99 cpu by_round
targets=(direct lameduck lameduck-2c nginx-1w nginx-auto)
for round in $(seq "$rounds"); do
  # Each round starts one target later, so none always runs right after the heaviest (direct)
  # or always first: the host's load comes and goes in spells of seconds.
  for i in "${!targets[@]}"; do
    name=${targets[(i + round - 1) % ${#targets[@]}]}
    case $name in
      direct) port=$app; pids=$(workers app) ;;
      lameduck) port=$lameduck; pids=$proxy ;;
      lameduck-2c) port=$lameduck2; pids=$proxy2 ;;
      nginx-1w) port=$nginx1; pids=$(workers nginx1) ;;
      nginx-auto) port=$nginx_auto; pids=$(workers nginx_auto) ;;
    esac
    # shellcheck disable=SC2086 # a list of pids
    before=$(ticks $pids)
    out=$(wrk -t2 -c64 -d"${duration}s" --latency "http://127.0.0.1:$port/")
    # shellcheck disable=SC2086
    after=$(ticks $pids)
    r=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    c=$(awk -v t=$((after - before)) -v n="$total" -v hz="$hz" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')
    a=$(grep -E '^ +50%' <<<"$out" | to_ms)
    b=$(grep -E '^ +99%' <<<"$out" | to_ms)
    errors=$(grep -E 'Socket errors|Non-2xx' <<<"$out" || true)
    printf 'round %s %-11s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  CPU %6.2f us/req %s\n' \
      "$round" "$name" "$r" "$a" "$b" "$c" "$errors"
    rps[$name]+="$r "; p50[$name]+="$a "; p99[$name]+="$b "; cpu[$name]+="$c "; by_round[$name,$round]=$r
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR%2)? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
best() { tr ' ' '\n' | grep -v '^$' | sort -g | tail -1; }
echo
echo "median of $rounds rounds (wrk -t2 -c64 -d${duration}s, HTTP/1.1 keep-alive, 2 cores shared by client, proxy and app):"
for name in "${targets[@]}"; do
  printf '  %-11s %10.0f req/s (best %6.0f)  p50 %7.3f ms  p99 %7.3f ms  CPU %6.2f us/req\n' "$name" \
    "$(median <<<"${rps[$name]}")" "$(best <<<"${rps[$name]}")" "$(median <<<"${p50[$name]}")" \
    "$(median <<<"${p99[$name]}")" "$(median <<<"${cpu[$name]}")"
done
# Rounds are paired: each round's runs follow one another within seconds, so the median of the
# per-round ratios is less swayed by slow changes in the host's load than the ratio of medians.
paired() { # ours reference
  for round in $(seq "$rounds"); do
    awk -v l="${by_round[$1,$round]}" -v n="${by_round[$2,$round]}" 'BEGIN {printf "%.3f ", l/n}'
  done
}
for pair in "lameduck nginx-1w" "lameduck nginx-auto" "lameduck-2c nginx-auto"; do
  read -r ours ref <<<"$pair"
  printf '  %s / %s, per round: %s-> median x%.2f\n' "$ours" "$ref" "$(paired "$ours" "$ref")" \
    "$(paired "$ours" "$ref" | median)"
  awk -v ours="$ours" -v ref="$ref" -v l="$(median <<<"${rps[$ours]}")" -v n="$(median <<<"${rps[$ref]}")" \
    -v lp="$(median <<<"${p99[$ours]}")" -v np="$(median <<<"${p99[$ref]}")" \
    -v lc="$(median <<<"${cpu[$ours]}")" -v nc="$(median <<<"${cpu[$ref]}")" \
    -v lb="$(best <<<"${rps[$ours]}")" -v nb="$(best <<<"${rps[$ref]}")" \
    'BEGIN { printf "  %s / %s: throughput x%.2f (best x%.2f), p99 x%.2f, CPU per request x%.2f\n", ours, ref, l/n, lb/nb, lp/np, lc/nc }'
done
echo
echo "proxy RSS after the wrk runs: $(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$proxy/status")"
kill "$proxy" "$proxy2"; wait "$proxy" "$proxy2" 2>/dev/null || true
target/release/examples/idle_connections 10000
target/release/examples/drain_under_load 64 3

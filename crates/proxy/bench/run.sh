#!/usr/bin/env bash
# Benchmarks lameduck-proxy and prints figures (no pass/fail on timing):
#   1. wrk, HTTP/1.1 keep-alive, 64 connections: the app directly, through lameduck-proxy (one
#      thread, and `--cores 2`), through nginx as a reverse proxy with upstream keepalive (one
#      worker, and `auto`), and through HAProxy (`nbthread 1`, and 2); rounds alternate targets
#      and rotate their order. Paired per-round ratios against nginx and HAProxy.
#   2. the same, pinned: wrk on CPU 0, each proxy and the app on CPU 1, for one-thread lameduck,
#      HAProxy and nginx. Unpinned, the client's threads and the proxy are placed by the kernel,
#      and which of them share a core changes the figures more than the proxy's own cost does.
#   3. h2load, HTTP/2 with prior knowledge (h2c), 64 connections of 10 streams each, inbound to
#      lameduck-proxy, HAProxy and nginx, each with one thread or worker, in rotating rounds too.
#   4. idle RSS, and RSS with 10,000 idle keep-alive connections.
#   5. drain under load: SIGTERM mid-run, accepted requests lost (must be 0), last response to exit.
# Everything runs on 127.0.0.1.
# Usage: bash crates/proxy/bench/run.sh [seconds-per-run=10] [rounds=3]
#        bash crates/proxy/bench/run.sh --quick      (3-second runs, 2 rounds: a smoke test)
# Run it on a quiet machine: the client, the proxies and the app share its cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
if [[ ${1:-} == --quick ]]; then
  duration=3 rounds=2
else
  duration=${1:-10}
  rounds=${2:-3}
fi

need() {
  command -v "$1" >/dev/null && return
  echo "installing $2 (Debian package)" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need wrk wrk
need nginx nginx-light
need haproxy haproxy
need h2load nghttp2-client
need taskset util-linux

# The proxy on its own, as it ships: built together with the examples it would get the features
# of their dev-dependencies too (tokio's `test-util`, whose clock takes a lock on every reading).
cargo build --release -q --locked -p lameduck-proxy --bin lameduck-proxy
cargo build --release -q --locked -p lameduck-proxy --examples
work=$(mktemp -d)
app=18181 nginx1=18182 nginx_auto=18183 lameduck=18184 lameduck2=18187 haproxy1=18190 haproxy2=18200
# HTTP/2 (h2c, prior knowledge): the app's own h2c port, and each proxy's HTTP/2 port.
app_h2=18191 nginx1_h2=18197 haproxy1_h2=18192 haproxy1_h2up=18193 lameduck_h2=18210
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
# nginx ends an HTTP/2 connection after `keepalive_requests` (1000) with GOAWAY, and h2load does
# not reconnect, so the HTTP/2 servers allow more. (The proxies' connections to the app would
# cope: lameduck sends the streams a GOAWAY left unprocessed again, see the README.)
h2_server="keepalive_requests 100000000;"
nginx_conf app 1 "server { listen 127.0.0.1:$app; location / { return 200 \"hello\\n\"; } }
  server { listen 127.0.0.1:$app_h2 http2; $h2_server location / { return 200 \"hello\\n\"; } }"
proxy_block="upstream app { server 127.0.0.1:$app; keepalive 64; }"
location='location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }'
# nginx-light's `listen ... http2` without TLS speaks h2c with prior knowledge only.
nginx_conf nginx1 1 "$proxy_block server { listen 127.0.0.1:$nginx1; $location }
  server { listen 127.0.0.1:$nginx1_h2 http2; $h2_server $location }"
nginx_conf nginx_auto auto "$proxy_block server { listen 127.0.0.1:$nginx_auto; $location }"
# HAProxy as Debian ships it, with as many threads as lameduck-proxy: `http-reuse always` shares
# idle app connections between clients, as lameduck's pool and nginx's `keepalive` do. No `log`
# line: no logging. It forks into the background like nginx and leaves its pid in a file.
haproxy_conf() { # name threads frontends-and-backends
  mkdir -p "$work/$1"
  cat >"$work/$1/haproxy.cfg" <<CONF
global
  nbthread $2
  maxconn 4096
defaults
  mode http
  http-reuse always
  timeout connect 3s
  timeout client 30s
  timeout server 30s
backend app
  server app 127.0.0.1:$app maxconn 1024
$3
CONF
  haproxy -D -p "$work/$1/haproxy.pid" -f "$work/$1/haproxy.cfg"
}
# HTTP/2 inbound to the HTTP/1 app (as nginx does), and to the app's h2c port (as lameduck does:
# it keeps HTTP/2 as HTTP/2, for gRPC).
haproxy_conf haproxy1 1 "frontend h1
  bind 127.0.0.1:$haproxy1
  default_backend app
frontend h2
  bind 127.0.0.1:$haproxy1_h2 proto h2
  default_backend app
frontend h2up
  bind 127.0.0.1:$haproxy1_h2up proto h2
  default_backend app_h2
backend app_h2
  server app 127.0.0.1:$app_h2 proto h2 maxconn 1024"
haproxy_conf haproxy2 2 "frontend h1
  bind 127.0.0.1:$haproxy2
  default_backend app"
lameduck_start() { # inbound-port target-port admin-port [flags]
  local inbound=$1 target=$2 admin=$3
  shift 3
  target/release/lameduck-proxy --inbound-addr "127.0.0.1:$inbound" --inbound-target "127.0.0.1:$target" \
    --outbound-addr "127.0.0.1:$((admin - 1))" --admin-addr "127.0.0.1:$admin" --log-level warn "$@" &
}
lameduck_start "$lameduck" "$app" 18186
proxy=$!
# And with two worker threads (`--cores 2`), the match for nginx's `auto` on this machine.
lameduck_start "$lameduck2" "$app" 18189 --cores 2
proxy2=$!
# Inbound HTTP/2 goes to the app as HTTP/2, so this one's app is the app's h2c port.
lameduck_start "$lameduck_h2" "$app_h2" 18212
proxy_h2=$!
cleanup() {
  kill "$proxy" "$proxy2" "$proxy_h2" 2>/dev/null || true
  for name in app nginx1 nginx_auto; do nginx -c "$work/$name/nginx.conf" -p "$work/$name" -s stop 2>/dev/null || true; done
  for name in haproxy1 haproxy2; do
    if [[ -f $work/$name/haproxy.pid ]]; then kill "$(cat "$work/$name/haproxy.pid")" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
for admin in 18186 18189 18212; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/ready" >/dev/null && break; sleep 0.05; done
done

# CPU seconds (user + system) used so far by a process and its children's threads, in clock ticks.
ticks() { local total=0 pid; for pid in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done; echo "$total"; }
workers() { pgrep -P "$(cat "$work/$1/nginx.pid")" | tr '\n' ' '; }
hz=$(getconf CLK_TCK)
# wrk's latency lines ("50%  1.23ms") to milliseconds.
to_ms() { awk '{v=$2; u=v; sub(/[0-9.]+/,"",u); sub(/[a-z]+$/,"",v); m=(u=="us")?0.001:(u=="s")?1000:1; printf "%.3f", v*m}'; }
# h2load's per-request log (start, status, microseconds) to "p50 p99" in milliseconds.
h2_percentiles() { cut -f3 "$1" | sort -n | awk '{v[NR]=$1} END {if (NR) printf "%.3f %.3f\n", v[int(NR*0.5)+1]/1000, v[int(NR*0.99)+1]/1000; else print "0 0"}'; }
# CPU per request (the proxy's own user + system time over the requests it served) is the steadier
# figure when other tenants of the host make req/s swing: on a CPU-bound 2-core machine it is what
# throughput follows.
declare -A rps p50 p99 cpu by_round p99_by_round cpu_by_round
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR%2)? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
best() { tr ' ' '\n' | grep -v '^$' | sort -g | tail -1; }
# One run: sets r, a (p50), b (p99), c (CPU per request) and errors.
run_wrk() { # port pids
  # shellcheck disable=SC2086 # a list of pids
  before=$(ticks $2)
  # shellcheck disable=SC2086 # an optional command prefix
  out=$($client wrk -t2 -c64 -d"${duration}s" --latency "http://127.0.0.1:$1/")
  # shellcheck disable=SC2086
  after=$(ticks $2)
  r=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  a=$(grep -E '^ +50%' <<<"$out" | to_ms)
  b=$(grep -E '^ +99%' <<<"$out" | to_ms)
  errors=$(grep -E 'Socket errors|Non-2xx' <<<"$out" || true)
}
run_h2load() { # port pids
  # shellcheck disable=SC2086
  before=$(ticks $2)
  out=$(h2load -c 64 -m 10 -t 2 -D "$duration" --log-file="$work/h2.log" "http://127.0.0.1:$1/" 2>&1)
  # shellcheck disable=SC2086
  after=$(ticks $2)
  r=$(awk '/^finished in/ {print $4}' <<<"$out")
  total=$(awk '/^requests:/ {print $8}' <<<"$out")
  read -r a b < <(h2_percentiles "$work/h2.log")
  errors=$(awk '/^requests:/ && ($10 + $12 + $14) > 0 {print "failed " $10 ", errored " $12 ", timeout " $14}' <<<"$out")
}
rounds_of() { # tool target...
  local tool=$1 round i name port pids
  shift
  local targets=("$@")
  for round in $(seq "$rounds"); do
    # Each round starts one target later, so none always runs right after the heaviest (direct)
    # or always first: the host's load comes and goes in spells of seconds.
    for i in "${!targets[@]}"; do
      name=${targets[(i + round - 1) % ${#targets[@]}]}
      client=
      case $name in
        pinned:*) client="taskset -c 0" ;;&
        pinned:lameduck) port=$lameduck pids=$proxy ;;
        pinned:haproxy-1t) port=$haproxy1 pids=$(cat "$work/haproxy1/haproxy.pid") ;;
        pinned:nginx-1w) port=$nginx1 pids=$(workers nginx1) ;;
        direct) port=$app pids=$(workers app) ;;
        lameduck) port=$lameduck pids=$proxy ;;
        lameduck-2c) port=$lameduck2 pids=$proxy2 ;;
        nginx-1w) port=$nginx1 pids=$(workers nginx1) ;;
        nginx-auto) port=$nginx_auto pids=$(workers nginx_auto) ;;
        haproxy-1t) port=$haproxy1 pids=$(cat "$work/haproxy1/haproxy.pid") ;;
        haproxy-2t) port=$haproxy2 pids=$(cat "$work/haproxy2/haproxy.pid") ;;
        h2:direct) port=$app_h2 pids=$(workers app) ;;
        h2:lameduck) port=$lameduck_h2 pids=$proxy_h2 ;;
        h2:haproxy-1t) port=$haproxy1_h2 pids=$(cat "$work/haproxy1/haproxy.pid") ;;
        h2:haproxy-1t-h2) port=$haproxy1_h2up pids=$(cat "$work/haproxy1/haproxy.pid") ;;
        h2:nginx-1w) port=$nginx1_h2 pids=$(workers nginx1) ;;
      esac
      "run_$tool" "$port" "$pids"
      c=$(awk -v t=$((after - before)) -v n="$total" -v hz="$hz" 'BEGIN {printf "%.2f", n ? t / hz * 1e6 / n : 0}')
      printf 'round %s %-16s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  CPU %6.2f us/req %s\n' \
        "$round" "$name" "$r" "$a" "$b" "$c" "$errors"
      rps[$name]+="$r "; p50[$name]+="$a "; p99[$name]+="$b "; cpu[$name]+="$c "
      # shellcheck disable=SC2034 # read through a nameref in paired()
      { by_round[$name,$round]=$r; p99_by_round[$name,$round]=$b; cpu_by_round[$name,$round]=$c; }
    done
  done
}
summary() { # title target...
  echo
  echo "$1"
  shift
  for name in "$@"; do
    printf '  %-16s %10.0f req/s (best %6.0f)  p50 %7.3f ms  p99 %7.3f ms  CPU %6.2f us/req\n' "$name" \
      "$(median <<<"${rps[$name]}")" "$(best <<<"${rps[$name]}")" "$(median <<<"${p50[$name]}")" \
      "$(median <<<"${p99[$name]}")" "$(median <<<"${cpu[$name]}")"
  done
}
# Rounds are paired: each round's runs follow one another within seconds, so the median of the
# per-round ratios is less swayed by slow changes in the host's load than the ratio of medians.
paired() { # table ours reference
  local -n table=$1
  for round in $(seq "$rounds"); do
    awk -v l="${table[$2,$round]}" -v n="${table[$3,$round]}" 'BEGIN {printf "%.3f ", n ? l/n : 0}'
  done
}
ratios() { # "ours reference"...
  local pair ours ref
  for pair in "$@"; do
    read -r ours ref <<<"$pair"
    printf '  %s / %s, req/s per round: %s-> median x%.2f; p99 per round median x%.2f; CPU per request per round median x%.2f\n' \
      "$ours" "$ref" "$(paired by_round "$ours" "$ref")" "$(paired by_round "$ours" "$ref" | median)" \
      "$(paired p99_by_round "$ours" "$ref" | median)" "$(paired cpu_by_round "$ours" "$ref" | median)"
    awk -v ours="$ours" -v ref="$ref" -v l="$(median <<<"${rps[$ours]}")" -v n="$(median <<<"${rps[$ref]}")" \
      -v lp="$(median <<<"${p99[$ours]}")" -v np="$(median <<<"${p99[$ref]}")" \
      -v lc="$(median <<<"${cpu[$ours]}")" -v nc="$(median <<<"${cpu[$ref]}")" \
      -v lb="$(best <<<"${rps[$ours]}")" -v nb="$(best <<<"${rps[$ref]}")" \
      'BEGIN { printf "  %s / %s, of medians: throughput x%.2f (best x%.2f), p99 x%.2f, CPU per request x%.2f\n", ours, ref, l/n, lb/nb, lp/np, lc/nc }'
  done
}

h1=(direct lameduck lameduck-2c nginx-1w nginx-auto haproxy-1t haproxy-2t)
h2=(h2:direct h2:lameduck h2:haproxy-1t h2:haproxy-1t-h2 h2:nginx-1w)
echo "HTTP/1.1: wrk -t2 -c64 -d${duration}s, keep-alive, $rounds rounds"
rounds_of wrk "${h1[@]}"
echo
echo "HTTP/2, h2c with prior knowledge: h2load -c 64 -m 10 -t 2 -D $duration, $rounds rounds"
echo "  (h2:lameduck and h2:haproxy-1t-h2 reach the app over h2c; h2:haproxy-1t and h2:nginx-1w over HTTP/1.1)"
rounds_of h2load "${h2[@]}"

# Pinned: the app and the one-thread proxies on CPU 1, so each proxy shares its core with the
# app only, and the client (CPU 0) never takes the proxy's core when a response wakes it.
for pid in $(workers app) $proxy $(cat "$work/haproxy1/haproxy.pid") $(workers nginx1); do
  taskset -apc 1 "$pid" >/dev/null
done
h1_pinned=(pinned:lameduck pinned:haproxy-1t pinned:nginx-1w)
echo
echo "HTTP/1.1 pinned (wrk on CPU 0; the proxy and the app on CPU 1): wrk -t2 -c64 -d${duration}s, $rounds rounds"
rounds_of wrk "${h1_pinned[@]}"

summary "HTTP/1.1, median of $rounds rounds (wrk -t2 -c64 -d${duration}s, 2 cores shared by client, proxy and app):" "${h1[@]}"
ratios "lameduck haproxy-1t" "lameduck-2c haproxy-2t" "lameduck nginx-1w" "lameduck nginx-auto" "lameduck-2c nginx-auto"
summary "HTTP/1.1 pinned, median of $rounds rounds (wrk on CPU 0; the proxy and the app on CPU 1):" "${h1_pinned[@]}"
ratios "pinned:lameduck pinned:haproxy-1t" "pinned:lameduck pinned:nginx-1w"
summary "HTTP/2 inbound, median of $rounds rounds (h2load -c 64 -m 10 -t 2 -D $duration):" "${h2[@]}"
ratios "h2:lameduck h2:haproxy-1t-h2" "h2:lameduck h2:haproxy-1t" "h2:lameduck h2:nginx-1w"
echo
echo "proxy RSS after the wrk runs: $(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$proxy/status")"
kill "$proxy" "$proxy2" "$proxy_h2"; wait "$proxy" "$proxy2" "$proxy_h2" 2>/dev/null || true
target/release/examples/idle_connections 10000
target/release/examples/drain_under_load 64 3

#!/usr/bin/env bash
# Fuzzes lameduck-proxy's HTTP/1 framing: the relay's parsers against the independent reference
# decoder and hyper (crates/proxy/src/framing/differential.rs), with cargo-fuzz and libFuzzer.
#
#   Usage: bash crates/proxy/bench/fuzz.sh [MINUTES]
#
# MINUTES (default 10) is shared by the three targets (chunked_body, request_head,
# response_head), run one after another. Prints per target: executions per second, total
# executions, corpus size and findings. A finding is a disagreement (the check panics): its input
# is kept, minimised, and its class noted; fuzzing then goes on with that class allowed
# (LAMEDUCK_DIFFERENTIAL_ALLOW), so one finding does not hide the next. Exits 1 on any finding.
#
# The corpus grows in $LAMEDUCK_FUZZ_CORPUS (default /tmp/lameduck-fuzz-corpus), seeded from
# crates/proxy/fuzz/corpus, which is only read; findings go to $LAMEDUCK_FUZZ_OUT (default
# /tmp/lameduck-fuzz). Needs the nightly toolchain; installs cargo-fuzz (pinned) if missing.
# The targets build in crates/proxy/fuzz/target (about 1 GiB; delete it when done).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

minutes=${1:-10}
if ! [[ $minutes =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [MINUTES]   (a whole number of minutes, default 10)" >&2
  exit 2
fi
cargo_fuzz_version=0.13.2
targets=(chunked_body request_head response_head)
corpus_root=${LAMEDUCK_FUZZ_CORPUS:-/tmp/lameduck-fuzz-corpus}
out_root=${LAMEDUCK_FUZZ_OUT:-/tmp/lameduck-fuzz}
# Seconds spent minimising each finding, on top of the fuzzing time.
minimise_seconds=${LAMEDUCK_FUZZ_MINIMISE_SECONDS:-15}
# Restarts per target after findings; past this, the target stops early.
max_runs=40

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 2
fi
if [[ $(cargo +nightly fuzz --version 2>/dev/null) != *"$cargo_fuzz_version"* ]]; then
  echo "installing cargo-fuzz $cargo_fuzz_version" >&2
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

# The targets build with the workspace's pinned versions (cargo adds libfuzzer-sys).
cp ../../Cargo.lock fuzz/Cargo.lock
# No sanitizer: the crate forbids unsafe code, and without ASan it runs several times faster.
# Debug assertions on, so arithmetic overflow in the framing panics too.
echo "building the fuzz targets (cargo +nightly fuzz build)" >&2
cargo +nightly fuzz build --sanitizer none --debug-assertions >&2
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir=fuzz/target/$triple/release

seconds_each=$((minutes * 60 / ${#targets[@]}))
found_any=0
summary=()

# The panic message of one input, as the check prints it (class, input, each side's answer).
finding_text() { # binary file
  { RUST_BACKTRACE=0 "$1" "$2" 2>&1 || true; } | sed -n '/^differential finding \[/,/^$/p' | sed '/^stack backtrace/,$d'
}

for target in "${targets[@]}"; do
  corpus=$corpus_root/$target
  out=$out_root/$target
  mkdir -p "$corpus"
  rm -rf "$out"
  mkdir -p "$out"
  allow=$out/allowed-classes
  : >"$allow"
  findings=()
  remaining=$seconds_each
  fuzzed=0
  execs=0
  runs=0
  echo "== $target: ${seconds_each}s" >&2
  while ((remaining > 0 && runs < max_runs)); do
    runs=$((runs + 1))
    log=$out/run-$runs.log
    started=$SECONDS
    status=0
    LAMEDUCK_DIFFERENTIAL_ALLOW=$allow RUST_BACKTRACE=0 "$bin_dir/$target" "$corpus" fuzz/corpus/"$target" \
      -dict=fuzz/http.dict -max_len=4096 -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
      -max_total_time="$remaining" -artifact_prefix="$out/" >"$log" 2>&1 || status=$?
    elapsed=$((SECONDS - started))
    fuzzed=$((fuzzed + elapsed))
    remaining=$((remaining - elapsed))
    run_execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    execs=$((execs + ${run_execs:-0}))
    if ((status == 0)); then
      break
    fi
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    class=$(sed -n 's/^differential finding \[\(.*\)\]$/\1/p' "$log" | head -1)
    if [[ -z $artifact ]]; then
      echo "   $target stopped without an input to show (exit $status); see $log" >&2
      findings+=("?? exit $status without a crash input: $log")
      break
    fi
    if [[ -z $class ]]; then
      # Not a disagreement but a crash of its own (an overflow, say): it cannot be allowed.
      findings+=("crash: $(grep -m1 'panicked at' -A1 "$log" | tr '\n' ' ') [$artifact]")
      echo "   crash, not a disagreement: $artifact" >&2
      break
    fi
    echo "   finding after ${fuzzed}s: $class" >&2
    echo "$class" >>"$allow"
    findings+=("$class [$artifact]")
  done

  # Minimise each finding within its class: every other class is allowed meanwhile.
  details=()
  for entry in "${findings[@]}"; do
    [[ $entry == *" ["*"]" ]] || { details+=("$entry"); continue; }
    class=${entry% \[*}
    artifact=${entry##* \[}
    artifact=${artifact%]}
    if [[ $entry == crash:* ]]; then
      details+=("$entry")
      continue
    fi
    minimised=$artifact.min
    LAMEDUCK_DIFFERENTIAL_ONLY=$class RUST_BACKTRACE=0 "$bin_dir/$target" -minimize_crash=1 \
      -max_total_time="$minimise_seconds" -exact_artifact_path="$minimised" "$artifact" >"$out/minimise.log" 2>&1 || true
    [[ -s $minimised ]] || minimised=$artifact
    details+=("$(LAMEDUCK_DIFFERENTIAL_ONLY=$class finding_text "$bin_dir/$target" "$minimised")
  file: $minimised")
  done

  corpus_size=$(find "$corpus" -type f | wc -l)
  rate=$((fuzzed > 0 ? execs / fuzzed : 0))
  line="$target: ${rate} exec/s, ${execs} executions in ${fuzzed}s, corpus ${corpus_size} files, ${#findings[@]} findings"
  summary+=("$line")
  echo "$line"
  for detail in "${details[@]}"; do
    echo "$detail" | sed 's/^/    /'
  done
  ((${#findings[@]} == 0)) || found_any=1
done

echo
echo "summary (${minutes} min shared by ${#targets[@]} targets; corpus in $corpus_root, findings in $out_root):"
printf '  %s\n' "${summary[@]}"
exit "$found_any"

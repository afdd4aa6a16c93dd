#!/bin/sh
# run-fuzz.sh — run libFuzzer binaries (build/fuzz/fuzz_NAME, made by
# `make fuzz`) for a bounded time each and report what they found.
#
#   sh tests/fuzz/run-fuzz.sh build/fuzz/fuzz_frame build/fuzz/fuzz_config ...
#
# Each binary fuzzes with tests/fuzz/corpus/NAME/ as a read-only seed and a
# scratch corpus DIR/corpus/NAME/ (DIR = the binary's folder) that keeps
# growing from run to run; libFuzzer's output goes to DIR/logs/NAME.log.
# A crash, leak, timeout or out-of-memory input is copied into
# tests/fuzz/corpus/NAME/ under libFuzzer's name for it (crash-<sha1>, ...),
# so that the replay in `make test` keeps failing until the bug is fixed.
# Run from the repository root. Environment:
#   FUZZ_SECONDS  time per binary (default 60)
#   FUZZ_TIMEOUT  seconds one input may take before it counts as a hang (25)
#   FUZZ_MAX_LEN  largest input to try (default: libFuzzer's guess from the
#                 seeds, at least 4096 bytes)
# Exit status 0 when every binary ran and found nothing, 1 otherwise.
set -u
seconds=${FUZZ_SECONDS:-60}
timeout=${FUZZ_TIMEOUT:-25}
max_len=${FUZZ_MAX_LEN:-}
seed_root=tests/fuzz/corpus
findings=0
failures=0

if [ ! -d "$seed_root" ]; then
    echo "run-fuzz: run from the repository root ($seed_root not found)" >&2
    exit 1
fi
if [ "$#" -eq 0 ]; then
    echo "usage: sh tests/fuzz/run-fuzz.sh build/fuzz/fuzz_NAME..." >&2
    exit 2
fi

# Copy every artifact of one run into the seed corpus; prints what it kept.
keep_artifacts() {
    artifacts=$1
    seed=$2
    kept=""
    for a in "$artifacts"/crash-* "$artifacts"/leak-* "$artifacts"/timeout-* "$artifacts"/oom-*; do
        [ -f "$a" ] || continue
        cp "$a" "$seed/" && kept="$kept $seed/$(basename "$a")"
    done
    echo "$kept"
}

for bin in "$@"; do
    base=$(basename "$bin")
    name=${base#fuzz_}
    dir=$(dirname "$bin")
    seed=$seed_root/$name
    work=$dir/corpus/$name
    log=$dir/logs/$name.log
    artifacts=$dir/artifacts/$name/$(date +%Y%m%d-%H%M%S)
    if [ ! -x "$bin" ] || [ ! -d "$seed" ]; then
        echo "$base: cannot run: $bin is not an executable or $seed is missing" >&2
        failures=$((failures + 1))
        continue
    fi
    mkdir -p "$work" "$artifacts" "$dir/logs"
    echo "== $base: ${seconds}s, seeds $seed, corpus $work, log $log"
    len_opt=${max_len:+-max_len=$max_len}
    # shellcheck disable=SC2086 # $len_opt is empty or one word
    "$bin" -max_total_time="$seconds" -timeout="$timeout" -print_final_stats=1 \
        -artifact_prefix="$artifacts/" $len_opt "$work" "$seed" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(sed -n 's/^#[0-9].*[[:space:]]cov: \([0-9][0-9]*\) ft: \([0-9][0-9]*\) corp: \([0-9][0-9]*\).*/cov \1, features \2, corpus \3/p' "$log" | tail -n 1)
    kept=$(keep_artifacts "$artifacts" "$seed")
    [ "${speed:-0}" = 0 ] && speed="?"
    echo "$base: ${execs:-0} executions (${speed}/s), ${cov:-no coverage line}"
    if [ -n "$kept" ]; then
        findings=$((findings + 1))
        echo "$base: FOUND a failing input, kept as:$kept"
        grep -E '^==[0-9]+==ERROR|^SUMMARY:|runtime error:|deadly signal|ALARM:|out-of-memory' "$log" | head -n 6
        grep -E '^ +#[0-9]+ ' "$log" | grep -v -E 'fuzzer::|libc_start|_start | in main ' | head -n 8
        echo "$base: full report in $log; replay with build/tests/fuzz/replay_$base FILE"
    elif [ "$rc" -ne 0 ]; then
        failures=$((failures + 1))
        echo "$base: libFuzzer exited with status $rc and left no input; see $log"
        tail -n 15 "$log"
    else
        echo "$base: no findings"
        rmdir "$artifacts" 2>/dev/null
    fi
done
echo "run-fuzz: $# fuzzers, $findings with findings, $failures that did not run"
[ "$findings" -eq 0 ] && [ "$failures" -eq 0 ]

#!/bin/sh
# run.sh — run the Schakel benchmarks and print one summary with the ratios.
#
#   sh tests/bench/run.sh [build/bench/bench_X ...]     (make bench does this)
#
# Runs each given binary once (default: every $BUILD/bench/bench_*), in the
# given order, except the libzmq relay baseline (bench_relay), which runs
# last with the message size and count the backlog bench used, so that the
# ratio compares like with like. Each bench writes its JSON into
# tests/bench/results/ (git-ignored); this script reads the top-level
# numbers back, prints a summary table and writes results/summary.json.
# BENCH_COUNT=N passes --count N to every bench (a quick run). Exit status:
# 0 when every bench completed, 1 otherwise. Benchmarks are never part of
# `make test`: the numbers are for reading, not for asserting.
set -u

BUILD=${BUILD:-build}
export BUILD
here=$(cd "$(dirname "$0")" && pwd)
results="$here/results"
mkdir -p "$results" || exit 1

if [ "$#" -eq 0 ]; then
    set -- "$BUILD"/bench/bench_*
fi

# A top-level scalar of a bench's JSON: every one sits on its own line as
# `  "key": value,` (strings without quotes in the output).
json_get() {
    [ -f "$1" ] || return 0
    sed -n "s/^  \"$2\": //p" "$1" | head -n 1 | sed 's/,$//; s/^"//; s/"$//'
}

# a / b with three decimals, or n/a
ratio() {
    awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.3f", a / b; else printf "n/a" }'
}

mib() {
    awk -v k="${1:-0}" 'BEGIN { printf "%.1f", k / 1024 }'
}

failed=0
ran=""
relay_bin=""
run_one() {
    bin=$1
    shift
    name=$(basename "$bin")
    short=${name#bench_}
    json="$results/$short.json"
    rm -f "$json"
    echo "== $bin $* --json $json"
    "$bin" "$@" --json "$json"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "run.sh: $name exited with status $rc" >&2
        failed=$((failed + 1))
    fi
    ran="$ran $short"
}

count_args=""
[ -n "${BENCH_COUNT:-}" ] && count_args="--count $BENCH_COUNT"

for bin in "$@"; do
    if [ ! -x "$bin" ]; then
        echo "run.sh: $bin is not an executable (make bench builds it)" >&2
        failed=$((failed + 1))
        continue
    fi
    case $(basename "$bin") in
    bench_relay) relay_bin=$bin ;;
    # shellcheck disable=SC2086 # count_args is empty or two words
    *) run_one "$bin" $count_args ;;
    esac
done

backlog="$results/backlog.json"
relay="$results/relay.json"
if [ -n "$relay_bin" ]; then
    relay_args=$count_args
    size=$(json_get "$backlog" item_bytes)
    count=$(json_get "$backlog" count)
    [ -n "$size" ] && relay_args="$relay_args --size $size"
    [ -z "$count_args" ] && [ -n "$count" ] && relay_args="$relay_args --count $count"
    # shellcheck disable=SC2086
    run_one "$relay_bin" $relay_args
fi

# ------------------------------------------------------------------ summary
yesno() { [ "$1" = true ] && echo met || echo "not met"; }

echo
echo "== summary ($results)"
printf '%-34s %s\n' "measure" "value"
printf '%-34s %s\n' "----------------------------------" "----------------------------------------"
pub_rate=""
drain_rate=""
relay_rate=""
case " $ran " in
*" backlog "*)
    pub_rate=$(json_get "$backlog" publish_items_per_s)
    drain_rate=$(json_get "$backlog" drain_deliveries_per_s)
    printf '%-34s %s\n' "backlog: completed" "$(json_get "$backlog" completed) ($(json_get "$backlog" count) signals of $(json_get "$backlog" item_bytes) bytes)"
    printf '%-34s %s\n' "backlog: publish" "$pub_rate items/s, $(json_get "$backlog" publishes_per_s) publishes/s"
    hwm=$(json_get "$backlog" queued_hwm_kib)
    rss_met=$(sed -n 's/.*"peak_rss_under_100_mib": {.*"met": \([a-z]*\)}.*/\1/p' "$backlog" 2>/dev/null)
    printf '%-34s %s\n' "backlog: broker peak RSS, queued" "$(mib "$hwm") MiB (< 100 MiB: $(yesno "$rss_met"))"
    printf '%-34s %s\n' "backlog: broker RSS per message" "$(json_get "$backlog" rss_growth_bytes_per_message) bytes"
    order_met=$(sed -n 's/.*"drain_in_order": {"met": \([a-z]*\)}.*/\1/p' "$backlog" 2>/dev/null)
    printf '%-34s %s\n' "backlog: drains in order" "$(yesno "$order_met")"
    rate_met=$(sed -n 's/.*"drain_rate": {.*"met": \([a-z]*\)}.*/\1/p' "$backlog" 2>/dev/null)
    printf '%-34s %s\n' "backlog: drain" "$drain_rate deliveries/s (>= 20000: $(yesno "$rate_met"))"
    problem=$(json_get "$backlog" problem)
    [ -n "$problem" ] && printf '%-34s %s\n' "backlog: problem" "$problem"
    ;;
esac
case " $ran " in
*" relay "*)
    relay_rate=$(json_get "$relay" relay_messages_per_s)
    printf '%-34s %s\n' "relay: completed" "$(json_get "$relay" completed) ($(json_get "$relay" count) messages of $(json_get "$relay" message_bytes) bytes)"
    printf '%-34s %s\n' "relay: libzmq CURVE relay" "$relay_rate messages/s"
    problem=$(json_get "$relay" problem)
    [ -n "$problem" ] && printf '%-34s %s\n' "relay: problem" "$problem"
    ;;
esac
publish_ratio=$(ratio "$pub_rate" "$relay_rate")
drain_ratio=$(ratio "$drain_rate" "$relay_rate")
printf '%-34s %s\n' "ratio: publish items/s / relay" "$publish_ratio"
printf '%-34s %s\n' "ratio: drain deliveries/s / relay" "$drain_ratio"

num() { case $1 in '' | n/a) echo null ;; *) echo "$1" ;; esac; }
{
    echo "{"
    echo "  \"benches\": \"$(echo "$ran" | sed 's/^ //')\","
    echo "  \"publish_items_per_s\": $(num "$pub_rate"),"
    echo "  \"drain_deliveries_per_s\": $(num "$drain_rate"),"
    echo "  \"relay_messages_per_s\": $(num "$relay_rate"),"
    echo "  \"publish_over_relay\": $(num "$publish_ratio"),"
    echo "  \"drain_over_relay\": $(num "$drain_ratio"),"
    echo "  \"failed\": $failed"
    echo "}"
} >"$results/summary.json"

[ "$failed" -eq 0 ]

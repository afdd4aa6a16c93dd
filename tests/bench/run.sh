#!/bin/sh
# run.sh — run the Schakel benchmarks; print one summary of every measure,
# the ratios Schakel / libzmq baseline and every target of the performance
# issue as met / not met / not measured; write results/summary.json; draw
# results/latency_cdf.png (latency CDFs of the relay and of Schakel).
#
#   sh tests/bench/run.sh [build/bench/bench_X ...]     (make bench passes its list)
#
# Without arguments it runs every $BUILD/bench/bench_*. The baseline
# (bench_relay) runs first and bench_throughput right after it, so that the
# two runs that are compared see the machine in the same state; the others
# follow in the order given. Each bench writes tests/bench/results/<name>.json
# (git-ignored; top-level scalars one per line, read back here with sed).
# BENCH_COUNT=N passes --count N to every bench that has that option (a
# quick run). Exit status: 0 when every bench ran to completion, 1 when one
# failed or did not complete. Missing a target does not change the status:
# the targets are for reading. Benchmarks are never part of `make test`.
set -u

BUILD=${BUILD:-build}
export BUILD
here=$(cd "$(dirname "$0")" && pwd)
results="$here/results"
mkdir -p "$results" || exit 1

if [ "$#" -eq 0 ]; then
    set -- "$BUILD"/bench/bench_*
fi

# ------------------------------------------------------------------ helpers

# A top-level scalar of a bench's JSON (`  "key": value,` on its own line);
# strings without their quotes, null as empty.
json_get() {
    [ -f "$1" ] || return 0
    sed -n "s/^  \"$2\": //p" "$1" | head -n 1 | sed 's/,$//; s/^"//; s/"$//; s/^null$//'
}

# a / b with three decimals, or empty
ratio() {
    awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a != "" && b != "" && b + 0 > 0) printf "%.3f", a / b }'
}

# the larger of two numbers (either may be empty)
best() {
    awk -v a="${1:-}" -v b="${2:-}" 'BEGIN {
        if (a == "") print b; else if (b == "") print a; else print (a + 0 >= b + 0 ? a : b) }'
}

# format a number: fmt PRINTF-FORMAT VALUE [SCALE]; "n/a" when empty
fmt() {
    awk -v f="$1" -v x="${2:-}" -v s="${3:-1}" 'BEGIN { if (x == "") printf "n/a"; else printf f, x / s }'
}

# the same with a unit after it, or only "n/a"
fmtu() {
    if [ -n "${2:-}" ]; then echo "$(fmt "$1" "$2" "${4:-1}")$3"; else echo "n/a"; fi
}

# verdicts: cmp OP VALUE LIMIT -> met / not met / not measured
cmp() {
    awk -v op="$1" -v a="${2:-}" -v b="${3:-}" 'BEGIN {
        if (a == "" || b == "") { print "not measured"; exit }
        a += 0; b += 0
        ok = (op == "<=") ? a <= b : (op == "<") ? a < b : (op == ">=") ? a >= b : a > b
        print ok ? "met" : "not met" }'
}

num() { case ${1:-} in '' | n/a) echo null ;; *) echo "$1" ;; esac; }

row() { printf '%-11s %-50s %s\n' "$1" "$2" "$3"; }

# ------------------------------------------------------------------ running

failed=0
failed_names=""
ran=""
run_one() {
    bin=$1
    name=$(basename "$bin")
    short=${name#bench_}
    json="$results/$short.json"
    help=$("$bin" --help 2>&1)
    set --
    if [ -n "${BENCH_COUNT:-}" ]; then
        case $help in
        *--count*) set -- --count "$BENCH_COUNT" ;;
        *) echo "run.sh: $name has no --count; BENCH_COUNT does not apply to it" ;;
        esac
    fi
    rm -f "$json"
    case $short in
    relay) rm -f "$results"/cdf_relay_*.dat ;;
    throughput) rm -f "$results"/cdf_schakel_*.dat ;;
    esac
    echo "== $bin $* --json $json"
    started=$(date +%s)
    "$bin" "$@" --json "$json"
    rc=$?
    completed=$(json_get "$json" completed)
    echo "== $name: exit status $rc, completed: ${completed:-no results}, $(($(date +%s) - started)) s"
    if [ "$rc" -ne 0 ] || [ "$completed" != true ]; then
        echo "run.sh: $name did not complete (exit status $rc)" >&2
        failed=$((failed + 1))
        failed_names="$failed_names $short"
    fi
    ran="$ran $short"
}

order=""
for want in bench_relay bench_throughput; do
    for bin in "$@"; do
        [ "$(basename "$bin")" = "$want" ] && order="$order $bin"
    done
done
for bin in "$@"; do
    case $(basename "$bin") in
    bench_relay | bench_throughput) ;;
    *) order="$order $bin" ;;
    esac
done

for bin in $order; do
    if [ ! -x "$bin" ]; then
        echo "run.sh: $bin is not an executable (make bench builds it)" >&2
        failed=$((failed + 1))
        failed_names="$failed_names $(basename "$bin")"
        continue
    fi
    run_one "$bin"
done

did_run() { case " $ran " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# A bench's numbers count for a target only when it ran to completion.
bench_complete() { did_run "$1" && [ "$(json_get "$results/$1.json" completed)" = true ]; }

# The results of this run only: a bench that did not run may have left a
# file from an earlier run, which must not be read as this run's.
result_of() { if did_run "$1"; then echo "$results/$1.json"; else echo "/nonexistent/$1.json"; fi; }
relay=$(result_of relay)
tp=$(result_of throughput)
backlog=$(result_of backlog)
policy=$(result_of policy)
import=$(result_of import)

# latency rates measured by the relay or by Schakel in this run
rates=$(cat "$relay" "$tp" 2>/dev/null | sed -n 's/^  "lat_\([0-9]*\)_p50_us".*/\1/p' | sort -n -u)

# ------------------------------------------------------------------ summary

echo
echo "== summary ($results)"
echo "machine: $(nproc 2>/dev/null || echo '?') CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null) (other work on the machine shows in every figure, most in the latencies)"
row "bench" "measure" "value"
row "-----------" "--------------------------------------------------" "----------------------------------------"

problem_row() {
    p=$(json_get "$2" problem)
    [ -n "$p" ] && row "$1" "problem" "$p"
    return 0
}

latency_rows() { # bench file unit
    for r in $rates; do
        p50=$(json_get "$2" "lat_${r}_p50_us")
        [ -n "$p50" ] || continue
        row "$1" "latency at $r $3/s: p50 / p99 / p99.9" \
            "$(fmt %.0f "$p50") / $(fmt %.0f "$(json_get "$2" "lat_${r}_p99_us")") / $(fmt %.0f "$(json_get "$2" "lat_${r}_p999_us")") us ($(json_get "$2" "lat_${r}_samples") samples)"
    done
}

if did_run relay; then
    row relay "completed" "$(json_get "$relay" completed) ($(json_get "$relay" count) messages of $(json_get "$relay" message_bytes) bytes, fan-out $(json_get "$relay" subscribers), CURVE)"
    row relay "publishes/s" "$(fmt %.0f "$(json_get "$relay" relay_publishes_per_s)")"
    row relay "deliveries/s" "$(fmt %.0f "$(json_get "$relay" relay_deliveries_per_s)")"
    row relay "CPU s per 1000 messages (relay + its libzmq)" "$(fmt %.4f "$(json_get "$relay" relay_cpu_s_per_1000)") (relay thread alone $(fmt %.4f "$(json_get "$relay" relay_thread_cpu_s_per_1000)"))"
    row relay "peak RSS (the whole bench process)" "$(fmt %.1f "$(json_get "$relay" peak_rss_kib)" 1024) MiB"
    [ -n "$(json_get "$relay" loadavg_start)" ] && row relay "load average at the start / end" "$(json_get "$relay" loadavg_start) / $(json_get "$relay" loadavg_end) ($(json_get "$relay" cpus) CPUs)"
    latency_rows relay "$relay" msg
    problem_row relay "$relay"
else
    row relay "" "not run"
fi

if did_run throughput; then
    row throughput "completed" "$(json_get "$tp" completed) ($(json_get "$tp" count) items of $(json_get "$tp" item_bytes) bytes per run, $(json_get "$tp" recipients) recipients, $(json_get "$tp" rules) rules)"
    for p in p1 p4; do
        n="1 publisher"
        [ "$p" = p4 ] && n="$(json_get "$tp" publishers) publishers"
        row throughput "$n: items/s, publishes/s" "$(fmt %.0f "$(json_get "$tp" ${p}_items_per_s)"), $(fmt %.0f "$(json_get "$tp" ${p}_publishes_per_s)")"
        row throughput "$n: deliveries/s" "$(fmt %.0f "$(json_get "$tp" ${p}_deliveries_per_s)") ($(json_get "$tp" ${p}_deliveries) deliveries, $(json_get "$tp" ${p}_missing) missing)"
    done
    row throughput "broker CPU s per 1000 items" "$(fmt %.4f "$(json_get "$tp" broker_cpu_s_per_1000)") (clients: $(fmt %.4f "$(json_get "$tp" p1_bench_cpu_s_per_1000)") with 1 publisher)"
    row throughput "broker peak RSS during the throughput runs" "$(fmt %.1f "$(json_get "$tp" broker_peak_rss_kib)" 1024) MiB"
    [ -n "$(json_get "$tp" loadavg_start)" ] && row throughput "load average at the start / end" "$(json_get "$tp" loadavg_start) / $(json_get "$tp" loadavg_end) ($(json_get "$tp" cpus) CPUs)"
    latency_rows throughput "$tp" item
    per=""
    for r in $rates; do
        per="$per, $(json_get "$tp" "lat_${r}_items_per_publish") at $r/s"
    done
    row throughput "paced runs: publishers; items per publish" "$(json_get "$tp" latency_publishers)$per"
    problem_row throughput "$tp"
else
    row throughput "" "not run"
fi

if did_run backlog; then
    row backlog "completed" "$(json_get "$backlog" completed) ($(json_get "$backlog" count) signals of $(json_get "$backlog" item_bytes) bytes)"
    row backlog "publish items/s, publishes/s" "$(fmt %.0f "$(json_get "$backlog" publish_items_per_s)"), $(fmt %.0f "$(json_get "$backlog" publishes_per_s)")"
    row backlog "broker peak RSS with the backlog queued" "$(fmt %.1f "$(json_get "$backlog" queued_hwm_kib)" 1024) MiB"
    row backlog "broker RSS growth per queued message" "$(fmt %.2f "$(json_get "$backlog" rss_growth_bytes_per_message)") bytes"
    order_met=$(sed -n 's/.*"drain_in_order": {"met": \([a-z]*\)}.*/\1/p' "$backlog" 2>/dev/null)
    row backlog "drain deliveries/s (in order: ${order_met:-n/a})" "$(fmt %.0f "$(json_get "$backlog" drain_deliveries_per_s)")"
    row backlog "restart: start to ready" "$(fmt %.3f "$(json_get "$backlog" restart_ready_s)") s with $(json_get "$backlog" restart_pending) pending"
    problem_row backlog "$backlog"
else
    row backlog "" "not run"
fi

if did_run policy; then
    row policy "completed" "$(json_get "$policy" completed)"
    row policy "ns per decision at 10 / 100 / 1000 / 10000 rules" "$(fmt %.0f "$(json_get "$policy" ns_per_decision_10)") / $(fmt %.0f "$(json_get "$policy" ns_per_decision_100)") / $(fmt %.0f "$(json_get "$policy" ns_per_decision_1000)") / $(fmt %.0f "$(json_get "$policy" ns_per_decision_10000)")"
    row policy "ratio 10000 rules / 10 rules: paired (of medians)" "$(fmt %.3f "$(json_get "$policy" ratio_10000_over_10)") ($(fmt %.3f "$(json_get "$policy" ratio_median_10000_over_10)"))"
    problem_row policy "$policy"
else
    row policy "" "not run"
fi

if did_run import; then
    row import "completed" "$(json_get "$import" completed) ($(json_get "$import" lines) lines)"
    row import "lines/s" "$(fmt %.0f "$(json_get "$import" import_lines_per_s)")"
    row import "accepted, refused" "$(json_get "$import" accepted), $(json_get "$import" refused)"
    row import "rerun of the finished file" "$(fmt %.3f "$(json_get "$import" rerun_s)") s"
    problem_row import "$import"
else
    row import "" "not run"
fi

for short in $ran; do
    case $short in relay | throughput | backlog | policy | import) continue ;; esac
    f="$results/$short.json"
    row "$short" "completed" "$(json_get "$f" completed)"
    problem_row "$short" "$f"
done

# ------------------------------------------------------------------ ratios

relay_ok=""
tp_ok=""
bench_complete relay && relay_ok=1
bench_complete throughput && tp_ok=1
r_del=""
r_pub=""
r_cpu=""
if [ -n "$relay_ok" ] && [ -n "$tp_ok" ]; then
    r_del=$(ratio "$(best "$(json_get "$tp" p1_deliveries_per_s)" "$(json_get "$tp" p4_deliveries_per_s)")" "$(json_get "$relay" relay_deliveries_per_s)")
    r_pub=$(ratio "$(best "$(json_get "$tp" p1_items_per_s)" "$(json_get "$tp" p4_items_per_s)")" "$(json_get "$relay" relay_publishes_per_s)")
    r_cpu=$(ratio "$(json_get "$tp" broker_cpu_s_per_1000)" "$(json_get "$relay" relay_cpu_s_per_1000)")
fi
echo
echo "== Schakel / baseline (relay and throughput, both complete; else n/a)"
row ratio "deliveries/s (the better of 1 / 4 publishers)" "$(fmt %.3f "$r_del")"
row ratio "items published/s vs relay publishes/s" "$(fmt %.3f "$r_pub")"
row ratio "CPU s per 1000 (broker / relay)" "$(fmt %.3f "$r_cpu")"
p99_json=""
for r in $rates; do
    rr=""
    [ -n "$relay_ok" ] && [ -n "$tp_ok" ] && rr=$(ratio "$(json_get "$tp" "lat_${r}_p99_us")" "$(json_get "$relay" "lat_${r}_p99_us")")
    row ratio "p99 latency at $r/s" "$(fmt %.2f "$rr")"
    p99_json="$p99_json  \"p99_ratio_$r\": $(num "$rr"),
"
done

# ------------------------------------------------------------------ targets

targets_json=""
target() { # key text value-text verdict
    row target "$2" "$3: $4"
    targets_json="$targets_json    \"$1\": {\"value\": $(num "$5"), \"limit\": $(num "$6"), \"status\": \"$4\"},
"
}

echo
echo "== targets (issue #7; for reading: they do not change the exit status)"
v=""
[ -n "$r_del" ] && v=$r_del
target deliveries_ratio "Schakel deliveries/s >= 0.6 x relay" "$(fmtu %.3f "$v" " x")" "$(cmp '>=' "$v" 0.6)" "$v" 0.6

v=""
bench_complete throughput && v=$(json_get "$tp" lat_10000_p99_us)
target p99_10000 "Schakel p99 at 10,000/s <= 3 ms" "$(fmtu %.2f "$v" " ms" 1000)" "$(cmp '<=' "$v" 3000)" "$v" 3000

v=""
lim=""
if bench_complete throughput && bench_complete relay; then
    v=$(json_get "$tp" lat_5000_p99_us)
    rp=$(json_get "$relay" lat_5000_p99_us)
    [ -n "$rp" ] && lim=$(awk -v a="$rp" 'BEGIN { printf "%.1f", a + 2000 }')
fi
target p99_5000 "Schakel p99 at 5,000/s <= relay p99 + 2 ms" "$(fmtu %.2f "$v" " ms" 1000) (limit $(fmtu %.2f "$lim" " ms" 1000))" "$(cmp '<=' "$v" "$lim")" "$v" "$lim"

v=""
bench_complete throughput && v=$(json_get "$tp" broker_peak_rss_kib)
target broker_rss "broker peak RSS, throughput runs <= 32 MiB" "$(fmtu %.1f "$v" " MiB" 1024)" "$(cmp '<=' "$v" 32768)" "$v" 32768

v=""
bench_complete policy && v=$(json_get "$policy" ratio_10000_over_10)
target policy_ratio "policy ns at 10,000 rules <= 1.5 x at 10" "$(fmtu %.3f "$v" " x")" "$(cmp '<=' "$v" 1.5)" "$v" 1.5

# The backlog targets name 1,000,000 messages; a quick run says at how many.
scale=""
v=""
if bench_complete backlog; then
    n=$(json_get "$backlog" count)
    [ "${n:-0}" -lt 1000000 ] && scale=" (at $n, not 1,000,000)"
    v=$(json_get "$backlog" queued_hwm_kib)
fi
target backlog_rss "backlog of 1,000,000: broker RSS < 100 MiB" "$(fmtu %.1f "$v" " MiB" 1024)$scale" "$(cmp '<' "$v" 102400)" "$v" 102400
v=""
bench_complete backlog && v=$(json_get "$backlog" drain_deliveries_per_s)
target drain_rate "backlog drain >= 20,000 deliveries/s" "$(fmtu %.0f "$v" /s)$scale" "$(cmp '>=' "$v" 20000)" "$v" 20000
v=""
rscale=""
if bench_complete backlog; then
    v=$(json_get "$backlog" restart_ready_s)
    n=$(json_get "$backlog" restart_pending)
    [ -n "$n" ] && [ "$n" -lt 1000000 ] && rscale=" (with $n pending, not 1,000,000)"
fi
target restart "restart with 1,000,000 pending: ready < 2 s" "$(fmtu %.3f "$v" " s")$rscale" "$(cmp '<' "$v" 2)" "$v" 2

# ------------------------------------------------------------------ plot

plot="$results/latency_cdf.png"
rm -f "$plot"
# this run's CDF files
cdfs=""
for r in $rates; do
    did_run relay && [ -f "$results/cdf_relay_$r.dat" ] && cdfs="$cdfs $results/cdf_relay_$r.dat"
    did_run throughput && [ -f "$results/cdf_schakel_$r.dat" ] && cdfs="$cdfs $results/cdf_schakel_$r.dat"
done

# the curve of one CDF file for gnuplot's plot command, or nothing
curve() { # bench file colour label json
    did_run "$1" && [ -f "$2" ] || return 0
    printf "'%s' using 1:2 with lines linewidth 2 linecolor rgb '%s' title '%s, p99 %s ms'" \
        "$2" "$3" "$4" "$(fmt %.2f "$(json_get "$5" "lat_${r}_p99_us")" 1000)"
}

if ! command -v gnuplot >/dev/null 2>&1; then
    plot_note="skipped: gnuplot is not installed (make bench installs gnuplot-nox)"
elif [ -z "$cdfs" ]; then
    plot_note="skipped: no latency CDFs in this run"
else
    n=0
    for r in $rates; do n=$((n + 1)); done
    gp="$results/latency_cdf.gp"
    # one x range for every panel (whole decades), so the panels compare
    # shellcheck disable=SC2086 # the paths hold no blanks (results folder of this tree)
    xrange=$(cat $cdfs | awk '!/^#/ && $1 > 0 {
        if (min == "" || $1 < min) min = $1; if ($1 > max) max = $1 }
        END { lo = 10 ^ int(log(min) / log(10)); hi = 10 ^ int(log(max) / log(10) + 1); printf "[%g:%g]", lo, hi }')
    term=png
    gnuplot -e 'set terminal' 2>&1 | grep -q pngcairo && term=pngcairo
    {
        echo "set terminal $term size $((520 * n)),500 font ',10'"
        echo "set output '$plot'"
        echo "set multiplot layout 1,$n title 'publish -> deliver latency, CDF (relay: libzmq CURVE fan-out 3; Schakel: signed, stored, 3 recipients)'"
        echo "set logscale x"
        echo "set format x '10^{%L}'"
        echo "set xlabel 'latency (microseconds, log scale)'"
        echo "set ylabel 'fraction delivered within'"
        echo "set xrange $xrange"
        echo "set yrange [0:1.02]"
        echo "set grid xtics ytics mxtics"
        echo "set key below"
        echo "set arrow 1 from graph 0, first 0.99 to graph 1, first 0.99 nohead dashtype 2 linecolor 'gray50'"
        for r in $rates; do
            echo "set title '$r messages/s'"
            a=$(curve relay "$results/cdf_relay_$r.dat" '#1f77b4' 'relay (libzmq)' "$relay")
            b=$(curve throughput "$results/cdf_schakel_$r.dat" '#d62728' Schakel "$tp")
            if [ -n "$a" ] && [ -n "$b" ]; then
                echo "plot $a, $b"
            elif [ -n "$a$b" ]; then
                echo "plot $a$b"
            else
                echo "set label 1 'not measured' at graph 0.5, graph 0.5 center"
                echo "plot 1 notitle linecolor rgb 'white'"
                echo "unset label 1"
            fi
        done
        echo "unset multiplot"
    } >"$gp"
    if gnuplot "$gp" 2>"$results/latency_cdf.log"; then
        plot_note="$plot"
        rm -f "$results/latency_cdf.log"
    else
        plot_note="gnuplot failed: see $results/latency_cdf.log and $gp"
    fi
fi
echo "== plot: $plot_note"

# ------------------------------------------------------------------ summary.json

get() { num "$(json_get "$1" "$2")"; }
{
    echo "{"
    echo "  \"benches\": \"$(echo "$ran" | sed 's/^ //')\","
    echo "  \"failed\": $failed,"
    echo "  \"failed_benches\": \"$(echo "$failed_names" | sed 's/^ //')\","
    echo "  \"bench_count\": $(num "${BENCH_COUNT:-}"),"
    echo "  \"relay_publishes_per_s\": $(get "$relay" relay_publishes_per_s),"
    echo "  \"relay_deliveries_per_s\": $(get "$relay" relay_deliveries_per_s),"
    echo "  \"relay_cpu_s_per_1000\": $(get "$relay" relay_cpu_s_per_1000),"
    echo "  \"p1_items_per_s\": $(get "$tp" p1_items_per_s),"
    echo "  \"p1_deliveries_per_s\": $(get "$tp" p1_deliveries_per_s),"
    echo "  \"p4_items_per_s\": $(get "$tp" p4_items_per_s),"
    echo "  \"p4_deliveries_per_s\": $(get "$tp" p4_deliveries_per_s),"
    echo "  \"broker_cpu_s_per_1000\": $(get "$tp" broker_cpu_s_per_1000),"
    echo "  \"broker_peak_rss_kib\": $(get "$tp" broker_peak_rss_kib),"
    for r in $rates; do
        for q in p50 p99 p999; do
            echo "  \"relay_lat_${r}_${q}_us\": $(get "$relay" "lat_${r}_${q}_us"),"
            echo "  \"schakel_lat_${r}_${q}_us\": $(get "$tp" "lat_${r}_${q}_us"),"
        done
    done
    echo "  \"deliveries_ratio\": $(num "$r_del"),"
    echo "  \"publishes_ratio\": $(num "$r_pub"),"
    echo "  \"cpu_ratio\": $(num "$r_cpu"),"
    printf '%s' "$p99_json"
    echo "  \"backlog_queued_hwm_kib\": $(get "$backlog" queued_hwm_kib),"
    echo "  \"backlog_drain_deliveries_per_s\": $(get "$backlog" drain_deliveries_per_s),"
    echo "  \"restart_ready_s\": $(get "$backlog" restart_ready_s),"
    echo "  \"restart_pending\": $(get "$backlog" restart_pending),"
    echo "  \"policy_ratio_10000_over_10\": $(get "$policy" ratio_10000_over_10),"
    echo "  \"import_lines_per_s\": $(get "$import" import_lines_per_s),"
    echo "  \"plot\": \"$(echo "$plot_note" | sed 's/"/\\"/g')\","
    echo "  \"targets\": {"
    printf '%s' "$targets_json" | sed '$ s/},$/}/'
    echo "  }"
    echo "}"
} >"$results/summary.json"
echo "== wrote $results/summary.json"

if [ "$failed" -ne 0 ]; then
    echo "run.sh: $failed bench(es) did not complete:$failed_names" >&2
    exit 1
fi
exit 0

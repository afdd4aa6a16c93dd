#!/bin/sh
# run.sh — run test binaries, show their output, and close with one line
# "N passed, N failed" that CI reads. Counts come from cmocka's own summary
# lines ("[  PASSED  ] N test(s)." / "[  FAILED  ] N test(s), listed below:")
# and from the fuzz replay drivers' "N passed, N failed" line. A binary that
# exits non-zero without a summary (a crash, a sanitizer report) counts as
# one failure, so a crash can never pass silently. Tests cmocka reports
# skipped ("[  SKIPPED ] N test(s)", a test that cannot run here, such as
# one that needs root) count as neither, and are named in a line of their
# own before the last. A binary still running after
# SCHAKEL_TEST_BINARY_SECONDS (1200, times SCHAKEL_TEST_TIME_FACTOR) is
# stopped and counts as a failure, said so: a test that hangs (a wait
# without a bound, a lock that a failed assertion left held) costs the run
# that long, not a CI job's whole time. timeout signals its own process
# group, so brokers the binary started go with it.
set -u
bound=$((${SCHAKEL_TEST_BINARY_SECONDS:-1200} * ${SCHAKEL_TEST_TIME_FACTOR:-1}))
passed=0
failed=0
skipped=0
failed_names=""
skipped_names=""
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for bin in "$@"; do
    echo "== $bin"
    timeout --kill-after=30 "$bound" "$bin" >"$out" 2>&1
    rc=$?
    cat "$out"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "run.sh: $bin did not end within $bound s: stopped (a test that hangs?)" >&2
    fi
    p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
    rp=$(sed -n 's/^[A-Za-z_0-9]*: \([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed$/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
    rf=$(sed -n 's/^[A-Za-z_0-9]*: \([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed$/\2/p' "$out" | awk '{s+=$1} END {print s+0}')
    s=$(sed -n 's/^\[  SKIPPED \] \([0-9][0-9]*\) test.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
    skipped=$((skipped + s))
    [ "$s" -ne 0 ] && skipped_names="$skipped_names $bin"
    p=$((p + rp))
    f=$((f + rf))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
    fi
    if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
        echo "run.sh: $bin ran no test" >&2
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    [ "$f" -ne 0 ] && failed_names="$failed_names $bin"
done
[ -n "$skipped_names" ] && echo "skipped: $skipped test(s) in$skipped_names"
[ -n "$failed_names" ] && echo "failing:$failed_names"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/bin/sh
# test_demo.sh — `make demo`'s scenario (deploy/demo/run-demo.sh) as a test of
# `make test`: the eight partners' keys, the demo policy, a broker on a
# loopback port chosen at run time, and every count and outcome the demo
# checks. Runs in a fresh folder of its own under /tmp (not var/demo), removed
# at the end; on a failure the broker's log is shown first. The demo's own
# last line, "demo: N passed, N failed", is what tests/run.sh counts.
# Environment: BUILD (default build) names the folder with schakeld and schakel.
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d /tmp/schakel-demo-XXXXXX) || exit 1
trap 'rm -rf "$dir"' EXIT
BUILD=$BUILD SCHAKEL_DEMO_DIR=$dir sh "$ROOT/deploy/demo/run-demo.sh"
rc=$?
if [ "$rc" -ne 0 ] && [ -f "$dir/schakeld.log" ]; then
    echo "test_demo: the broker's log:"
    sed 's/^/   /' "$dir/schakeld.log"
fi
exit "$rc"

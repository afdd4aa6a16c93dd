#!/bin/sh
# run-broker.sh — `make run`: schakeld in the foreground on tcp://127.0.0.1:7450
# with the demo policy, for trying the CLI by hand.
#
# On first use creates var/run/ with a key per partner (`schakel keygen`), the
# broker's key, copies of the demo policy and config, and the store key and
# an empty store (`schakeld --init`); later runs keep all of it (edit var/run/policy.yaml and send SIGHUP to reload). Prints the
# environment to export for `schakel`, then execs the broker: Ctrl-C stops it.
# Environment: BUILD (default build) names the folder with schakeld and schakel.
set -eu

BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
SCHAKELD=$BUILD/schakeld
SCHAKEL=$BUILD/schakel
RUN=$ROOT/var/run
PARTNERS="gemeente politie om veiligheidshuis riec woco-maasoever woco-jekerdal brandweer"

for program in "$SCHAKELD" "$SCHAKEL"; do
    if [ ! -x "$program" ]; then
        echo "run-broker: $program is missing; run 'make all' first" >&2
        exit 1
    fi
done

mkdir -p "$RUN/keys"
# Every folder on a key's or the policy's path must not be writable by group
# or others (docs/OPERATIONS.md, "Files"): var/ is made under the umask.
chmod go-w "$ROOT/var"
chmod 700 "$RUN" "$RUN/keys"
for name in broker $PARTNERS operator; do
    if [ ! -f "$RUN/keys/$name.key" ]; then
        "$SCHAKEL" keygen "$RUN/keys/$name" >/dev/null
        echo "run-broker: new key $RUN/keys/$name.key"
    fi
done
for file in policy.yaml schakeld.yaml; do
    if [ ! -f "$RUN/$file" ]; then
        cp "deploy/demo/$file" "$RUN/$file"
        echo "run-broker: copied deploy/demo/$file to $RUN/$file"
    fi
done
# Whatever the umask: schakeld refuses a policy or config that group or
# others may write.
chmod go-w "$RUN/policy.yaml" "$RUN/schakeld.yaml"
# The store key and the store (the broker never creates a store itself):
# --init makes what is missing and says so; it never overwrites either.
if [ ! -f "$RUN/keys/store.key" ] || [ ! -f "$RUN/store.db" ]; then
    "$SCHAKELD" --init --config "$RUN/schakeld.yaml"
fi

ENDPOINT=tcp://127.0.0.1:7450
cat <<EOF

Schakel broker on $ENDPOINT (state in $RUN, policy $RUN/policy.yaml).
In another terminal, act as a partner system:

  export SCHAKEL_BROKER=$ENDPOINT
  export SCHAKEL_BROKER_KEY=$RUN/keys/broker.pub
  export SCHAKEL_KEY=$RUN/keys/woco-maasoever.key     # or: $PARTNERS

  $SCHAKEL whoami
  $SCHAKEL publish --kind hennepkwekerij --theme ondermijning --area BU09350101 \\
      --postcode 6211AB --house-number 12 --subject PSN-7f3a9c2e41 \\
      --grounds "Stroomverbruik viermaal het gemiddelde" --summary "Vermoedelijke hennepkwekerij"
  SCHAKEL_KEY=$RUN/keys/politie.key $SCHAKEL listen          # Ctrl-C to stop
  SCHAKEL_KEY=$RUN/keys/gemeente.key $SCHAKEL listen --json --drain

Reload the policy after editing it: kill -HUP <pid of schakeld>. Stop: Ctrl-C.

EOF
exec "$SCHAKELD" --config "$RUN/schakeld.yaml" --listen "$ENDPOINT"

#!/bin/sh
# run-demo.sh — the Schakel demo (`make demo`): eight partners of Maastricht's
# safety programme share signals through one schakeld on a loopback port.
#
# Creates var/demo/ afresh (keys from `schakel keygen`, the demo policy), starts
# the broker on tcp://127.0.0.1:* and reads its READY line through a fifo, then
# plays the scenario with the real `schakel` CLI: who receives what with which
# fields, what is refused and why, an unregistered key, and the public
# prosecutor (om) that is offline until the end and then receives what it is
# owed, in order. Exits 0 only if every count and outcome is as expected.
# Environment: BUILD (default build) names the folder with schakeld and schakel;
# SCHAKEL_DEMO_DIR, an empty folder given by its absolute path, is used
# instead of var/demo (make test's tests/integration/test_demo.sh does so).
set -eu

BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
SCHAKELD=$BUILD/schakeld
SCHAKEL=$BUILD/schakel
DEMO=${SCHAKEL_DEMO_DIR:-var/demo}
case $DEMO in
/*) DEMO_ABS=$DEMO ;;
*) DEMO_ABS=$ROOT/$DEMO ;;
esac
for program in "$SCHAKELD" "$SCHAKEL"; do
    if [ ! -x "$program" ]; then
        echo "run-demo: $program is missing; run 'make all' first" >&2
        exit 1
    fi
done

# ------------------------------------------------------------------ broker
BROKER_PID=
stop_broker_on_exit() {
    if [ -n "$BROKER_PID" ]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        echo "run-demo: stopped schakeld (pid $BROKER_PID); its log is $DEMO/schakeld.log" >&2
    fi
}
trap stop_broker_on_exit EXIT
trap 'exit 130' INT TERM

if [ -z "${SCHAKEL_DEMO_DIR:-}" ]; then
    rm -rf "$DEMO"
    mkdir -p "$DEMO/keys"
    # Every folder on a key's or the policy's path must not be writable by
    # group or others (docs/OPERATIONS.md, "Files"): var/ is made under the
    # umask.
    chmod go-w var
else
    case $DEMO in
    /*) ;;
    *)
        echo "run-demo: SCHAKEL_DEMO_DIR must be an absolute path, not $DEMO" >&2
        exit 1
        ;;
    esac
    if [ ! -d "$DEMO" ] || [ -n "$(ls -A "$DEMO")" ]; then
        echo "run-demo: SCHAKEL_DEMO_DIR $DEMO must be an empty folder" >&2
        exit 1
    fi
    mkdir "$DEMO/keys"
fi
chmod 700 "$DEMO" "$DEMO/keys"
# One key per partner system, one for the operator, the broker's own, and
# one that the policy does not know.
for name in broker gemeente politie om veiligheidshuis riec woco-maasoever woco-jekerdal \
    brandweer operator onbekend; do
    "$SCHAKEL" keygen "$DEMO/keys/$name" >/dev/null
done
cp deploy/demo/policy.yaml deploy/demo/schakeld.yaml "$DEMO/"
# Whatever the umask: schakeld refuses a policy or config that group or
# others may write.
chmod 644 "$DEMO/policy.yaml" "$DEMO/schakeld.yaml"
# The store's sealing key (bodies are encrypted at rest under it) and the
# empty store: the broker never creates a store itself.
"$SCHAKELD" --init --config "$DEMO/schakeld.yaml" >/dev/null

mkfifo "$DEMO/ready"
"$SCHAKELD" --config "$DEMO/schakeld.yaml" --listen 'tcp://127.0.0.1:*' \
    --store "$DEMO/store.db" --ready-fd 3 3>"$DEMO/ready" 2>"$DEMO/schakeld.log" &
BROKER_PID=$!
# The fifo's writer closes when the broker says READY (or dies): read is
# never left waiting on a broker that is gone; the timeout covers a hang.
READY=$(timeout 20 head -n 1 "$DEMO/ready" || true)
case $READY in
"READY tcp://127.0.0.1:"*) ENDPOINT=${READY#READY } ;;
*)
    echo "run-demo: schakeld did not become ready; its log:" >&2
    cat "$DEMO/schakeld.log" >&2
    exit 1
    ;;
esac
rm -f "$DEMO/ready"

export SCHAKEL_BROKER="$ENDPOINT"
export SCHAKEL_BROKER_KEY="$DEMO_ABS/keys/broker.pub"
unset SCHAKEL_KEY

# ------------------------------------------------------------------ helpers
CHECKS=0
FAILURES=0
NOW=$(date +%s)

# as PARTNER ARGS...: run the CLI with that partner's key.
as() {
    key="$DEMO_ABS/keys/$1.key"
    shift
    SCHAKEL_KEY="$key" "$SCHAKEL" "$@"
}

# check WHAT EXPECTED ACTUAL
check() {
    CHECKS=$((CHECKS + 1))
    if [ "$2" != "$3" ]; then
        FAILURES=$((FAILURES + 1))
        echo "   !! NOT AS EXPECTED: $1: expected '$2', got '$3'"
    fi
}

# publish PARTNER EXPECTED_RECIPIENTS ARGS...: must be accepted for that many
# mailboxes; prints the outcome.
publish() {
    who=$1
    want=$2
    shift 2
    if out=$(as "$who" publish "$@" 2>"$DEMO/stderr"); then rc=0; else rc=$?; fi
    check "exit status of publish by $who" 0 "$rc"
    if [ "$rc" -ne 0 ]; then
        sed 's/^/   /' "$DEMO/stderr"
        return 0
    fi
    got=$(printf '%s\n' "$out" | sed -n 's/.*recipients=\([0-9]*\).*/\1/p')
    check "mailboxes for the publish by $who" "$want" "$got"
    printf '   -> %s\n' "$out"
}

# refused PARTNER REASON ARGS...: must be refused (exit 3) with that reason.
refused() {
    who=$1
    want=$2
    shift 2
    if out=$(as "$who" publish "$@" 2>"$DEMO/stderr"); then rc=0; else rc=$?; fi
    check "exit status of a refused publish by $who" 3 "$rc"
    reason=$(sed -n 's/^refused: \([A-Z_]*\).*/\1/p' "$DEMO/stderr")
    check "reason of the refusal of $who" "$want" "$reason"
    sed -n 's/^refused: /   -> refused: /p' "$DEMO/stderr"
}

# json_string LINE KEY: a string member of one compact JSON line.
json_string() {
    printf '%s\n' "$1" | sed -n "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p"
}

# show_received LABEL FILE: one compact line per delivery in FILE.
show_received() {
    count=$(grep -c . "$2" || true)
    echo "   $1 received $count:"
    while IFS= read -r line; do
        fields=
        for f in area address subject grounds case_ref severity observed_at summary source_ref; do
            case $line in *"\"$f\":"*) fields="$fields${fields:+,}$f" ;; esac
        done
        printf '     from %-26s %-16s %-24s rule %s\n' "$(json_string "$line" sender)" \
            "$(json_string "$line" theme)" "$(json_string "$line" kind)" \
            "$(json_string "$line" rule_id)"
        printf '       saw: %s\n' "$fields"
    done <"$2"
}

# drain PARTNER: receive and ack everything in its mailbox, as JSON lines.
drain() {
    if as "$1" listen --json --drain --timeout 20 >"$DEMO/received-$1.jsonl" \
        2>"$DEMO/stderr"; then rc=0; else rc=$?; fi
    check "exit status of listen --drain for $1" 0 "$rc"
    [ "$rc" -eq 0 ] || sed 's/^/   /' "$DEMO/stderr"
}

received_count() {
    grep -c . "$DEMO/received-$1.jsonl" || true
}

# fields_seen PARTNER N: the field list of its N-th delivery.
fields_seen() {
    line=$(sed -n "${2}p" "$DEMO/received-$1.jsonl")
    fields=
    for f in area address subject grounds case_ref severity observed_at summary source_ref; do
        case $line in *"\"$f\":"*) fields="$fields${fields:+,}$f" ;; esac
    done
    printf '%s\n' "$fields"
}

# ------------------------------------------------------------------ scenario
echo "== Schakel demo: veiligheidsprogramma Maastricht (GM0935), eight partners"
echo "   schakeld $("$SCHAKELD" --version | sed 's/^schakeld //') on $ENDPOINT (pid $BROKER_PID)"
echo "   keys, policy, store and log in $DEMO/"
echo "   every partner reads its mailbox after the signals; om stays offline until the end"
echo

echo "1. Woonstichting Maasoever suspects a cannabis farm in one of its homes"
echo "   (6211AB 12, buurt BU09350101), with a pseudonymised tenant and the grounds"
publish woco-maasoever 3 --kind hennepkwekerij --theme ondermijning --area BU09350101 \
    --postcode 6211AB --house-number 12 --subject PSN-7f3a9c2e41 \
    --grounds "Stroomverbruik viermaal het gemiddelde; monteur geweigerd; sterke geur" \
    --severity high --observed-at $((NOW - 7200)) \
    --summary "Vermoedelijke hennepkwekerij in huurwoning" --source-ref WM-2024-0311
echo

echo "2. Brandweer Zuid-Limburg finds the same home fire-unsafe and tells the"
echo "   municipality and the owner (named recipients)"
publish brandweer 2 --kind brandonveilige-situatie --theme brandveiligheid \
    --area BU09350101 --postcode 6211AB --house-number 12 --severity medium \
    --observed-at $((NOW - 3600)) --to gemeente --to woco-maasoever \
    --summary "Vluchtweg geblokkeerd, rookmelders verwijderd, overbelaste groepen" \
    --source-ref BZL-2024-1188
echo

echo "3. Politie reports a burglary series at district level (WK093501, no address)"
publish politie 3 --kind inbraakreeks --theme woninginbraak --area WK093501 \
    --severity medium --observed-at $((NOW - 86400)) \
    --summary "Zeven woninginbraken in twee weken; werkwijze: flipperen" \
    --source-ref BVH-2024-55120
echo

echo "4. What no rule allows, or what is not valid, is refused as a whole:"
echo "   a. the fire service may not share ondermijning"
refused brandweer POLICY_DENIED --kind hennepkwekerij --theme ondermijning --area GM0935 \
    --summary "Hennepgeur bij brandcontrole"
echo "   b. one intended recipient no rule allows spoils the whole signal"
refused woco-maasoever POLICY_DENIED --kind hennepkwekerij --theme ondermijning \
    --area BU09350101 --to politie --to brandweer --summary "Tweede signaal"
echo "   c. a postcode with a space"
refused woco-jekerdal INVALID_POSTCODE --kind hennepkwekerij --theme ondermijning \
    --area BU09350102 --postcode "6211 AC" --house-number 3
echo "   d. a person without grounds"
refused woco-jekerdal MISSING_GROUNDS --kind woonfraude-vermoeden --theme ondermijning \
    --area BU09350102 --subject PSN-0b9d1e6a55
echo "   e. a neighbourhood code of the wrong length"
refused politie INVALID_AREA --kind inbraakreeks --theme woninginbraak --area BU0935010
echo "   f. a care signal to the Veiligheidshuis outside a case"
refused politie POLICY_DENIED --kind zorgmelding --theme zorg --area BU09350101 \
    --subject PSN-44a0c2d19e --grounds "Verward gedrag, driemaal melding in een week"
echo "   ... and the same signal within case VH-2024-031 is accepted (for the"
echo "   Veiligheidshuis's system and its process coordinator)"
publish politie 2 --kind zorgmelding --theme zorg --area BU09350101 \
    --subject PSN-44a0c2d19e --grounds "Verward gedrag, driemaal melding in een week" \
    --case-ref VH-2024-031
echo

echo "5. A key the policy does not know cannot even connect"
if as onbekend whoami --connect-timeout 3 >/dev/null 2>"$DEMO/stderr"; then rc=0; else rc=$?; fi
check "exit status of whoami with an unregistered key" 4 "$rc"
sed 's/^/   -> /' "$DEMO/stderr"
if out=$(as politie whoami 2>"$DEMO/stderr"); then rc=0; else rc=$?; fi
check "whoami of politie afterwards" "principal=politie/bvh-koppeling partner=politie role=system" "$out"
echo "   -> the broker still serves the partners: $out"
echo

echo "6. The public prosecutor (om) is offline; signals for it are accepted anyway"
OM_ID=5c0ffee05c0ffee05c0ffee05c0ffee0
publish politie 1 --kind witwassen --theme ondermijning --area GM0935 --severity high \
    --summary "Contante aankoop van drie panden via een stichting" --source-ref BVH-2024-7101 \
    --message-id "$OM_ID"
publish politie 1 --kind drugshandel --theme drugs --area WK093502 --severity high \
    --summary "Handel vanuit bedrijfspand" --source-ref BVH-2024-7102
publish riec 1 --kind casusadvies --theme ondermijning --area BU09350101 \
    --postcode 6211AB --house-number 12 --subject PSN-7f3a9c2e41 \
    --grounds "Samenloop hennepsignaal, brandonveiligheid en contante betalingen" \
    --case-ref RIEC-2024-0117 --summary "Advies strafrechtelijke interventie" \
    --source-ref RIEC-2024-0117-A
echo "   a retry of the first one after a lost answer is recognised, not stored twice:"
publish politie 1 --kind witwassen --theme ondermijning --area GM0935 --severity high \
    --summary "Contante aankoop van drie panden via een stichting" --source-ref BVH-2024-7101 \
    --message-id "$OM_ID"
check "the retry is answered as a duplicate" yes \
    "$(case $out in *duplicate*) echo yes ;; *) echo no ;; esac)"
echo

# ------------------------------------------------------------------ who got what
echo "== What each partner but om received (schakel listen --json --drain)"
for partner in gemeente politie riec veiligheidshuis woco-maasoever woco-jekerdal brandweer; do
    drain "$partner"
    show_received "$partner" "$DEMO/received-$partner.jsonl"
done
check "deliveries to gemeente" 3 "$(received_count gemeente)"
check "deliveries to politie" 1 "$(received_count politie)"
check "deliveries to riec" 1 "$(received_count riec)"
check "deliveries to veiligheidshuis" 1 "$(received_count veiligheidshuis)"
check "deliveries to woco-maasoever" 2 "$(received_count woco-maasoever)"
check "deliveries to woco-jekerdal" 1 "$(received_count woco-jekerdal)"
check "deliveries to brandweer" 0 "$(received_count brandweer)"
# Data minimisation: the same signal, three views.
check "fields politie saw of the cannabis farm" \
    "area,address,subject,grounds,severity,observed_at,summary,source_ref" \
    "$(fields_seen politie 1)"
check "fields riec saw of the cannabis farm" \
    "area,address,subject,grounds,severity,observed_at,summary" "$(fields_seen riec 1)"
check "fields gemeente saw of the cannabis farm" "area,address,severity,observed_at,summary" \
    "$(fields_seen gemeente 1)"
echo

echo "== om comes online at last"
drain om
show_received om "$DEMO/received-om.jsonl"
check "deliveries to om" 3 "$(received_count om)"
order=$(while IFS= read -r line; do json_string "$line" kind; done \
    <"$DEMO/received-om.jsonl" | tr '\n' ' ')
check "order in which om received" "witwassen drugshandel casusadvies " "$order"
echo "   in publish order: $order"
drain om
check "deliveries to om on a second drain" 0 "$(received_count om)"
echo

# ------------------------------------------------------------------ a case
# case_ok PARTNER ARGS...: `schakel case ARGS` as that partner must succeed;
# prints its line and keeps it in $out.
case_ok() {
    who=$1
    shift
    if out=$(as "$who" case "$@" 2>"$DEMO/stderr"); then rc=0; else rc=$?; fi
    check "exit status of 'case $1' by $who" 0 "$rc"
    [ "$rc" -eq 0 ] || sed 's/^/   /' "$DEMO/stderr"
    printf '   -> %s\n' "$out"
}

# case_refused PARTNER REASON ARGS...: must be refused (exit 3) with REASON.
case_refused() {
    who=$1
    want=$2
    shift 2
    if as "$who" case "$@" >/dev/null 2>"$DEMO/stderr"; then rc=0; else rc=$?; fi
    check "exit status of the refused 'case $1' by $who" 3 "$rc"
    reason=$(sed -n 's/^refused: \([A-Z_]*\).*/\1/p' "$DEMO/stderr")
    check "reason of the refused 'case $1' by $who" "$want" "$reason"
    sed -n 's/^refused: /   -> refused: /p' "$DEMO/stderr"
}

# case_kinds PARTNER: "SEQ:KIND" of each case event it received, in order.
case_kinds() {
    sed -n 's/.*"event_seq":\([0-9]*\),"kind":"\([a-z_]*\)".*/\1:\2/p' \
        "$DEMO/received-$1.jsonl" | tr '\n' ' '
}

# received_line PARTNER KIND: its first received case event of that kind.
received_line() {
    grep "\"kind\":\"$2\"" "$DEMO/received-$1.jsonl" | head -n 1
}

# has WHAT LINE: "yes" if LINE contains WHAT.
has() {
    case $2 in *"$1"*) echo yes ;; *) echo no ;; esac
}

echo "== A case: the RIEC leads the joint approach of the address from the signals"
echo "7. The RIEC opens a case on 6211AB 12 and invites politie, gemeente, the"
echo "   housing corporation and om (om is offline and answers later)"
case_ok riec open --type ondermijning-adres --area BU09350101 --postcode 6211AB \
    --house-number 12 --subject PSN-7f3a9c2e41 \
    --title "Hennepkwekerij en brandonveilige situatie"
CASE=$(printf '%s\n' "$out" | sed -n 's/.*case=\(C-[0-9]*\).*/\1/p')
check "a case id was assigned" yes "$(case $CASE in C-????????) echo yes ;; *) echo no ;; esac)"
for partner in politie gemeente woco-maasoever om; do
    case_ok riec invite "$CASE" "$partner"
done
echo "   the fire service may not be a member of this type of case:"
case_refused riec POLICY_DENIED invite "$CASE" brandweer
for partner in politie gemeente woco-maasoever; do
    case_ok "$partner" accept "$CASE"
done
echo

echo "8. The RIEC links the cannabis-farm signal it received to the case, and adds a"
echo "   note with a financial field that only politie and om may see"
FARM_SEQ=$(sed -n '1s/.*"item_seq":\([0-9]*\),.*/\1/p' "$DEMO/received-riec.jsonl")
case_ok riec link "$CASE" "$FARM_SEQ"
case_ok riec note "$CASE" --text "Casusoverleg: gezamenlijke controle gepland; eigenaar aanschrijven" \
    --field "financieel=Huur 1.400 euro per maand, contant betaald"
# Each member was sent its invitation first, then on joining the history
# before it (its own invitation aside) and its joining, then what followed.
for partner in politie gemeente woco-maasoever; do
    drain "$partner"
    echo "   $partner received: $(case_kinds "$partner")"
done
check "case events to politie" \
    "2:invited 1:opened 3:invited 4:invited 5:invited 6:joined 7:joined 8:joined 9:signal_linked 10:note " \
    "$(case_kinds politie)"
check "case events to gemeente" 10 "$(received_count gemeente)"
check "case events to woco-maasoever" 10 "$(received_count woco-maasoever)"
note_p=$(received_line politie note)
note_g=$(received_line gemeente note)
check "politie sees the financial field" yes "$(has '"financieel"' "$note_p")"
check "gemeente gets the note" yes "$(has 'Casusoverleg' "$note_g")"
check "gemeente gets the note without the financial field" no "$(has financieel "$note_g")"
check "gemeente never sees the pseudonym" 0 "$(grep -c PSN-7f3a9c2e41 "$DEMO/received-gemeente.jsonl")"
check "politie sees the pseudonym" yes \
    "$(has PSN-7f3a9c2e41 "$(received_line politie opened)")"
link_w=$(received_line woco-maasoever signal_linked)
check "woco-maasoever sees the linked signal's address" yes "$(has '"postcode":"6211AB"' "$link_w")"
check "woco-maasoever does not see its grounds" no "$(has grounds "$link_w")"
# note_fields LINE: the note's structured fields, or "none".
note_fields() {
    fields=$(printf '%s\n' "$1" | sed -n 's/.*"fields":{\([^}]*\)}.*/\1/p')
    printf '%s\n' "${fields:-none}"
}
echo "   the note's fields as politie got them: $(note_fields "$note_p")"
echo "   the note's fields as gemeente got them: $(note_fields "$note_g")"
echo

echo "9. om joins later and receives the case's history, in order, as its rule allows"
case_ok om accept "$CASE"
drain om
echo "   om received: $(case_kinds om)"
check "om's case events (its invitation came first)" \
    "5:invited 1:opened 2:invited 3:invited 4:invited 6:joined 7:joined 8:joined 9:signal_linked 10:note 11:joined " \
    "$(case_kinds om)"
check "om sees the financial field" yes "$(has '"financieel"' "$(received_line om note)")"
echo

echo "10. The RIEC closes the case; a closed case takes no more notes; outsiders learn nothing"
case_ok riec close "$CASE" --reason "Pand gesloten (art. 13b Opiumwet), huur opgezegd"
case_refused riec CASE_CLOSED note "$CASE" --text "Nog een opmerking"
case_refused brandweer NOT_FOUND show "$CASE"
if as gemeente case show "$CASE" >"$DEMO/case-gemeente.txt" 2>"$DEMO/stderr"; then rc=0; else rc=$?; fi
check "exit status of 'case show' by gemeente" 0 "$rc"
echo "   the case as gemeente sees it (schakel case show):"
sed 's/^/     /' "$DEMO/case-gemeente.txt"
check "gemeente's view holds no financial field" 0 "$(grep -c financieel "$DEMO/case-gemeente.txt")"
check "gemeente's view holds no pseudonym" 0 "$(grep -c PSN-7f3a9c2e41 "$DEMO/case-gemeente.txt")"
echo

# ------------------------------------------------------------------ stop
kill -TERM "$BROKER_PID"
if wait "$BROKER_PID"; then rc=0; else rc=$?; fi
BROKER_PID=
check "exit status of schakeld after SIGTERM" 0 "$rc"

echo "== $CHECKS checks, $((CHECKS - FAILURES)) as expected, $FAILURES not"
echo "demo: $((CHECKS - FAILURES)) passed, $FAILURES failed"
if [ "$FAILURES" -ne 0 ]; then
    echo "   the broker's log is $DEMO/schakeld.log"
    exit 1
fi
echo "   The demo ran as expected. State and log: $DEMO/"

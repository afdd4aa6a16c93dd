#!/bin/sh
# test_install.sh — `make install` puts the programs, the library (its
# header and libschakel(3)), the systemd unit and the sysusers.d file where
# a system finds them, with the PREFIX written into what names it, into a
# scratch DESTDIR: for PREFIX /usr/local the unit and sysusers file under
# PREFIX/lib (where systemd looks), for another PREFIX under /etc (systemd
# looks nowhere under /opt/schakel).
# The unit names the store in one place only: the config.
# Ends with one line "test_install: N passed, M failed"; `make test` runs it
# (BUILD names the build folder, as there).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-build}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
passed=0
failed=0

check() { # what, then a command that must succeed
    what=$1
    shift
    if "$@" >/dev/null 2>&1; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "test_install: FAILED: $what"
    fi
}

install_into() { # DESTDIR PREFIX
    make --no-print-directory -s -C "$ROOT" BUILD="$BUILD" DESTDIR="$1" PREFIX="$2" install \
        >"$scratch/make.out" 2>&1 || { cat "$scratch/make.out"; return 1; }
}

local_dir=$scratch/local
check "make install PREFIX=/usr/local" install_into "$local_dir" /usr/local
check "the unit in /usr/local/lib/systemd/system" \
    test -f "$local_dir/usr/local/lib/systemd/system/schakeld.service"
check "the sysusers file in /usr/local/lib/sysusers.d" \
    test -f "$local_dir/usr/local/lib/sysusers.d/schakel.conf"
check "libschakel(3) in /usr/local/share/man/man3" \
    test -f "$local_dir/usr/local/share/man/man3/libschakel.3"
check "schakel.h in /usr/local/include" test -f "$local_dir/usr/local/include/schakel.h"
check "libschakel.so.1 in /usr/local/lib" test -f "$local_dir/usr/local/lib/libschakel.so.1"
check "ExecStart names /usr/local/bin/schakeld" \
    grep -qx 'ExecStart=/usr/local/bin/schakeld $SCHAKELD_OPTIONS' \
    "$local_dir/usr/local/lib/systemd/system/schakeld.service"

opt_dir=$scratch/opt
opt_unit=$opt_dir/etc/systemd/system/schakeld.service
check "make install PREFIX=/opt/schakel" install_into "$opt_dir" /opt/schakel
check "schakeld in /opt/schakel/bin" test -x "$opt_dir/opt/schakel/bin/schakeld"
check "schakelctl in /opt/schakel/bin" test -x "$opt_dir/opt/schakel/bin/schakelctl"
check "the unit in /etc/systemd/system" test -f "$opt_unit"
check "the sysusers file in /etc/sysusers.d" test -f "$opt_dir/etc/sysusers.d/schakel.conf"
check "nothing under /opt/schakel/lib/systemd" test ! -e "$opt_dir/opt/schakel/lib/systemd"
check "ExecStart names /opt/schakel/bin/schakeld" \
    grep -qx 'ExecStart=/opt/schakel/bin/schakeld $SCHAKELD_OPTIONS' "$opt_unit"
check "ExecReload names /opt/schakel/bin/schakeld" \
    grep -qx 'ExecReload=/opt/schakel/bin/schakeld --check $SCHAKELD_OPTIONS' "$opt_unit"
check "the unit names /usr/local/bin nowhere" sh -c "! grep -q /usr/local/bin '$opt_unit'"
check "libschakel.pc names the PREFIX" \
    grep -qx 'prefix=/opt/schakel' "$opt_dir/opt/schakel/lib/pkgconfig/libschakel.pc"
check "the unit's options name no --store (the config does)" \
    sh -c "grep '^Environment=\"SCHAKELD_OPTIONS=' '$opt_unit' | grep -qv -- --store"

echo "test_install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

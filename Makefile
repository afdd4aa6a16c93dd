# Schakel — build, test, demo, run, install.
#
#   make deps        install missing Debian packages (apt-get, only what pkg-config lacks)
#   make / make all  build schakeld, libschakel, schakel, schakelctl
#   make test        deps + build + every unit, fuzz-corpus and integration test
#   make check-asan  the same suite built with AddressSanitizer + UBSan
#   make demo        deps + build + the partner scenario on loopback (eight partners)
#   make run         the broker in the foreground with the demo config (state in var/)
#   make install     PREFIX=/usr/local DESTDIR= (UNITDIR, SYSUSERSDIR: see below)
#   make clean

PREFIX ?= /usr/local
DESTDIR ?=
# where `make install` puts deploy/systemd/schakeld.service and schakel.sysusers:
# under /usr and /usr/local where systemd looks for a package's units and
# sysusers.d files; for another PREFIX (/opt/schakel) in /etc, as systemd
# looks nowhere under such a PREFIX
ifneq ($(filter /usr /usr/local,$(PREFIX)),)
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
else
UNITDIR ?= /etc/systemd/system
SYSUSERSDIR ?= /etc/sysusers.d
endif
BUILD ?= build
GEN := $(BUILD)/gen
CC ?= cc
PKG_CONFIG ?= pkg-config

# pkg-config module -> Debian package that provides it
PKGS_RUNTIME := libzmq libprotobuf-c libsodium sqlite3 libcyaml yaml-0.1 libsystemd libmicrohttpd
PKGS_TEST := cmocka
PKGS_CLI := jansson
DEB_libzmq := libzmq3-dev
DEB_libprotobuf-c := libprotobuf-c-dev
DEB_libsodium := libsodium-dev
DEB_sqlite3 := libsqlite3-dev
DEB_libcyaml := libcyaml-dev
DEB_yaml-0.1 := libyaml-dev
DEB_libsystemd := libsystemd-dev
DEB_libmicrohttpd := libmicrohttpd-dev
DEB_cmocka := libcmocka-dev
DEB_jansson := libjansson-dev

WARNINGS := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wpointer-arith -Wcast-qual -Wformat=2 -Wvla -Wimplicit-fallthrough
HARDEN := -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fPIE
HARDEN_LD := -pie -Wl,-z,relro,-z,now
ifeq ($(CI),true)
WERROR := -Werror
endif

ifeq ($(SAN),1)
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
	-DSCHAKEL_PLAIN_ALLOC
HARDEN := -fstack-protector-strong -fPIE
SAN_LD := -fsanitize=address,undefined
else
OPT := -O2 -g
endif

PKG_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS_RUNTIME) 2>/dev/null)
PKG_LIBS = $(shell $(PKG_CONFIG) --libs $(PKGS_RUNTIME) 2>/dev/null)
TEST_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS_TEST) 2>/dev/null)
TEST_LIBS = $(shell $(PKG_CONFIG) --libs $(PKGS_TEST) 2>/dev/null)
CLI_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS_CLI) 2>/dev/null)
CLI_LIBS = $(shell $(PKG_CONFIG) --libs $(PKGS_CLI) 2>/dev/null)

BASE_CFLAGS := -std=c11 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L $(OPT) $(HARDEN) \
	-I$(GEN) -Icommon -Ibroker -Iclients/libschakel
CFLAGS_ALL = $(BASE_CFLAGS) $(WARNINGS) $(WERROR) $(PKG_CFLAGS) $(CLI_CFLAGS) $(CFLAGS)
# Generated protobuf-c code is not ours to fix; it gets the base flags only.
CFLAGS_GEN = $(BASE_CFLAGS) $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL = $(HARDEN_LD) $(SAN_LD) $(LDFLAGS)

PROTO_C := $(GEN)/schakel.pb-c.c
PROTO_H := $(GEN)/schakel.pb-c.h
PROTO_O := $(GEN)/schakel.pb-c.o

COMMON_SRC := $(wildcard common/*.c)
BROKER_SRC := $(filter-out broker/main.c,$(wildcard broker/*.c))
LIB_SRC := $(wildcard clients/libschakel/*.c)
CLI_SRC := $(wildcard clients/schakel/*.c)
CTL_SRC := $(wildcard clients/schakelctl/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
INTEG_SRC := $(wildcard tests/integration/test_*.c)
INTEG_SHIMS := tests/integration/syncgate.c tests/integration/clockshift.c \
    tests/integration/renamegate.c tests/integration/pollgate.c \
    tests/integration/opencount.c tests/integration/statvfsgate.c
INTEG_SUPPORT := $(filter-out $(INTEG_SRC) $(INTEG_SHIMS),$(wildcard tests/integration/*.c))
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
# the independent Python client (docs/PROTOCOL.md alone) against the real broker
INTEROP := $(wildcard tests/interop/test_interop.py)
# make demo's scenario, with its counts, in a folder of its own
DEMO_CHECK := tests/integration/test_demo.sh
# checks that the docs say what the code does (the Logs table of OPERATIONS.md,
# libschakel(3) against schakel.h and its example), that the man pages format
# without warnings, and that make install puts things where OPERATIONS says
DOC_CHECKS := $(wildcard tests/docs/test_*.py tests/docs/test_*.sh)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
COMMON_O := $(PROTO_O) $(call obj,$(COMMON_SRC))
# The programs' own core policy (common/coredump.h) is not libschakel's: a
# host program that links the library decides its own. The library gets
# the rest of common/; schakeld, schakel and schakelctl link it themselves.
COREDUMP_O := $(call obj,common/coredump.c)
LIB_COMMON_O := $(filter-out $(COREDUMP_O),$(COMMON_O))
BROKER_O := $(call obj,$(BROKER_SRC))
LIB_O := $(call obj,$(LIB_SRC))
INTEG_SUPPORT_O := $(call obj,$(INTEG_SUPPORT))

SCHAKELD := $(BUILD)/schakeld
SCHAKEL := $(BUILD)/schakel
SCHAKELCTL := $(BUILD)/schakelctl
LIBA := $(BUILD)/libschakel.a
LIBSO := $(BUILD)/libschakel.so.1
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRC))
INTEG_BIN := $(patsubst tests/integration/%.c,$(BUILD)/tests/integration/%,$(INTEG_SRC))
FUZZ_REPLAY_BIN := $(patsubst tests/fuzz/%.c,$(BUILD)/tests/fuzz/replay_%,$(FUZZ_SRC))

PROGRAMS := $(SCHAKELD) $(SCHAKEL) $(if $(CTL_SRC),$(SCHAKELCTL))

.PHONY: all deps test check-asan fuzz check-valgrind demo run install clean tests-build format bench bench-deps \
	proto-mailbox mailbox-rows
.DEFAULT_GOAL := all

all: $(PROGRAMS) $(LIBA) $(LIBSO) $(BUILD)/libschakel.pc

# ---------------------------------------------------------------- packages
# apt-get only for what pkg-config (or the protoc-c binary) does not find.
# promtool, which the tests use to check /metrics, comes only in Debian's
# prometheus package: deps installs it for that and stops and disables the
# Prometheus server the package would start. groff and man format the man
# pages in tests/docs/test_man.py.
deps:
	@missing=""; \
	for m in $(PKGS_RUNTIME) $(PKGS_TEST) $(PKGS_CLI); do \
	  $(PKG_CONFIG) --exists $$m 2>/dev/null || missing="$$missing $$m"; \
	done; \
	debs=""; \
	for m in $$missing; do \
	  case $$m in \
	    libzmq) debs="$$debs $(DEB_libzmq)";; libprotobuf-c) debs="$$debs $(DEB_libprotobuf-c)";; \
	    libsodium) debs="$$debs $(DEB_libsodium)";; sqlite3) debs="$$debs $(DEB_sqlite3)";; \
	    libcyaml) debs="$$debs $(DEB_libcyaml)";; yaml-0.1) debs="$$debs $(DEB_yaml-0.1)";; \
	    libsystemd) debs="$$debs $(DEB_libsystemd)";; \
	    libmicrohttpd) debs="$$debs $(DEB_libmicrohttpd)";; \
	    cmocka) debs="$$debs $(DEB_cmocka)";; jansson) debs="$$debs $(DEB_jansson)";; \
	  esac; \
	done; \
	command -v protoc-c >/dev/null 2>&1 || debs="$$debs protobuf-c-compiler"; \
	command -v protoc >/dev/null 2>&1 || debs="$$debs protobuf-compiler"; \
	command -v promtool >/dev/null 2>&1 || debs="$$debs prometheus"; \
	command -v groff >/dev/null 2>&1 || debs="$$debs groff-base"; \
	command -v man >/dev/null 2>&1 || debs="$$debs man-db"; \
	/usr/bin/python3 -c 'import zmq' >/dev/null 2>&1 || debs="$$debs python3-zmq"; \
	/usr/bin/python3 -c 'import nacl' >/dev/null 2>&1 || debs="$$debs python3-nacl"; \
	/usr/bin/python3 -c 'import google.protobuf' >/dev/null 2>&1 || debs="$$debs python3-protobuf"; \
	command -v $(PKG_CONFIG) >/dev/null 2>&1 || debs="$$debs pkg-config"; \
	if [ -n "$$debs" ]; then \
	  echo "deps: installing$$debs"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$debs && \
	  case " $$debs " in *" prometheus "*) \
	    if [ -d /run/systemd/system ]; then \
	      $$SUDO systemctl disable --now prometheus.service >/dev/null 2>&1; fi; true;; \
	  esac; \
	else echo "deps: all libraries found by pkg-config"; fi

# ---------------------------------------------------------------- code generation
$(PROTO_C) $(PROTO_H): proto/schakel.proto
	@mkdir -p $(GEN)
	protoc-c --proto_path=proto --c_out=$(GEN) proto/schakel.proto

$(PROTO_O): $(PROTO_C) $(PROTO_H)
	$(CC) $(CFLAGS_GEN) -fPIC -c $< -o $@

# every object depends on the generated header (it is included via wire.h)
$(BUILD)/obj/%.o: %.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fPIC -MMD -MP -c $< -o $@

# ---------------------------------------------------------------- programs
$(SCHAKELD): $(call obj,broker/main.c) $(BROKER_O) $(COMMON_O)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) -lm

$(LIBA): $(LIB_O) $(LIB_COMMON_O)
	rm -f $@ && ar rcs $@ $^

$(LIBSO): $(LIB_O) $(LIB_COMMON_O)
$(LIBSO): clients/libschakel/libschakel.map
	$(CC) -shared -Wl,-soname,libschakel.so.1 -Wl,--version-script=clients/libschakel/libschakel.map \
		$(LDFLAGS_ALL:-pie=) -o $@ $(LIB_O) $(LIB_COMMON_O) $(PKG_LIBS)
	ln -sf libschakel.so.1 $(BUILD)/libschakel.so

$(SCHAKEL): $(call obj,$(CLI_SRC)) $(COREDUMP_O) $(LIBA)
	$(CC) $(LDFLAGS_ALL) -o $@ $(call obj,$(CLI_SRC)) $(COREDUMP_O) $(LIBA) $(PKG_LIBS) $(CLI_LIBS) -lm

$(SCHAKELCTL): $(call obj,$(CTL_SRC)) $(COREDUMP_O) $(BROKER_O) $(LIBA)
	$(CC) $(LDFLAGS_ALL) -o $@ $(call obj,$(CTL_SRC)) $(COREDUMP_O) $(BROKER_O) $(LIBA) $(PKG_LIBS) \
		$(CLI_LIBS) -lm

$(BUILD)/libschakel.pc: clients/libschakel/libschakel.pc.in
	@mkdir -p $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|g' $< > $@

# ---------------------------------------------------------------- tests
# -Itests: the headers every test tree shares (tests/store_v12_schema.h).
$(BUILD)/obj/tests/%.o: tests/%.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(TEST_CFLAGS) -Itests -Itests/integration -MMD -MP -c $< -o $@

# A unit test test_M links the common code, the module M of broker/ or
# clients/libschakel/ if there is one, and what UNIT_EXTRA_test_M names.
UNIT_EXTRA_test_session := broker/table.c broker/sendq.c
UNIT_EXTRA_test_sumtable := broker/table.c
UNIT_EXTRA_test_sendq := broker/sendq.c
# its allocation failures come from a malloc wrapper of its own
UNIT_LDFLAGS_test_session := -Wl,--wrap=malloc
UNIT_EXTRA_test_record := broker/record_carry.c broker/record_removed.c broker/record_case.c \
	broker/record_broker.c broker/refusals.c broker/growarray.c
# schakel import's reader (a CLI file, with the CLI's JSON library)
UNIT_EXTRA_test_import_read := clients/schakel/import_read.c
UNIT_LIBS_test_import_read = $(CLI_LIBS)
$(BUILD)/obj/tests/unit/test_import_read.o: TEST_CFLAGS += -Iclients/schakel
# its journal (the reader names the formats)
UNIT_EXTRA_test_import_journal := clients/schakel/import_journal.c clients/schakel/import_read.c
UNIT_LIBS_test_import_journal = $(CLI_LIBS)
$(BUILD)/obj/tests/unit/test_import_journal.o: TEST_CFLAGS += -Iclients/schakel
# how the CLI prints what partners sent (cli.c, on libschakel)
UNIT_EXTRA_test_cli_field := clients/schakel/cli.c clients/schakel/case_print.c \
	clients/schakel/fields.c clients/libschakel/client.c clients/libschakel/client_wait.c \
	clients/libschakel/client_frames.c clients/libschakel/client_request.c \
	clients/libschakel/delivery.c clients/libschakel/case.c \
	clients/libschakel/caseview.c clients/libschakel/inflight.c clients/libschakel/signal_pb.c \
	clients/libschakel/acksent.c
UNIT_LIBS_test_cli_field = $(CLI_LIBS)
$(BUILD)/obj/tests/unit/test_cli_field.o: TEST_CFLAGS += -Iclients/schakel
UNIT_EXTRA_test_client := clients/libschakel/client_wait.c clients/libschakel/client_frames.c \
	clients/libschakel/client_request.c \
	clients/libschakel/delivery.c clients/libschakel/case.c \
	clients/libschakel/caseview.c clients/libschakel/inflight.c clients/libschakel/signal_pb.c \
	clients/libschakel/acksent.c
UNIT_EXTRA_test_client_alloc := clients/libschakel/client.c clients/libschakel/client_wait.c \
	clients/libschakel/client_frames.c clients/libschakel/client_request.c \
	clients/libschakel/delivery.c \
	clients/libschakel/caseview.c clients/libschakel/inflight.c clients/libschakel/signal_pb.c \
	clients/libschakel/acksent.c
# every allocation of the program's own objects goes through the test's wrappers
UNIT_LDFLAGS_test_client_alloc := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=free
UNIT_EXTRA_test_policy := broker/policy_load.c broker/policy_index.c broker/policy_case.c \
	broker/policy_warn.c broker/linemap.c broker/yamlguard.c
UNIT_EXTRA_test_policy_case := broker/policy.c broker/policy_load.c broker/policy_index.c \
	broker/policy_warn.c broker/linemap.c broker/yamlguard.c
UNIT_EXTRA_test_policy_index := broker/policy.c broker/policy_load.c broker/policy_index.c \
	broker/policy_case.c broker/policy_warn.c broker/linemap.c broker/yamlguard.c \
	tests/unit/text_build.c
UNIT_EXTRA_test_policy_warn := broker/policy.c broker/policy_load.c broker/policy_index.c \
	broker/policy_case.c broker/linemap.c broker/yamlguard.c tests/unit/text_build.c
UNIT_EXTRA_test_config := broker/yamlguard.c
# The store and what it needs, for the tests that open real stores ($^
# lists a file named twice once).
STORE_UNIT_SRC := tests/unit/store_fixture.c tests/unit/store_fixture_v12.c \
	broker/store.c broker/store_open.c broker/store_commit.c \
	broker/store_seal.c broker/store_migrate.c broker/store_schema.c broker/store_counters.c \
	broker/store_expire.c \
	broker/store_audit.c broker/store_audit_read.c broker/store_audit_text.c broker/store_count.c \
	broker/store_bytes.c \
	broker/store_mailbox.c broker/store_mailbox_add.c broker/store_mailbox_row.c \
	broker/store_mailbox_scan.c broker/store_mailbox_aside.c broker/store_mailbox_migrate.c \
	broker/store_mailbox_case.c broker/store_mailbox_query.c \
	broker/sumtable.c broker/table.c \
	broker/store_delivery.c broker/store_checkpoint.c broker/durations.c
# test_store: also a case's deliveries, re-sealed by its close
UNIT_EXTRA_test_store := $(STORE_UNIT_SRC) broker/store_case.c
# the audit trail: its chain, its verification, its renderings and export
AUDIT_SRC := broker/audit.c broker/audit_verify.c broker/audit_render.c
UNIT_EXTRA_test_audit := $(STORE_UNIT_SRC) $(AUDIT_SRC) broker/growarray.c
UNIT_LDFLAGS_test_audit := -Wl,--wrap=malloc,--wrap=realloc,--wrap=free
UNIT_EXTRA_test_audit_queued := $(STORE_UNIT_SRC) $(AUDIT_SRC) broker/growarray.c
UNIT_EXTRA_test_store_case := $(STORE_UNIT_SRC)
# the mailbox's rows (their tests share tests/unit/mailbox_fixture.c): a case's
# row needs a case
MAILBOX_UNIT_SRC := $(STORE_UNIT_SRC) broker/store_case.c tests/unit/mailbox_fixture.c
UNIT_EXTRA_test_store_mailbox := $(MAILBOX_UNIT_SRC)
# the migration onto the rows, their rekey and seq high (store_mailbox_migrate.c)
UNIT_EXTRA_test_store_mailbox_migrate := $(MAILBOX_UNIT_SRC)
# mailbox rows set aside whole (broker/store_mailbox_aside.c, by the test's name)
UNIT_EXTRA_test_store_mailbox_aside := $(MAILBOX_UNIT_SRC)
# cases and expiry's references over the rows (store_mailbox_case.c, by its name)
UNIT_EXTRA_test_store_mailbox_case := $(MAILBOX_UNIT_SRC)
# the queries over the rows (rule, listing, purge's walk, totals): case rows too
UNIT_EXTRA_test_store_mailbox_query := $(MAILBOX_UNIT_SRC)
# the admission of a case open: a real store and sessions, broker_reject the test's
UNIT_EXTRA_test_case_ids := $(STORE_UNIT_SRC) broker/store_case.c broker/session.c broker/table.c \
	broker/sendq.c broker/log.c
UNIT_EXTRA_test_store_sync := $(STORE_UNIT_SRC) tests/unit/sync_gate.c
UNIT_EXTRA_test_store_checkpoint := $(STORE_UNIT_SRC) tests/unit/sync_gate.c
# schakeld --init with the store, the owner and the files beside a store;
# the fsyncs of the broker's own code go through the test's wrapper
UNIT_EXTRA_test_init := $(STORE_UNIT_SRC) broker/owner.c broker/storefile.c
UNIT_LDFLAGS_test_init := -Wl,--wrap=fsync
# the push's kept items (deliver.c) with the broker code they call
UNIT_EXTRA_test_deliver := $(filter-out broker/deliver.c,$(BROKER_SRC))
.SECONDEXPANSION:
$(BUILD)/tests/unit/test_%: $(BUILD)/obj/tests/unit/test_%.o \
		$$(call obj,$$(wildcard broker/$$*.c clients/libschakel/$$*.c) $$(UNIT_EXTRA_test_$$*)) \
		$(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) $(UNIT_LDFLAGS_test_$*) -o $@ $^ $(PKG_LIBS) $(UNIT_LIBS_test_$*) \
	    $(TEST_LIBS) -lm

$(BUILD)/tests/integration/test_%: $(BUILD)/obj/tests/integration/test_%.o $(INTEG_SUPPORT_O) $(LIB_O) $(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) $(TEST_LIBS) -lm

# Shims LD_PRELOADed into the programs of one test: schakeld's fdatasync/fsync
# behind a gate file (test_sync, test_metrics), or the CLI's failing or held
# (test_listen, test_import), the broker loop's poll without its timeout
# (test_metrics), the broker's system clock stepped (test_clock), renameat2
# without RENAME_NOREPLACE for schakeld --init (test_storage), the broker's
# opens of the policy file counted (test_reload), the room the store's file
# system reports (test_space)
$(BUILD)/tests/integration/%.so: tests/integration/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fPIC -shared $(SAN_LD) $(LDFLAGS) -o $@ $< -ldl
$(BUILD)/tests/integration/test_sync: | $(BUILD)/tests/integration/syncgate.so
$(BUILD)/tests/integration/test_admin: | $(BUILD)/tests/integration/syncgate.so
$(BUILD)/tests/integration/test_listen: | $(BUILD)/tests/integration/syncgate.so
$(BUILD)/tests/integration/test_import: | $(BUILD)/tests/integration/syncgate.so
$(BUILD)/tests/integration/test_metrics: | $(BUILD)/tests/integration/syncgate.so \
    $(BUILD)/tests/integration/pollgate.so
$(BUILD)/tests/integration/test_clock: | $(BUILD)/tests/integration/clockshift.so
$(BUILD)/tests/integration/test_storage: | $(BUILD)/tests/integration/renamegate.so
$(BUILD)/tests/integration/test_reload: | $(BUILD)/tests/integration/opencount.so
$(BUILD)/tests/integration/test_space: | $(BUILD)/tests/integration/statvfsgate.so
# test_listen parses the JSON lines of `schakel listen --json` as a reader would
$(BUILD)/obj/tests/integration/test_listen.o: TEST_CFLAGS += $(CLI_CFLAGS)
$(BUILD)/tests/integration/test_listen: TEST_LIBS += $(CLI_LIBS)

$(BUILD)/tests/fuzz/replay_fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/tests/fuzz/replay_main.o $(BROKER_O) $(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) $(FUZZ_LIBS_$*) -lm

# the client's decoding of broker frames is libschakel's
$(BUILD)/tests/fuzz/replay_fuzz_broker_frame: $(LIB_O)
$(BUILD)/obj/tests/fuzz/fuzz_broker_frame.o: TEST_CFLAGS += -Iclients/libschakel
# schakel import's reading of a file is the CLI's own code (its reader,
# items, JSON input and field parsers, cli.c's number parser, with its JSON
# library), on libschakel's types
FUZZ_IMPORT_O := $(call obj,clients/schakel/import_read.c clients/schakel/import_item.c \
	clients/schakel/jsonio.c clients/schakel/fields.c clients/schakel/cli.c)
FUZZ_LIBS_import = $(CLI_LIBS)
$(BUILD)/tests/fuzz/replay_fuzz_import: $(FUZZ_IMPORT_O) $(LIB_O)
$(BUILD)/obj/tests/fuzz/fuzz_import.o: TEST_CFLAGS += -Iclients/schakel

# The programs of docs/examples/ (libschakel(3) shows publish_and_receive.c),
# built as a partner builds against an installed libschakel: `make install`
# into a PREFIX of their own under the build, then cc with what `pkg-config
# libschakel` says there, nothing of the tree's own flags but the warnings
# (and, in check-asan, the sanitizers the library was built with).
# test_example runs them against a test broker, with LD_LIBRARY_PATH naming
# that PREFIX's lib/.
EXAMPLE_SRC := $(wildcard docs/examples/*.c)
EXAMPLE_BIN := $(patsubst docs/examples/%.c,$(BUILD)/examples/%,$(EXAMPLE_SRC))
EXAMPLE_PREFIX = $(abspath $(BUILD))/examples/prefix
EXAMPLE_PKG = PKG_CONFIG_PATH=$(EXAMPLE_PREFIX)/lib/pkgconfig $(PKG_CONFIG)

$(BUILD)/examples/installed: $(PROGRAMS) $(LIBA) $(LIBSO) $(BUILD)/libschakel.pc \
		clients/libschakel/schakel.h clients/libschakel/libschakel.pc.in
	rm -rf $(EXAMPLE_PREFIX)
	$(MAKE) --no-print-directory -s BUILD=$(BUILD) DESTDIR= PREFIX=$(EXAMPLE_PREFIX) \
		UNITDIR=$(EXAMPLE_PREFIX)/lib/systemd/system \
		SYSUSERSDIR=$(EXAMPLE_PREFIX)/lib/sysusers.d install >/dev/null
	touch $@

$(BUILD)/examples/%: docs/examples/%.c $(BUILD)/examples/installed
	$(CC) -std=c11 $(OPT) $(WARNINGS) $(WERROR) $$($(EXAMPLE_PKG) --cflags libschakel) \
		-o $@ $< $(SAN_LD) $$($(EXAMPLE_PKG) --libs libschakel)
$(BUILD)/tests/integration/test_example: | $(EXAMPLE_BIN)

$(BUILD)/obj/tests/fuzz/replay_main.o: tests/fuzz/replay_main.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

tests-build: all $(UNIT_BIN) $(INTEG_BIN) $(FUZZ_REPLAY_BIN) $(EXAMPLE_BIN)

test: deps
	@$(MAKE) --no-print-directory tests-build
	@BUILD=$(BUILD) SCHAKELD=$(SCHAKELD) sh tests/run.sh $(UNIT_BIN) $(FUZZ_REPLAY_BIN) $(INTEG_BIN) $(INTEROP) \
	  $(DEMO_CHECK) $(DOC_CHECKS)

check-asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=1 tests-build
	@BUILD=build/asan ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  sh tests/run.sh $(patsubst $(BUILD)/%,build/asan/%,$(UNIT_BIN) $(FUZZ_REPLAY_BIN) $(INTEG_BIN))

# Neither `fuzz` nor `check-valgrind` is part of `make test`.
# `make fuzz` builds every tests/fuzz/fuzz_X.c as a libFuzzer binary
# build/fuzz/fuzz_X (clang, ASan + UBSan, coverage on the project's code)
# and runs each for FUZZ_SECONDS with tests/fuzz/run-fuzz.sh; an input that
# fails is kept in tests/fuzz/corpus/X/, where the replay of `make test`
# finds it. clang's libFuzzer runtime is installed when missing.
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_BIN := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))

# Made only with BUILD=build/fuzz SAN=1 CC=clang, as `make fuzz` does.
$(BUILD)/fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BROKER_O) $(COMMON_O)
	$(CC) $(LDFLAGS_ALL) -fsanitize=fuzzer -o $@ $^ $(PKG_LIBS) $(FUZZ_LIBS_$*) -lm
$(BUILD)/fuzz_broker_frame: $(LIB_O)
$(BUILD)/fuzz_import: $(FUZZ_IMPORT_O) $(LIB_O)

fuzz: deps
	@mkdir -p build/fuzz; probe=build/fuzz/libfuzzer-probe; \
	echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return d && n; }' >$$probe.c; \
	if ! $(FUZZ_CC) -fsanitize=fuzzer,address,undefined $$probe.c -o $$probe >/dev/null 2>&1; then \
	  echo "fuzz: $(FUZZ_CC) cannot link a libFuzzer binary; installing clang libclang-rt-dev"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends \
	    clang libclang-rt-dev; \
	fi; rm -f $$probe $$probe.c
	@$(MAKE) --no-print-directory BUILD=build/fuzz SAN=1 CC=$(FUZZ_CC) \
	  CFLAGS="-fsanitize=fuzzer-no-link $(CFLAGS)" $(FUZZ_BIN)
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh tests/fuzz/run-fuzz.sh $(FUZZ_BIN)

# `make check-valgrind` builds the suite without sanitizers into
# build/valgrind, with plain malloc for secrets (sodium_malloc's guard pages
# confuse memcheck), and runs the unit tests and fuzz replays under memcheck
# through wrappers in build/valgrind/vg/. The integration tests run as they
# are (their harness waits on pidfds, which valgrind 3.19 cannot run), but
# every broker they start runs under memcheck: SCHAKELD names a wrapper,
# and the brokers' reports go to build/valgrind/vg/logs/.
VALGRIND ?= valgrind
VALGRIND_FLAGS := --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	--show-leak-kinds=definite --child-silent-after-fork=yes --num-callers=30
VG_BUILD := build/valgrind
VG_TESTS := $(patsubst $(BUILD)/%,$(VG_BUILD)/%,$(UNIT_BIN) $(FUZZ_REPLAY_BIN))
VG_ERRORS := ERROR SUMMARY: [1-9]|Invalid (read|write|free)|uninitialised|Syscall param|Mismatched free|overlap|definitely lost in loss

check-valgrind: deps
	@command -v $(VALGRIND) >/dev/null 2>&1 || { \
	  echo "check-valgrind: installing valgrind"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends valgrind; }
	@$(MAKE) --no-print-directory BUILD=$(VG_BUILD) CFLAGS="-DSCHAKEL_PLAIN_ALLOC $(CFLAGS)" tests-build
	@rm -rf $(VG_BUILD)/vg && mkdir -p $(VG_BUILD)/vg/logs && \
	for b in $(VG_TESTS); do \
	  w=$(VG_BUILD)/vg/$${b#$(VG_BUILD)/}; mkdir -p $$(dirname $$w) && \
	  { echo '#!/bin/sh'; echo "exec $(VALGRIND) -q $(VALGRIND_FLAGS) $(CURDIR)/$$b \"\$$@\""; } \
	    >$$w && chmod +x $$w || exit 1; \
	done && \
	{ echo '#!/bin/sh'; echo "exec $(VALGRIND) $(VALGRIND_FLAGS) \
	  --log-file=$(CURDIR)/$(VG_BUILD)/vg/logs/schakeld.%p.log $(CURDIR)/$(VG_BUILD)/schakeld \"\$$@\""; } \
	  >$(VG_BUILD)/vg/schakeld && chmod +x $(VG_BUILD)/vg/schakeld
	@BUILD=$(VG_BUILD) SCHAKELD=$(CURDIR)/$(VG_BUILD)/vg/schakeld SCHAKEL_TEST_TIME_FACTOR=10 \
	  sh tests/run.sh $(patsubst $(VG_BUILD)/%,$(VG_BUILD)/vg/%,$(VG_TESTS)) \
	    $(patsubst $(BUILD)/%,$(VG_BUILD)/%,$(INTEG_BIN)); \
	rc=$$?; bad=$$(grep -l -E '$(VG_ERRORS)' $(VG_BUILD)/vg/logs/*.log 2>/dev/null); \
	for f in $$bad; do echo "check-valgrind: memcheck found errors in a broker: $$f"; cat "$$f"; done; \
	[ -z "$$bad" ] && echo "check-valgrind: $$(ls $(VG_BUILD)/vg/logs | wc -l) broker runs, no memcheck errors"; \
	[ $$rc -eq 0 ] && [ -z "$$bad" ]

# ---------------------------------------------------------------- benchmarks
# Never part of `make test`: timings on shared machines are for reading, not
# asserting. Each bench_X.c in tests/bench/ links tests/bench/support*.c, the
# client library, the common code and what BENCH_EXTRA_bench_X names (the
# policy bench measures the broker's own decision code in-process);
# tests/bench/run.sh runs them, writes tests/bench/results/ and draws the
# latency CDFs with gnuplot (Debian's gnuplot-nox, installed when missing).
BENCH_SRC := $(wildcard tests/bench/bench_*.c)
BENCH_BIN := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
BENCH_SUPPORT_O := $(call obj,$(wildcard tests/bench/support*.c))
BENCH_EXTRA_bench_policy := $(BROKER_O)
BENCH_EXTRA_bench_reconnect := $(BUILD)/obj/tests/bench/reconnect_report.o

$(BUILD)/bench/bench_%: $(BUILD)/obj/tests/bench/bench_%.o $(BENCH_SUPPORT_O) \
		$$(BENCH_EXTRA_bench_$$*) $(LIB_O) $(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) -lpthread -lm

bench-deps: deps
	@command -v gnuplot >/dev/null 2>&1 || { \
	  echo "bench: installing gnuplot-nox (the latency plots)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends gnuplot-nox; }

bench: bench-deps
	@$(MAKE) --no-print-directory all $(BENCH_BIN)
	@BUILD=$(BUILD) sh tests/bench/run.sh $(BENCH_BIN)

# ---------------------------------------------------------------- prototypes
# Not a bench: proto_mailbox measures mailbox schemas in SQLite alone, for
# docs/design/mailbox.md (which gives its callgrind commands); neither
# `make bench` nor `make test` builds or runs it. `make proto-mailbox`
# prints its wall times for each schema at 256 and at 3 items a publish.
PROTO_MAILBOX := $(BUILD)/bench/proto_mailbox

$(PROTO_MAILBOX): tests/bench/proto_mailbox.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(WARNINGS) $(WERROR) $(CFLAGS) $(LDFLAGS_ALL) -o $@ $< -lsqlite3

proto-mailbox: $(PROTO_MAILBOX)
	@for n in 256 3; do for s in none today batch slim log; do \
	  $(PROTO_MAILBOX) --schema $$s --batch $$n || exit 1; echo; done; done

# Nor is mailbox_rows: the store's mailbox rows (store_mailbox.c) of a
# publish against rows of one delivery, with the store's own code, for callgrind (its header
# gives the commands). `make mailbox-rows` only builds it.
MAILBOX_ROWS := $(BUILD)/bench/mailbox_rows

$(MAILBOX_ROWS): $(call obj,tests/bench/mailbox_rows.c) $(BROKER_O) $(COMMON_O)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) -lm

mailbox-rows: $(MAILBOX_ROWS)

# ---------------------------------------------------------------- demo and run
demo: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) sh deploy/demo/run-demo.sh

run: all
	@BUILD=$(BUILD) sh deploy/demo/run-broker.sh

# ---------------------------------------------------------------- install
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig \
		$(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/man/man3 $(DESTDIR)$(PREFIX)/share/man/man5 \
		$(DESTDIR)$(PREFIX)/share/man/man8 \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	install -m 0755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 $(LIBA) $(DESTDIR)$(PREFIX)/lib/
	install -m 0755 $(LIBSO) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libschakel.so.1 $(DESTDIR)$(PREFIX)/lib/libschakel.so
	install -m 0644 clients/libschakel/schakel.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|g' clients/libschakel/libschakel.pc.in \
		>$(DESTDIR)$(PREFIX)/lib/pkgconfig/libschakel.pc
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/pkgconfig/libschakel.pc
	for s in 1 3 5 8; do for m in docs/man/*.$$s; do \
	  [ ! -f "$$m" ] || install -m 0644 "$$m" $(DESTDIR)$(PREFIX)/share/man/man$$s/ || exit 1; \
	done; done
	sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|g' deploy/systemd/schakeld.service \
		>$(DESTDIR)$(UNITDIR)/schakeld.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/schakeld.service
	install -m 0644 deploy/systemd/schakel.sysusers $(DESTDIR)$(SYSUSERSDIR)/schakel.conf
	@echo "install: programs in $(PREFIX)/bin, the unit in $(UNITDIR)," \
	  "the sysusers.d file in $(SYSUSERSDIR); next: docs/OPERATIONS.md, First install"

format:
	clang-format -i $(COMMON_SRC) common/*.h broker/*.c broker/*.h clients/*/*.c clients/*/*.h \
		tests/*/*.c $(wildcard tests/*/*.h)

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

#!/usr/bin/python3
"""test_interop.py — the independent Python client against the real broker.

Starts build/schakeld (or $SCHAKELD) on a loopback port chosen at run time,
with keys and a policy generated into a temporary directory, and runs named
checks of docs/PROTOCOL.md with tests/interop/schakel_client.py. Prints one
line per check and ends with exactly one line "interop: N passed, M failed";
exits non-zero if any check failed.

Run from anywhere (paths are taken relative to this file):
    tests/interop/test_interop.py [-v] [CHECK-NAME-SUBSTRING ...]
"""

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import nacl.signing
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True      # leave no __pycache__ in the tree

import schakel_client as sc  # noqa: E402

PROTOCOL_MD = os.path.join(ROOT, "docs", "PROTOCOL.md")
OPERATIONS_MD = os.path.join(ROOT, "docs", "OPERATIONS.md")
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
ANSWER_S = 5.0          # how long to wait for an answer the broker must send
SILENCE_S = 1.0         # how long to wait to conclude that nothing comes

VERBOSE = False

# Principals of the test policy: name -> (principal id, role). "gemeente"
# uses the seed of the document's test vector (2.6, 6.3), so that the
# document's own Publish frame (6.4) can be sent to the broker as is.
VECTOR_SEED = b"\x01" * 32
PRINCIPALS = {
    "gemeente": ("gemeente/meldingen", "system"),
    "politie": ("politie/bvh-koppeling", "system"),
    "politie-beheer": ("politie/beheer", "operator"),
    "woco": ("woco/medewerker", "caseworker"),
}

POLICY = """\
version: 1
partners:
  - id: gemeente
    name: Gemeente
  - id: politie
    name: Politie
  - id: woco
    name: Woningcorporatie
principals:
  - id: gemeente/meldingen
    role: system
    key_file: keys/gemeente.pub
  - id: politie/bvh-koppeling
    role: system
    key_file: keys/politie.pub
  - id: politie/beheer
    role: operator
    key_file: keys/politie-beheer.pub
  - id: woco/medewerker
    role: caseworker
    key_file: keys/woco.pub
rules:
  - id: gemeente-ondermijning
    from: [gemeente]
    to: [politie]
    themes: [ondermijning]
    areas: [GM0935]
    purpose: "Aanpak ondermijning"
    legal_basis: "Convenant art. 5"
    fields: [area, address, summary]
    retention: 90d
  - id: gemeente-overlast
    from: [gemeente]
    to: [politie]
    themes: [overlast]
    areas: [BU09350101]
    purpose: "Aanpak overlast"
    legal_basis: "Convenant art. 6"
    fields: [area, address, severity, observed_at]
    retention: 30d
case_types:
  - id: interop-zaak
    purpose: "Gezamenlijke aanpak"
    legal_basis: "Convenant art. 7"
    lead: [gemeente]
    members:
      - id: interop-zaak-politie
        partners: [politie]
        purpose: "Opsporing"
        legal_basis: "Wpg art. 16"
        fields: [text, financieel]
        signal_fields: [area]
      - id: interop-zaak-woco
        partners: [woco]
        purpose: "Huurbeheer"
        legal_basis: "Convenant art. 8"
        fields: [address]
    retention_after_close: 1y
    reopen: true
"""

RULE_FIELDS = {
    "gemeente-ondermijning": ("Aanpak ondermijning", "Convenant art. 5", 90 * 86400,
                              {"area", "address", "summary"}),
    "gemeente-overlast": ("Aanpak overlast", "Convenant art. 6", 30 * 86400,
                          {"area", "address", "severity", "observed_at"}),
}


class CheckFailed(AssertionError):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


def expect_eq(got, want, what):
    if got != want:
        raise CheckFailed("%s: got %r, want %r" % (what, got, want))


def log(*args):
    if VERBOSE:
        print("   ", *args, flush=True)


# --- the broker -----------------------------------------------------------

def broker_binary():
    path = os.environ.get("SCHAKELD") or os.path.join(os.environ.get("BUILD") or "build",
                                                      "schakeld")
    if not os.path.isabs(path):
        path = os.path.join(ROOT, path)
    return path


class Broker:
    """schakeld in a temporary directory, ready when it wrote READY."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.proc = None
        self.endpoint = None
        self.log_path = os.path.join(workdir, "schakeld.log")

    def store_key(self):
        """The store's sealing key and the empty store, made once with
        `schakeld --init` (the broker never creates its store)."""
        path = os.path.join(self.workdir, "keys", "store.key")
        store = os.path.join(self.workdir, "store.db")
        if not os.path.exists(path) or not os.path.exists(store):
            subprocess.run([broker_binary(), "--init", "--store-key", path, "--store", store],
                           check=True, stdout=subprocess.DEVNULL)
        return path

    def start(self, listen="tcp://127.0.0.1:*", settings=()):
        """Start the broker; SETTINGS are KEY=VALUE limits given with --set."""
        binary = broker_binary()
        if not os.access(binary, os.X_OK):
            raise RuntimeError("broker binary %s missing (run `make all`)" % binary)
        rfd, wfd = os.pipe()
        args = [binary, "--listen", listen,
                "--key", os.path.join(self.workdir, "keys", "broker.key"),
                "--policy", os.path.join(self.workdir, "policy.yaml"),
                "--store", os.path.join(self.workdir, "store.db"),
                "--store-key", self.store_key(),
                "--ready-fd", str(wfd)]
        for setting in settings:
            args += ["--set", setting]
        with open(self.log_path, "wb") as logf:
            try:
                self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf,
                                             stderr=subprocess.STDOUT, pass_fds=(wfd,),
                                             cwd=self.workdir)
            finally:
                os.close(wfd)
        try:
            line = self._read_ready(rfd)
        finally:
            os.close(rfd)
        m = re.fullmatch(r"READY (tcp://127\.0\.0\.1:[0-9]+)", line)
        if not m:
            raise RuntimeError("unexpected ready line %r" % line)
        self.endpoint = m.group(1)

    def _read_ready(self, rfd):
        deadline = time.monotonic() + READY_TIMEOUT_S
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("broker not ready within %.0f s:\n%s"
                                   % (READY_TIMEOUT_S, self.log_text()))
            ready, _, _ = select.select([rfd], [], [], left)
            if not ready:
                continue
            chunk = os.read(rfd, 256)
            if not chunk:
                raise RuntimeError("broker closed the ready pipe without READY "
                                   "(exit %r):\n%s" % (self.proc.poll(), self.log_text()))
            data += chunk
        return data.split(b"\n", 1)[0].decode("ascii", "replace")

    def log_text(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        return rc


# --- the environment shared by the checks ---------------------------------

class Env:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="schakel-interop-")
        self.keydir = os.path.join(self.tmp, "keys")
        os.mkdir(self.keydir, 0o700)
        gen = os.path.join(self.tmp, "gen")
        os.mkdir(gen)
        self.pb = sc.load_schema(os.path.join(ROOT, "proto"), gen)
        self.keys = {}
        for name in ("broker", "stranger") + tuple(PRINCIPALS):
            seed = VECTOR_SEED if name == "gemeente" else None
            self.keys[name] = sc.write_key_pair(self.keydir, name, seed)
        with open(os.path.join(self.tmp, "policy.yaml"), "w") as f:
            f.write(POLICY)
        os.chmod(os.path.join(self.tmp, "policy.yaml"), 0o644)  # the broker refuses g+w, o+w
        self.ctx = zmq.Context()
        self.open = []
        self.broker = Broker(self.tmp)
        try:
            self.broker.start()
        except BaseException:
            self.shutdown()
            raise

    def key_file(self, name):
        return os.path.join(self.keydir, name + ".key")

    def connect(self, name, broker_pub=None):
        """A connection of principal NAME, with its key files."""
        conn = sc.connect(self.pb, self.broker.endpoint, self.key_file(name),
                          broker_pub or os.path.join(self.keydir, "broker.pub"), self.ctx)
        self.open.append(conn)
        return conn

    def close(self, conn):
        conn.close()
        if conn in self.open:
            self.open.remove(conn)

    def close_all(self):
        for conn in list(self.open):
            self.close(conn)

    def shutdown(self):
        self.close_all()
        self.ctx.destroy(linger=0)
        rc = self.broker.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return rc

    # helpers used by several checks

    def signal(self, **fields):
        """A publishable Signal from gemeente/meldingen (rule gemeente-ondermijning)."""
        s = self.pb.Signal(sender="gemeente/meldingen", kind="hennepkwekerij",
                           theme="ondermijning", area="GM0935")
        for name, value in fields.items():
            if name == "address":
                s.address.CopyFrom(value)
            elif name == "recipients":
                s.recipients.extend(value)
            else:
                setattr(s, name, value)
        return s

    def drain(self, name):
        """Receive and acknowledge everything in NAME's mailbox; return the deliveries."""
        conn = self.connect(name)
        got = []
        try:
            left = conn.backlog()
            while left:
                d = conn.receive(ANSWER_S)
                expect(d is not None, "backlog %d but no delivery came" % left)
                got.append(d)
                conn.ack(d.seq)
                left = conn.backlog()
        finally:
            self.close(conn)
        return got


def reason_name(env, rejected):
    return env.pb.Reason.Name(rejected.reason) if rejected.HasField("reason") else None


def expect_rejected(env, answer, reason, message_id=None, item_index=None):
    body = answer.WhichOneof("body")
    expect(body == "rejected", "want Rejected %s, got %s %s" % (reason, body, answer))
    r = answer.rejected
    log("Rejected", reason_name(env, r), "item_index", r.item_index, "text", repr(r.text))
    expect_eq(reason_name(env, r), reason, "Rejected.reason")
    expect(r.HasField("text") and r.text and len(r.text.encode()) <= 255,
           "Rejected.text present and at most 255 bytes (4.5)")
    expect(r.HasField("item_index"), "Rejected.item_index always present (4.5)")
    if item_index is not None:
        expect_eq(r.item_index, item_index, "Rejected.item_index")
    if message_id is not None:
        expect(r.HasField("message_id"), "Rejected names the message_id (4.5)")
        expect_eq(r.message_id, message_id, "Rejected.message_id")
    return r


def expect_accepted(answer, message_id, n_items):
    body = answer.WhichOneof("body")
    if body == "rejected":
        raise CheckFailed("want Accepted, got Rejected %s: %s"
                          % (answer.rejected.reason, answer.rejected.text))
    expect_eq(body, "accepted", "answer body")
    a = answer.accepted
    expect_eq(a.message_id, message_id, "Accepted.message_id")
    expect_eq(len(a.items), n_items, "number of ItemAccepted")
    for i, item in enumerate(a.items):
        expect(item.HasField("seq") and item.HasField("recipients"),
               "ItemAccepted %d has seq and recipients (4.4)" % i)
    return a


def check_delivery(env, d, rule_id, item_seq=None, sender="gemeente/meldingen"):
    """The fields of 4.6 on a delivery decided by RULE_ID; returns the Signal."""
    for field in ("seq", "message_id", "item_index", "sender", "sender_partner", "rule_id",
                  "rule_hash", "purpose", "legal_basis", "accepted_at", "expires_at",
                  "signal", "item_seq", "redelivery"):
        expect(d.HasField(field), "Deliver.%s set (4.6: the broker always sets every field)"
               % field)
    purpose, legal_basis, retention, _ = RULE_FIELDS[rule_id]
    expect(d.seq >= 1, "Deliver.seq >= 1")
    expect_eq(len(d.message_id), 16, "Deliver.message_id length")
    expect_eq(d.sender, sender, "Deliver.sender")
    expect_eq(d.sender_partner, sender.split("/")[0], "Deliver.sender_partner")
    expect_eq(d.rule_id, rule_id, "Deliver.rule_id")
    expect(re.fullmatch(r"[0-9a-f]{64}", d.rule_hash), "rule_hash is 64 lower-case hex digits")
    expect_eq(d.purpose, purpose, "Deliver.purpose")
    expect_eq(d.legal_basis, legal_basis, "Deliver.legal_basis")
    now = int(time.time())
    expect(now - 600 <= d.accepted_at <= now + 5, "accepted_at is the broker's recent clock")
    expect_eq(d.expires_at, d.accepted_at + retention, "expires_at = accepted_at + retention")
    if item_seq is not None:
        expect_eq(d.item_seq, item_seq, "Deliver.item_seq = ItemAccepted.seq")
    s = env.pb.Signal()
    s.ParseFromString(d.signal)
    return s


def signal_fields(s):
    return {fd.name for fd, _ in s.ListFields()}


# --- the document's own values --------------------------------------------

def document():
    with open(PROTOCOL_MD, encoding="utf-8") as f:
        return f.read()


def doc_section(text, heading):
    """The text of the section whose heading line starts with HEADING."""
    m = re.search(r"^#+ " + re.escape(heading) + r".*?$(.*?)(?=^#+ )", text, re.M | re.S)
    if not m:
        raise CheckFailed("PROTOCOL.md has no section %r" % heading)
    return m.group(1)


def doc_table_hex(section, label):
    """The hex value (in backquotes) of a table row whose first cell starts with LABEL."""
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith(label):
            parts = re.findall(r"`([0-9a-f]+)`", cells[-1])
            if parts:
                return bytes.fromhex("".join(parts))
    raise CheckFailed("PROTOCOL.md: no table row %r" % label)


def doc_code_blocks(section):
    return re.findall(r"^```[a-z]*\n(.*?)^```", section, re.M | re.S)


# --- the checks -----------------------------------------------------------
#
# Each check names the sections of PROTOCOL.md it holds the broker to. Checks
# leave politie's mailbox empty, so they do not depend on each other's order.

CHECKS = []


def check(name):
    def register(fn):
        CHECKS.append((name, fn))
        return fn
    return register


@check("1 whoami: Heartbeat names principal, partner, role")
def check_whoami(env):
    pb = env.pb
    for name, (principal, role) in PRINCIPALS.items():
        if role == "operator":
            continue
        conn = env.connect(name)
        conn.wait_handshake(ANSWER_S)
        before = int(time.time() * 1000)
        hb = conn.whoami()
        after = int(time.time() * 1000)
        expect_eq(hb.principal, principal, "Heartbeat.principal")
        expect_eq(hb.partner, principal.split("/")[0], "Heartbeat.partner")
        expect_eq(hb.role, role, "Heartbeat.role")
        expect(hb.HasField("backlog"), "Heartbeat.backlog present")
        expect(hb.HasField("time") and before - 5000 <= hb.time <= after + 5000,
               "Heartbeat.time is the broker's clock in milliseconds")
        expect(not hb.HasField("store_epoch"), "no store_epoch unless asked for")
        expect(not hb.HasField("store_epoch_floor"), "no store_epoch_floor unless asked for")
        expect_eq(hb.heartbeat_id, conn.heartbeat_id(conn.heartbeats_sent),
                  "Heartbeat.heartbeat_id: the one whoami sent")
        answer = conn.request(pb.Frame(version=1, heartbeat=pb.Heartbeat(
            time=int(time.time() * 1000))).SerializeToString())
        expect(answer.WhichOneof("body") == "heartbeat", "a Heartbeat answers, got %s" % answer)
        expect(not answer.heartbeat.HasField("heartbeat_id"), "no heartbeat_id unless sent")
        env.close(conn)


@check("1c heartbeat_id: each answer echoes its own Heartbeat's bytes, to that connection only;"
       " over 16 bytes INVALID_FIELD")
def check_heartbeat_id(env):
    pb = env.pb
    asker = env.connect("politie")
    other = env.connect("gemeente")
    for hid in (b"", b"x", b"\x00" * 16, os.urandom(16)):
        answer = asker.request(pb.Frame(version=1, heartbeat=pb.Heartbeat(
            time=int(time.time() * 1000), heartbeat_id=hid)).SerializeToString())
        expect(answer.WhichOneof("body") == "heartbeat", "a Heartbeat answers, got %s" % answer)
        expect(answer.heartbeat.HasField("heartbeat_id"), "the answer carries heartbeat_id")
        expect_eq(answer.heartbeat.heartbeat_id, hid, "Heartbeat.heartbeat_id echoed")
    # two at once: answers come in order, each naming its own
    asker.send(heartbeat=pb.Heartbeat(heartbeat_id=b"first"))
    asker.send(heartbeat=pb.Heartbeat(heartbeat_id=b"second", store_epoch=b""))
    first = asker.wait_for(lambda f: f.WhichOneof("body") == "heartbeat", ANSWER_S).heartbeat
    second = asker.wait_for(lambda f: f.WhichOneof("body") == "heartbeat", ANSWER_S).heartbeat
    expect_eq((first.heartbeat_id, first.HasField("store_epoch")), (b"first", False),
              "the first answer")
    expect_eq((second.heartbeat_id, len(second.store_epoch)), (b"second", 16), "the second answer")
    # nothing of the asker's bytes reaches another connection
    hb = other.whoami()
    expect_eq(hb.heartbeat_id, other.heartbeat_id(other.heartbeats_sent),
              "another connection's answer names its own Heartbeat only")
    expect(all(f.WhichOneof("body") != "heartbeat" for f in other.unmatched),
           "no stray Heartbeat on another connection")
    answer = asker.request(pb.Frame(version=1, heartbeat=pb.Heartbeat(
        heartbeat_id=b"0123456789abcdefg")).SerializeToString())
    r = expect_rejected(env, answer, "INVALID_FIELD", None, -1)
    expect("heartbeat_id" in r.text, "the refusal names heartbeat_id: %r" % r.text)
    expect_eq(asker.whoami().principal, "politie/bvh-koppeling", "still answered afterwards")
    env.close(other)
    env.close(asker)


@check("1d a Heartbeat answer is paired by its heartbeat_id: a keep-alive's answer, counted"
       " before an Ack, does not answer the backlog asked after it (4.9, appendix B 10)")
def check_heartbeat_pairing(env):
    g = env.connect("gemeente")
    p = env.connect("politie")
    res = g.publish([env.signal()])
    expect_accepted(res.answer, res.message_id, 1)
    d = p.receive(ANSWER_S)
    expect(d is not None, "politie receives the delivery")
    keepalive = p.send_heartbeat()      # as receive() does when idle; its answer not read yet
    p.ack(d.seq)
    expect_eq(p.backlog(), 0, "the backlog of the Heartbeat sent after the Ack")
    early = [f.heartbeat for f in p.unmatched if f.WhichOneof("body") == "heartbeat"]
    expect_eq([(hb.heartbeat_id, hb.backlog) for hb in early], [(p.heartbeat_id(keepalive), 1)],
              "the keep-alive's answer, read first, counts the delivery before the Ack")
    expect_eq(p.ack_refusals, [], "no UNKNOWN_DELIVERY for the ack")
    env.close(g)
    env.close(p)


@check("1b store epoch: asked with an empty store_epoch, 16 bytes, the same on every connection;"
       " its floor seq 0 (never restored)")
def check_store_epoch(env):
    first = env.connect("politie")
    epoch = first.store_epoch()
    expect_eq(len(epoch), 16, "Heartbeat.store_epoch length")
    expect_eq(first.store_epoch_floor(), (epoch, 0), "the epoch with its floor seq")
    unasked = first.whoami()
    expect(not unasked.HasField("store_epoch") and not unasked.HasField("store_epoch_floor"),
           "a Heartbeat that does not ask gets neither")
    second = env.connect("gemeente")
    expect_eq(second.store_epoch(), epoch, "another principal's connection")
    env.close(second)
    env.close(first)


@check("2 single publish: Accepted, delivered with the rule's fields only, ack, backlog 0")
def check_single(env):
    pb = env.pb
    g = env.connect("gemeente")
    p = env.connect("politie")
    expect_eq(p.backlog(), 0, "politie backlog before")
    observed = int(time.time()) - 3600
    sig = env.signal(address=pb.Address(postcode="6211AB", house_number=12, addition="A"),
                     subject="p-12345678", grounds="Stroomverbruik en geurmelding",
                     case_ref="ZAAK-2026-001", severity=pb.SEVERITY_HIGH,
                     observed_at=observed, summary="Vermoedelijke hennepkwekerij",
                     source_ref="MELD-42")
    res = g.publish([sig])
    a = expect_accepted(res.answer, res.message_id, 1)
    expect(not a.HasField("duplicate"), "duplicate absent on a first answer (4.4)")
    expect_eq(a.items[0].recipients, 1,
              "recipients: politie's system principal, not its operator (5.4)")
    d = p.receive(ANSWER_S)
    expect(d is not None, "politie receives the delivery")
    s = check_delivery(env, d, "gemeente-ondermijning", a.items[0].seq)
    expect_eq(d.message_id, res.message_id, "Deliver.message_id")
    expect_eq(d.item_index, 0, "Deliver.item_index")
    expect_eq(d.redelivery, False, "Deliver.redelivery on a first delivery")
    expect_eq(signal_fields(s), {"sender", "kind", "theme", "area", "address", "summary"},
              "fields of the delivered Signal (5.5)")
    expect_eq((s.sender, s.kind, s.theme, s.area), (sig.sender, sig.kind, sig.theme, sig.area),
              "delivered sender/kind/theme/area")
    expect_eq(s.address, sig.address, "delivered address")
    expect_eq(s.summary, sig.summary, "delivered summary")
    expect_eq(p.backlog(), 1, "backlog counts the delivery in flight (7.7)")
    p.ack(d.seq)
    expect_eq(p.backlog(), 0, "backlog after the ack")
    expect_eq(p.ack_refusals, [], "no UNKNOWN_DELIVERY for the ack")
    expect(p.receive(SILENCE_S) is None, "nothing else delivered")


@check("3 batch of 3 (tree): Accepted with 3 item results, delivered in order")
def check_batch(env):
    g = env.connect("gemeente")
    signals = [env.signal(kind="kind-%d" % i, summary="item %d" % i) for i in range(3)]
    res = g.publish(signals)
    a = expect_accepted(res.answer, res.message_id, 3)
    seqs = [it.seq for it in a.items]
    expect(len(set(seqs)) == 3, "three distinct item seqs")
    expect(all(it.recipients == 1 for it in a.items), "each item queued for 1 mailbox")
    p = env.connect("politie")
    got = []
    for _ in range(3):
        d = p.receive(ANSWER_S)
        expect(d is not None, "politie receives 3 deliveries")
        got.append(d)
    for i, d in enumerate(got):
        check_delivery(env, d, "gemeente-ondermijning", seqs[i])
        expect_eq((d.message_id, d.item_index), (res.message_id, i),
                  "delivery %d names the publish and its item index" % i)
        s = env.pb.Signal()
        s.ParseFromString(d.signal)
        expect_eq(s.kind, "kind-%d" % i, "delivered kind of item %d" % i)
    expect([d.seq for d in got] == sorted(d.seq for d in got), "deliveries in seq order (7.6)")
    p.ack(*[d.seq for d in got])
    expect_eq(p.backlog(), 0, "backlog after acking all three")


@check("4 signing test vector of 6.3 reproduced (items, leaves, root, signed bytes, signature)")
def check_vector(env):
    pb = env.pb
    sec = doc_section(document(), "6.3 Test vector")
    blocks = [b for b in doc_code_blocks(sec) if re.fullmatch(r"[0-9a-f\s]+", b)]
    expect_eq(len(blocks), 2, "hex item blocks in 6.3")
    doc_items = [bytes.fromhex(b) for b in blocks]
    sk = sc.load_signing_key(env.key_file("gemeente"))       # seed 32 x 0x01
    expect_eq(bytes(sk.verify_key).hex(), re.search(r"public key\s+`([0-9a-f]{64})`", sec)
              .group(1), "public key of the vector seed")
    item0 = pb.Signal(sender="gemeente/meldingen", kind="hennepkwekerij",
                      theme="ondermijning", area="GM0935").SerializeToString()
    item1 = pb.Signal(sender="gemeente/meldingen", kind="overlast-melding", theme="overlast",
                      area="BU09350101",
                      address=pb.Address(postcode="6211AB", house_number=12),
                      severity=pb.SEVERITY_MEDIUM, observed_at=1767225600).SerializeToString()
    expect_eq(item0, doc_items[0], "item 0 as Python protobuf serializes it")
    expect_eq(item1, doc_items[1], "item 1 as Python protobuf serializes it")
    expect_eq(len(item0), 58, "item 0 length")
    expect_eq(len(item1), 80, "item 1 length")
    leaf0, leaf1 = sc.leaf_hash(item0), sc.leaf_hash(item1)
    expect_eq(leaf0, doc_table_hex(sec, "leaf0"), "leaf0")
    expect_eq(leaf1, doc_table_hex(sec, "leaf1"), "leaf1")
    root = sc.tree_root([item0, item1])
    expect_eq(root, doc_table_hex(sec, "root"), "root")
    mid = doc_table_hex(sec, "message_id")
    expect_eq(mid, bytes(range(16)), "message_id")
    signed = sc.signed_bytes(mid, [item0, item1])
    expect_eq(signed, doc_table_hex(sec, "signed bytes"), "signed bytes")
    sig = sc.sign_publish(sk, mid, [item0, item1])
    expect_eq(sig, doc_table_hex(sec, "signature"), "signature")
    sk.verify_key.verify(signed, sig)
    # 6.4: the whole frame
    sec64 = doc_section(document(), "6.4 The whole Publish frame")
    frame_hex = "".join(doc_code_blocks(sec64)[0].split())
    frame = pb.Frame(version=1, publish=pb.Publish(message_id=mid, items=[item0, item1],
                                                   signature=sig)).SerializeToString()
    expect_eq(len(frame), 232, "frame length (6.4)")
    expect_eq(frame.hex(), frame_hex, "whole Publish frame (6.4)")


@check("4b tree-shape vectors of 6.5 reproduced")
def check_tree_vectors(env):
    sec = doc_section(document(), "6.5 Tree-shape vectors")
    rows = re.findall(r"^\|\s*([0-9]+)\s*\|[^|]*\|\s*`([0-9a-f]{64})`\s*\|", sec, re.M)
    expect_eq(len(rows), 7, "rows in 6.5")
    for n, want in rows:
        items = [bytes([ord("a") + i]) for i in range(int(n))]
        expect_eq(sc.tree_root(items).hex(), want, "root of %s items" % n)


@check("4c key test vector of 2.6 reproduced (Z85, Ed25519, X25519 both ways)")
def check_key_vector(env):
    sec = doc_section(document(), "2.6 Key test vector")
    val = {}
    for line in sec.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[1].startswith("`"):
            val[cells[0]] = cells[1].strip("`")
    seed = bytes.fromhex(val["seed (32 bytes of 0x01), hex"])
    expect_eq(seed, VECTOR_SEED, "seed")
    expect_eq(sc.z85_encode(seed), val["seed, Z85 (the `.key` line)"], "seed Z85")
    sk = sc.load_signing_key(env.key_file("gemeente"))
    expect_eq(bytes(sk), seed, "seed read back from the written .key file")
    pk = bytes(sk.verify_key)
    expect_eq(pk.hex(), val["Ed25519 public key, hex"], "Ed25519 public key")
    expect_eq(sc.z85_encode(pk), val["Ed25519 public key, Z85 (the `.pub` line)"],
              "Ed25519 public Z85")
    expect_eq(sc.read_key_line(os.path.join(env.keydir, "gemeente.pub")),
              val["Ed25519 public key, Z85 (the `.pub` line)"], ".pub file line")
    # the kind on the first line: a .pub is never taken as the seed, a
    # .key never as a public key (2.2)
    for path, load in ((os.path.join(env.keydir, "gemeente.pub"), sc.load_signing_key),
                       (env.key_file("gemeente"), sc.load_verify_key)):
        try:
            load(path)
            expect(False, "%s read by %s" % (path, load.__name__))
        except sc.KeyFileError as e:
            expect("its first line says so" in str(e), "refusal of %s: %s" % (path, e))
    # who may write a key file, or its folder, chooses the key (2.2)
    scratch = tempfile.mkdtemp(prefix="schakel-interop-keys-")
    try:
        pub = os.path.join(scratch, "gemeente.pub")
        shutil.copyfile(os.path.join(env.keydir, "gemeente.pub"), pub)
        os.chmod(scratch, 0o700)
        os.chmod(pub, 0o644)
        sc.load_verify_key(pub)
        for file_mode, dir_mode, what in ((0o664, 0o700, "may be written by group or others"),
                                          (0o644, 0o770, "in a folder group or others may write")):
            os.chmod(pub, file_mode)
            os.chmod(scratch, dir_mode)
            try:
                sc.load_verify_key(pub)
                expect(False, "%s read at mode %o in a folder at %o" % (pub, file_mode, dir_mode))
            except sc.KeyFileError as e:
                expect(what in str(e), "refusal of %s: %s" % (pub, e))
        os.chmod(pub, 0o644)
        os.chmod(scratch, 0o1777)  # sticky: a file of our own is taken
        sc.load_verify_key(pub)

        def refused(path, what):
            try:
                sc.load_verify_key(path)
                expect(False, "%s read" % path)
            except sc.KeyFileError as e:
                expect(what in str(e), "refusal of %s: %s" % (path, e))

        # every folder on the path counts, not only the file's own
        inner = os.path.join(scratch, "inner")
        os.mkdir(inner, 0o700)
        deep = os.path.join(inner, "gemeente.pub")
        shutil.copyfile(pub, deep)
        os.chmod(deep, 0o644)
        os.chmod(scratch, 0o777)
        refused(deep, "in a folder group or others may write (%s)" % scratch)
        os.chmod(scratch, 0o700)
        sc.load_verify_key(deep)
        if os.geteuid() == 0:  # a folder or a .pub of another user
            os.chown(inner, 65534, -1)
            refused(deep, "in a folder of another user (%s, uid 65534)" % inner)
            os.chown(inner, 0, -1)
            os.chown(deep, 65534, -1)
            refused(deep, "key file of another user (uid 65534)")
            os.chown(deep, 0, -1)
        # a .pub without its first line: a seed's text looks the same
        bare = os.path.join(scratch, "bare.pub")
        with open(bare, "w", encoding="ascii") as f:
            f.write(sc.z85_encode(pk) + "\n")
        os.chmod(bare, 0o644)
        refused(bare, "does not say it is a public key")
    finally:
        os.chmod(scratch, 0o700)
        shutil.rmtree(scratch)
    xpk, xsk = sc.curve_public(sk.verify_key), sc.curve_secret(sk)
    expect_eq(xpk.hex(), val["X25519 public key, hex"], "X25519 public (PyNaCl)")
    expect_eq(sc.curve_public_math(pk), xpk, "X25519 public (arithmetic of 2.4)")
    expect_eq(sc.z85_encode(xpk), val["X25519 public key, Z85"], "X25519 public Z85")
    expect_eq(xsk.hex(), val["X25519 secret key, hex"], "X25519 secret (PyNaCl)")
    expect_eq(sc.curve_secret_math(seed), xsk, "X25519 secret (arithmetic of 2.4)")
    expect_eq(sc.z85_encode(xsk), val["X25519 secret key, Z85"], "X25519 secret Z85")


@check("4d example frames of 4.10 reproduced")
def check_example_frames(env):
    pb = env.pb
    sec = doc_section(document(), "4.10 Example frames")
    rows = dict(re.findall(r"^\|\s*`(Frame\{[^`]*\})`\s*\|\s*`([0-9a-f]+)`", sec, re.M))
    built = {
        "Frame{version: 1, heartbeat: {time: 1767225600123}}":
            pb.Frame(version=1, heartbeat=pb.Heartbeat(time=1767225600123)),
        'Frame{version: 1, heartbeat: {time: 1767225600123, store_epoch: ""}}':
            pb.Frame(version=1, heartbeat=pb.Heartbeat(time=1767225600123, store_epoch=b"")),
        "Frame{version: 1, heartbeat: {time: 1767225600456, store_epoch: "
        "0x5d0c3e8a91f24b7765a0c1d2e3f40718, store_epoch_floor: 731844}}":
            pb.Frame(version=1, heartbeat=pb.Heartbeat(
                time=1767225600456, store_epoch=bytes.fromhex("5d0c3e8a91f24b7765a0c1d2e3f40718"),
                store_epoch_floor=731844)),
        "Frame{version: 1, flow: {window: 64}}": pb.Frame(version=1, flow=pb.Flow(window=64)),
        "Frame{version: 1, ack: {seqs: [7, 300]}}": pb.Frame(version=1,
                                                             ack=pb.Ack(seqs=[7, 300])),
    }
    expect_eq(set(rows), set(built), "example frames listed in 4.10")
    for text, frame in built.items():
        expect_eq(frame.SerializeToString().hex(), rows[text], text)


@check("4e the document's Publish frame (6.4) sent as is: Accepted, delivered by rule")
def check_vector_on_broker(env):
    sec64 = doc_section(document(), "6.4 The whole Publish frame")
    frame = bytes.fromhex("".join(doc_code_blocks(sec64)[0].split()))
    g = env.connect("gemeente")
    answer = g.request(frame, ANSWER_S)
    a = expect_accepted(answer, bytes(range(16)), 2)
    log("accepted", a)
    got = env.drain("politie")
    expect_eq(len(got), 2, "politie gets both items")
    rules = [d.rule_id for d in sorted(got, key=lambda d: d.item_index)]
    expect_eq(rules, ["gemeente-ondermijning", "gemeente-overlast"], "deciding rules")
    for d in got:
        s = check_delivery(env, d, d.rule_id)
        want = {"sender", "kind", "theme"} | {f for f in RULE_FIELDS[d.rule_id][3]
                                               if f in ("area", "address", "severity",
                                                        "observed_at")}
        if d.item_index == 0:
            want = {"sender", "kind", "theme", "area"}
        expect_eq(signal_fields(s), want, "delivered fields of item %d" % d.item_index)


@check("5a tampered signature: BAD_SIGNATURE; the id stays unused")
def check_bad_signature(env):
    g = env.connect("gemeente")
    items = [env.signal().SerializeToString()]
    mid = os.urandom(16)
    good = sc.sign_publish(g.signing_key, mid, items)
    bad = bytes([good[0] ^ 0x01]) + good[1:]
    res = g.publish_items(items, message_id=mid, signature=bad)
    expect_rejected(env, res.answer, "BAD_SIGNATURE", mid, -1)
    # signature by another registered key over the right bytes
    other = sc.sign_publish(env.keys["politie"], mid, items)
    res = g.publish_items(items, message_id=mid, signature=other)
    expect_rejected(env, res.answer, "BAD_SIGNATURE", mid, -1)
    # 7.3: a refused publish is not remembered, the id may be used again
    # 4.3 step 1: the signature is checked before the items' content is looked at
    odd = [sc.PUBLISH_TAG + b"\xff"]          # not a Signal at all
    res = g.publish_items(odd, message_id=mid, signature=good)
    expect_rejected(env, res.answer, "BAD_SIGNATURE", mid, -1)
    res = g.publish_items(items, message_id=mid)
    expect_accepted(res.answer, mid, 1)
    expect_eq(len(env.drain("politie")), 1, "one delivery")


@check("5b sender mismatch: SENDER_MISMATCH names the item, nothing stored")
def check_sender_mismatch(env):
    g = env.connect("gemeente")
    good = env.signal()
    wrong = env.signal(sender="politie/bvh-koppeling")
    res = g.publish([good, wrong])
    expect_rejected(env, res.answer, "SENDER_MISMATCH", res.message_id, 1)
    expect_eq(env.connect("politie").backlog(), 0, "nothing of the refused publish stored")


@check("5c theme no rule allows: POLICY_DENIED")
def check_policy_denied(env):
    g = env.connect("gemeente")
    res = g.publish([env.signal(theme="woonfraude")])
    expect_rejected(env, res.answer, "POLICY_DENIED", res.message_id, 0)
    res = g.publish([env.signal(recipients=["woco"])])
    expect_rejected(env, res.answer, "POLICY_DENIED", res.message_id, 0)
    expect_eq(env.connect("politie").backlog(), 0, "nothing stored")


def with_unknown_field(data, field=99):
    """DATA (a serialized message) plus a varint field FIELD = 1."""
    tag = field << 3
    out = bytearray()
    while True:
        b = tag & 0x7F
        tag >>= 7
        out.append(b | (0x80 if tag else 0))
        if not tag:
            break
    return data + bytes(out) + b"\x01"


@check("5d unknown field (in an item, in Publish, in Frame): INVALID_MESSAGE")
def check_unknown_field(env):
    pb = env.pb
    g = env.connect("gemeente")
    # in an item, correctly signed: 4.1 / 8
    item = with_unknown_field(env.signal().SerializeToString())
    res = g.publish_items([item])
    expect_rejected(env, res.answer, "INVALID_MESSAGE", res.message_id, 0)
    # in the Publish body
    mid = os.urandom(16)
    items = [env.signal().SerializeToString()]
    body = pb.Publish(message_id=mid, items=items,
                      signature=sc.sign_publish(g.signing_key, mid, items)).SerializeToString()
    frame = pb.Frame(version=1)
    frame.publish.ParseFromString(with_unknown_field(body))
    answer = g.request(frame.SerializeToString(), ANSWER_S)
    expect_rejected(env, answer, "INVALID_MESSAGE", mid, -1)
    # in the Frame itself
    mid = os.urandom(16)
    data = with_unknown_field(g.publish_frame(mid, items,
                                              sc.sign_publish(g.signing_key, mid, items)))
    answer = g.request(data, ANSWER_S)
    expect_rejected(env, answer, "INVALID_MESSAGE", mid, -1)
    # in a Heartbeat
    data = with_unknown_field(pb.Frame(version=1, heartbeat=pb.Heartbeat(
        time=int(time.time() * 1000))).SerializeToString())
    answer = g.request(data, ANSWER_S)
    expect_rejected(env, answer, "INVALID_MESSAGE", None, -1)
    expect_eq(env.connect("politie").backlog(), 0, "nothing stored")


@check("6 idempotent retry: duplicate=true; same id, other content: DUPLICATE_CONFLICT")
def check_idempotent(env):
    g = env.connect("gemeente")
    res = g.publish([env.signal(summary="eerste")])
    first = expect_accepted(res.answer, res.message_id, 1)
    again = g.retry(res)
    dup = expect_accepted(again.answer, res.message_id, 1)
    expect_eq(dup.duplicate, True, "Accepted.duplicate on a repeat")
    expect_eq(list(dup.items), list(first.items), "duplicate answer repeats the item results")
    other = g.publish([env.signal(summary="andere inhoud")], message_id=res.message_id)
    expect_rejected(env, other.answer, "DUPLICATE_CONFLICT", res.message_id, -1)
    # the same items in another order are other content too
    two = [env.signal(kind="a"), env.signal(kind="b")]
    res2 = g.publish(two)
    expect_accepted(res2.answer, res2.message_id, 2)
    swapped = g.publish(list(reversed(two)), message_id=res2.message_id)
    expect_rejected(env, swapped.answer, "DUPLICATE_CONFLICT", res2.message_id, -1)
    # the id is still bound to the accepted publish after a conflict
    again = g.retry(res)
    expect_eq(expect_accepted(again.answer, res.message_id, 1).duplicate, True,
              "duplicate after a conflict")
    # scope is per sender: woco may not publish ondermijning, but the broker must not
    # treat gemeente's id as woco's (it checks policy, not DUPLICATE_CONFLICT)
    w = env.connect("woco")
    ws = env.pb.Signal(sender="woco/medewerker", kind="x", theme="ondermijning", area="GM0935")
    wres = w.publish([ws], message_id=res.message_id)
    expect_rejected(env, wres.answer, "POLICY_DENIED", res.message_id, 0)
    got = env.drain("politie")
    expect_eq(len(got), 3, "deliveries: one for the first publish, two for the pair, "
              "none for the repeats")


@check("7 unregistered key: refused at the handshake (HANDSHAKE_FAILED_AUTH, 400)")
def check_unregistered(env):
    conn = env.connect("stranger")
    conn.send(heartbeat=env.pb.Heartbeat(time=int(time.time() * 1000)))
    try:
        conn.wait_handshake(ANSWER_S)
    except sc.HandshakeRefused as e:
        expect_eq(e.event, zmq.EVENT_HANDSHAKE_FAILED_AUTH, "monitor event")
        expect_eq(e.value, sc.ZAP_REFUSED_STATUS, "event value (ZAP status)")
    else:
        raise CheckFailed("handshake of an unregistered key succeeded")
    f = conn.sock.poll(int(SILENCE_S * 1000))
    expect_eq(f, 0, "a frame on a refused socket is never answered")
    again = conn.wait_event(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH,
                            SILENCE_S)
    expect(again is None, "libzmq does not try again after the ERROR (3.3)")


@check("7b operator key: refused at the handshake (3.3)")
def check_operator(env):
    conn = env.connect("politie-beheer")
    try:
        conn.wait_handshake(ANSWER_S)
    except sc.HandshakeRefused as e:
        expect_eq(e.value, sc.ZAP_REFUSED_STATUS, "event value (ZAP status)")
    else:
        raise CheckFailed("handshake of an operator key succeeded")


@check("7c wrong pinned broker key: HANDSHAKE_FAILED_NO_DETAIL (3.3)")
def check_wrong_broker_key(env):
    conn = env.connect("gemeente", broker_pub=os.path.join(env.keydir, "stranger.pub"))
    ev = conn.wait_event(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH |
                         zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                         zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, ANSWER_S)
    expect(ev is not None, "a handshake event")
    expect_eq(ev[0], zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, "monitor event")


@check("8 redelivery: unacked delivery comes again on a new connection")
def check_redelivery(env):
    g = env.connect("gemeente")
    res = g.publish([env.signal(summary="opnieuw")])
    a = expect_accepted(res.answer, res.message_id, 1)
    p1 = env.connect("politie")
    d1 = p1.receive(ANSWER_S)
    expect(d1 is not None, "first delivery")
    check_delivery(env, d1, "gemeente-ondermijning", a.items[0].seq)
    expect_eq(d1.redelivery, False, "redelivery flag the first time")
    env.close(p1)                                   # no ack
    p2 = env.connect("politie")
    d2 = p2.receive(ANSWER_S)
    expect(d2 is not None, "the delivery comes again after reconnecting")
    expect_eq((d2.seq, d2.item_seq, d2.message_id), (d1.seq, d1.item_seq, d1.message_id),
              "same seq, item seq and message id")
    expect_eq(d2.redelivery, True, "redelivery flag the second time")
    expect_eq(d2.signal, d1.signal, "same delivered signal")
    expect_eq(p2.backlog(), 1, "still in the mailbox before the ack")
    p2.ack(d2.seq)
    expect_eq(p2.backlog(), 0, "backlog after the ack")


@check("8b takeover: Flow on a second connection resends what the first did not ack (7.8)")
def check_takeover(env):
    g = env.connect("gemeente")
    res = g.publish([env.signal(summary="overname")])
    expect_accepted(res.answer, res.message_id, 1)
    a = env.connect("politie")
    d1 = a.receive(ANSWER_S)
    expect(d1 is not None, "delivery on A")
    b = env.connect("politie")
    d2 = b.receive(ANSWER_S)
    expect(d2 is not None, "delivery again on B")
    expect_eq((d2.seq, d2.redelivery), (d1.seq, True), "B gets the same seq, flagged")
    res = g.publish([env.signal(summary="na overname")])
    expect_accepted(res.answer, res.message_id, 1)
    d3 = b.receive(ANSWER_S)
    expect(d3 is not None and d3.seq > d2.seq, "new deliveries go to B")
    expect(a.receive(SILENCE_S) is None, "A gets no more deliveries")
    a.ack(d1.seq)                                   # an ack on A still counts
    b.ack(d3.seq)
    expect_eq(b.backlog(), 0, "backlog after acks on A and B")


@check("9 frame checks: version, body, multipart, unexpected body, Flow, Ack")
def check_frame_refusals(env):
    pb = env.pb
    g = env.connect("gemeente")
    hb = pb.Heartbeat(time=1)
    answer = g.request(pb.Frame(heartbeat=hb).SerializeToString())
    expect_rejected(env, answer, "UNSUPPORTED_VERSION", None, -1)
    answer = g.request(pb.Frame(version=2, heartbeat=hb).SerializeToString())
    expect_rejected(env, answer, "UNSUPPORTED_VERSION", None, -1)
    answer = g.request(pb.Frame(version=1).SerializeToString())
    expect_rejected(env, answer, "INVALID_MESSAGE", None, -1)
    answer = g.request(b"")
    expect_rejected(env, answer, "INVALID_MESSAGE", None, -1)
    answer = g.request(b"\xff\xff\xff")
    expect_rejected(env, answer, "INVALID_MESSAGE", None, -1)
    one = pb.Frame(version=1, heartbeat=hb).SerializeToString()
    answer = g.request([one, one])
    expect_rejected(env, answer, "TOO_MANY_FRAMES", None, -1)
    answer = g.request(pb.Frame(version=1, accepted=pb.Accepted(
        message_id=os.urandom(16))).SerializeToString())
    expect_rejected(env, answer, "UNEXPECTED_BODY", None, -1)
    answer = g.request(pb.Frame(version=1, flow=pb.Flow()).SerializeToString())
    expect_rejected(env, answer, "INVALID_MESSAGE", None, -1)
    answer = g.request(pb.Frame(version=1, ack=pb.Ack()).SerializeToString())
    expect_rejected(env, answer, "INVALID_MESSAGE", None, -1)
    answer = g.request(pb.Frame(version=1, ack=pb.Ack(seqs=[5, 0])).SerializeToString())
    expect_rejected(env, answer, "INVALID_FIELD", None, -1)
    # the connection stays open through all of this
    expect_eq(g.whoami().principal, "gemeente/meldingen", "still answered afterwards")


@check("9b Ack of seqs not pending: one UNKNOWN_DELIVERY per Ack, naming the first; packed Ack read")
def check_unknown_delivery(env):
    g = env.connect("gemeente")
    g.ack(999999, 999998)
    r = g.wait_for(lambda f: f.WhichOneof("body") == "rejected", ANSWER_S).rejected
    expect_eq(reason_name(env, r), "UNKNOWN_DELIVERY", "reason")
    expect_eq(r.seq, 999999, "Rejected.seq: the first seq not pending")
    expect_eq(r.item_index, -1, "Rejected.item_index")
    expect(not r.HasField("message_id"), "no message_id on an ack refusal")
    expect("2 of the 2" in r.text and "999999 999998" in r.text,
           "the text counts and names the seqs not pending: %r" % r.text)
    # nothing more for that Ack: up to the Heartbeat's answer no other ack refusal came
    g.whoami()
    expect_eq(len(g.ack_refusals), 0, "one refusal for one Ack")
    # 4.7: the packed encoding of seqs is accepted too (field 1, wire type 2)
    packed = b"\x0a\x02\xe7\x07"                 # seqs: [999], packed
    g.send_bytes(b"\x08\x01\xa2\x01" + bytes([len(packed)]) + packed)
    f = g.wait_for(lambda f: f.WhichOneof("body") == "rejected", ANSWER_S)
    expect_eq((reason_name(env, f.rejected), f.rejected.seq), ("UNKNOWN_DELIVERY", 999),
              "packed Ack read as seqs [999]")


def rate_limited(env, conn):
    """The seqs named by CONN's RATE_LIMITED ack refusals read so far."""
    return [r.seq for r in conn.ack_refusals if reason_name(env, r) == "RATE_LIMITED"]


@check("9e an Ack refused RATE_LIMITED (max_unknown_acks_per_second) is sent again after a pause,"
       " unchanged, and taken: its deliveries do not come again; a fourth refusal ends it (4.7)")
def check_ack_rate_limited(env):
    env.broker.stop()
    env.broker.start(settings=("max_unknown_acks_per_second=1",))
    try:
        g = env.connect("gemeente")
        p = env.connect("politie")
        res = g.publish([env.signal(summary="eerste"), env.signal(summary="tweede")])
        expect_accepted(res.answer, res.message_id, 2)
        got = [p.receive(ANSWER_S), p.receive(ANSWER_S)]
        expect(all(got), "politie receives both deliveries")
        # three seqs never delivered take the bucket (one a second, one at once) to -2
        never = 10 ** 12
        p.ack(never, never + 1, never + 2)
        r = p.wait_for(lambda f: f.WhichOneof("body") == "rejected", ANSWER_S).rejected
        expect_eq((reason_name(env, r), r.seq), ("UNKNOWN_DELIVERY", never),
                  "the seqs never delivered are looked up (and counted)")
        p.ack(*[d.seq for d in got])
        expect_eq(p.acks_settled(ANSWER_S * 3), 0,
                  "the refused Ack sent again until taken: nothing left in the mailbox")
        refused = rate_limited(env, p)
        expect(1 <= len(refused) <= 3 and set(refused) == {got[0].seq},
               "the Ack refused RATE_LIMITED at least once, naming its first seq: %r" % refused)
        expect_eq((p.acks_resent, p.acks_given_up), (len(refused), []),
                  "sent again once for each refusal, never given up")
        env.close(p)
        q = env.connect("politie")
        expect(q.receive(1.0) is None, "the acknowledged deliveries do not come again")
        expect_eq(q.backlog(), 0, "backlog on a new connection")

        # thirty seqs never delivered: the bucket at -29, more than the 7 s of pauses repay
        res = g.publish([env.signal(summary="derde"), env.signal(summary="vierde")])
        expect_accepted(res.answer, res.message_id, 2)
        kept = [q.receive(ANSWER_S), q.receive(ANSWER_S)]
        expect(all(kept), "politie receives two more")
        q.ack(*range(never, never + 30))
        r = q.wait_for(lambda f: f.WhichOneof("body") == "rejected", ANSWER_S).rejected
        expect_eq(reason_name(env, r), "UNKNOWN_DELIVERY", "thirty seqs not pending, counted")
        q.ack(*[d.seq for d in kept])
        expect_eq(q.acks_settled(ANSWER_S * 3), 2, "the Ack given up: both still in the mailbox")
        expect_eq(rate_limited(env, q), [kept[0].seq] * 4, "refused four times")
        expect_eq((q.acks_resent, q.acks_given_up), (3, [kept[0].seq]),
                  "sent again after the first three refusals, given up at the fourth")
    finally:
        env.close_all()
        env.broker.stop()
        env.broker.start()
    r = env.connect("politie")
    again = [r.receive(ANSWER_S), r.receive(ANSWER_S)]
    expect([(d.seq, d.redelivery) for d in again if d] == [(d.seq, True) for d in kept],
           "the deliveries of the Ack given up come again, flagged")
    r.ack(*[d.seq for d in again])
    expect_eq(r.backlog(), 0, "backlog after acking them at the default limit")


@check("9c publish frame refusals: message_id, items, signature, item size")
def check_publish_refusals(env):
    g = env.connect("gemeente")
    items = [env.signal().SerializeToString()]
    mid = os.urandom(16)
    sig = sc.sign_publish(g.signing_key, mid, items)
    answer = g.request(g.publish_frame(None, items, sig))
    expect_rejected(env, answer, "INVALID_MESSAGE", None, -1)
    answer = g.request(g.publish_frame(mid[:15], items, sig))
    r = expect_rejected(env, answer, "INVALID_FIELD", None, -1)
    expect(not r.HasField("message_id"), "no message_id when it is not 16 bytes (4.5)")
    answer = g.request(g.publish_frame(mid, [], sig))
    expect_rejected(env, answer, "INVALID_MESSAGE", mid, -1)
    answer = g.request(g.publish_frame(mid, items, None))
    expect_rejected(env, answer, "BAD_SIGNATURE", mid, -1)
    answer = g.request(g.publish_frame(mid, items, sig[:63]))
    expect_rejected(env, answer, "BAD_SIGNATURE", mid, -1)
    answer = g.request(g.publish_frame(mid, items + [b""],
                                       sc.sign_publish(g.signing_key, mid, items + [b""])))
    expect_rejected(env, answer, "INVALID_MESSAGE", mid)
    many = [b"\x0a\x01a"] * 257
    answer = g.request(g.publish_frame(mid, many, sc.sign_publish(g.signing_key, mid, many)))
    expect_rejected(env, answer, "TOO_MANY_ITEMS", mid, -1)
    huge = [env.signal(summary="x" * sc.MAX_ITEM_BYTES).SerializeToString()]
    answer = g.request(g.publish_frame(mid, huge, sc.sign_publish(g.signing_key, mid, huge)))
    expect_rejected(env, answer, "INVALID_FIELD", mid, 0)
    expect_eq(env.connect("politie").backlog(), 0, "nothing stored")


@check("5e signal validation (5.1, 5.2, 5.3): each rule gives its reason")
def check_validation(env):
    pb = env.pb
    g = env.connect("gemeente")
    now = int(time.time())

    def addr(**kw):
        a = pb.Address()
        for k, v in kw.items():
            setattr(a, k, v)
        return a

    def without(field):
        s = env.signal()
        s.ClearField(field)
        return s

    refused = [
        ("theme not in the vocabulary", env.signal(theme="Ondermijning"), "INVALID_THEME"),
        ("theme empty", env.signal(theme=""), "INVALID_THEME"),
        ("area not a CBS code", env.signal(area="GM935"), "INVALID_AREA"),
        ("area empty", env.signal(area=""), "INVALID_AREA"),
        ("kind upper case", env.signal(kind="Hennep"), "INVALID_FIELD"),
        ("kind missing", without("kind"), "INVALID_MESSAGE"),
        ("area missing", without("area"), "INVALID_MESSAGE"),
        ("sender missing", without("sender"), "INVALID_MESSAGE"),
        ("sender without partner", env.signal(sender="meldingen"), "INVALID_FIELD"),
        ("address without postcode", env.signal(address=addr(house_number=1)),
         "INVALID_POSTCODE"),
        ("postcode with space", env.signal(address=addr(postcode="6211 AB", house_number=1)),
         "INVALID_POSTCODE"),
        ("postcode SS", env.signal(address=addr(postcode="6211SS", house_number=1)),
         "INVALID_POSTCODE"),
        ("postcode leading 0", env.signal(address=addr(postcode="0211AB", house_number=1)),
         "INVALID_POSTCODE"),
        ("house number missing", env.signal(address=addr(postcode="6211AB")), "INVALID_FIELD"),
        ("house number 0", env.signal(address=addr(postcode="6211AB", house_number=0)),
         "INVALID_FIELD"),
        ("house number 100000",
         env.signal(address=addr(postcode="6211AB", house_number=100000)), "INVALID_FIELD"),
        ("addition 9 bytes",
         env.signal(address=addr(postcode="6211AB", house_number=1, addition="ABCDEFGHI")),
         "INVALID_FIELD"),
        ("subject without grounds", env.signal(subject="p-12345678"), "MISSING_GROUNDS"),
        ("subject with empty grounds", env.signal(subject="p-12345678", grounds=""),
         "MISSING_GROUNDS"),
        ("subject only digits", env.signal(subject="123456789", grounds="g"), "INVALID_FIELD"),
        ("subject too short", env.signal(subject="p-1234", grounds="g"), "INVALID_FIELD"),
        ("severity 0", env.signal(severity=pb.SEVERITY_UNSPECIFIED), "INVALID_FIELD"),
        ("observed_at 400 s ahead", env.signal(observed_at=now + 400), "INVALID_FIELD"),
        ("observed_at over ten years ago", env.signal(observed_at=now - 316224000 - 3600),
         "INVALID_FIELD"),
        ("summary empty", env.signal(summary=""), "INVALID_FIELD"),
        ("summary with ESC", env.signal(summary="a\x1b[2Jb"), "INVALID_FIELD"),
        ("summary with NUL", env.signal(summary="a\x00b"), "INVALID_FIELD"),
        ("summary over 2000 bytes", env.signal(summary="\u00e9" * 1001), "INVALID_FIELD"),
        ("case_ref with newline", env.signal(case_ref="a\nb"), "INVALID_FIELD"),
        ("source_ref with C1 control", env.signal(source_ref="a\u0085b"), "INVALID_FIELD"),
        ("recipients repeated", env.signal(recipients=["politie", "politie"]), "INVALID_FIELD"),
        ("recipients not an id token", env.signal(recipients=["Politie"]), "INVALID_FIELD"),
        ("17 recipients", env.signal(recipients=["p%d" % i for i in range(17)]),
         "INVALID_FIELD"),
        ("recipient unknown to the policy", env.signal(recipients=["nobody"]),
         "POLICY_DENIED"),
        ("check order: theme before sender = principal",
         env.signal(sender="politie/bvh-koppeling", theme="x"), "INVALID_THEME"),
        ("check order: kind before theme", env.signal(kind="K", theme="x"), "INVALID_FIELD"),
    ]
    failures = []
    for what, sig, reason in refused:
        res = g.publish([env.signal(), sig])
        body = res.answer.WhichOneof("body")
        got = (reason_name(env, res.answer.rejected), res.answer.rejected.item_index) \
            if body == "rejected" else (body, None)
        log(what, got, res.answer.rejected.text if body == "rejected" else "")
        if got != (reason, 1):
            failures.append("%s: got %s, want (%s, 1)" % (what, got, reason))
    # unknown enum value and invalid UTF-8 cannot be built with protobuf: raw bytes
    base = env.signal().SerializeToString()
    for what, item in (("severity 7", base + b"\x48\x07"),
                       ("summary not UTF-8", base + b"\x5a\x02\xc3\x28")):
        res = g.publish_items([base, item])
        body = res.answer.WhichOneof("body")
        got = (reason_name(env, res.answer.rejected), res.answer.rejected.item_index) \
            if body == "rejected" else (body, None)
        if got != ("INVALID_FIELD", 1):
            failures.append("%s: got %s, want (INVALID_FIELD, 1)" % (what, got))
    expect(not failures, "; ".join(failures))
    # what prose may carry, and bounds that are included
    fine = [env.signal(summary="regel 1\nregel 2\r\n\tinspringing", grounds="g",
                       subject="Ab.1:2-3_x"),
            env.signal(observed_at=now + 250),
            env.signal(summary="\u00e9" * 1000, recipients=["politie"]),
            env.signal(address=addr(postcode="9999ZZ", house_number=99999, addition="a-1 B"))]
    res = g.publish(fine)
    expect_accepted(res.answer, res.message_id, len(fine))
    expect_eq(len(env.drain("politie")), len(fine), "deliveries of the valid signals")


@check("8c Flow window: at most `window` in flight; 0 means 64")
def check_window(env):
    g = env.connect("gemeente")
    res = g.publish([env.signal(kind="w-%d" % i) for i in range(66)])
    expect_accepted(res.answer, res.message_id, 66)
    p = env.connect("politie")
    first = [p.receive(ANSWER_S, window=2), p.receive(ANSWER_S)]
    expect(all(first), "two deliveries with window 2")
    expect(p.receive(SILENCE_S) is None, "no third delivery while two are in flight")
    p.ack(first[0].seq)
    third = p.receive(ANSWER_S)
    expect(third is not None, "a freed slot starts the next delivery")
    p.flow(0)                               # the default window, 64
    got = [first[1], third]
    while len(got) < 64:
        d = p.receive(ANSWER_S)
        expect(d is not None, "deliveries up to the default window (have %d)" % len(got))
        got.append(d)
    expect(p.receive(SILENCE_S) is None, "no more than 64 in flight with Flow{0}")
    p.ack(*[d.seq for d in got])
    rest = [p.receive(ANSWER_S)]
    expect(all(rest), "the last one after the acks")
    expect(p.receive(SILENCE_S) is None, "nothing beyond the 66")
    seqs = [first[0].seq] + [d.seq for d in got + rest]
    expect_eq(seqs, sorted(seqs), "deliveries in seq order")
    expect_eq(len(set(seqs)), 66, "66 distinct deliveries")
    p.ack(*[d.seq for d in rest])
    expect_eq(p.backlog(), 0, "backlog after all acks")


@check("9d frame size limits (3.5): 262,144 read, 262,145..1,048,543 refused, beyond dropped")
def check_frame_size(env):
    g = env.connect("gemeente")
    g.wait_handshake(ANSWER_S)
    mid = os.urandom(16)

    def frame_of(size):
        n = size - 100
        while True:
            data = g.publish_frame(mid, [b"x" * n], b"\0" * 64)
            if len(data) == size:
                return data
            n += size - len(data)

    answer = g.request(frame_of(262144))
    r = expect_rejected(env, answer, "INVALID_FIELD", mid, 0)   # the item, not the frame
    for size in (262145, 1048543):
        answer = g.request(frame_of(size))
        r = expect_rejected(env, answer, "FRAME_TOO_LARGE", None, -1)
        expect(not r.HasField("message_id"), "no message_id on FRAME_TOO_LARGE (4.5)")
    before = g.handshakes
    g.send_bytes(frame_of(1048544))
    ev = g.wait_event(zmq.EVENT_DISCONNECTED, ANSWER_S)
    expect(ev is not None, "the connection is dropped")
    g.wait_handshake(ANSWER_S)
    expect(g.handshakes > before, "libzmq reconnects by itself")
    expect_eq(g.whoami().principal, "gemeente/meldingen", "answered on the new connection")


@check("10 broker restart: Accepted survives, pending deliveries flagged, client re-sends Flow;"
       " a Heartbeat asked while the broker is away is answered once it is back")
def check_restart(env):
    g = env.connect("gemeente")
    p = env.connect("politie")
    res1 = g.publish([env.signal(summary="voor herstart 1")])
    expect_accepted(res1.answer, res1.message_id, 1)
    d1 = p.receive(ANSWER_S)
    expect(d1 is not None and not d1.redelivery, "first delivery before the restart")
    res2 = g.publish([env.signal(summary="voor herstart 2")])
    expect_accepted(res2.answer, res2.message_id, 1)
    d2 = p.receive(ANSWER_S)
    expect(d2 is not None, "second delivery before the restart")
    p.ack(d2.seq)
    res3 = g.publish([env.signal(summary="voor herstart 3")])
    expect_accepted(res3.answer, res3.message_id, 1)
    d3 = p.receive(ANSWER_S)
    expect(d3 is not None, "third delivery before the restart (left unacknowledged)")
    expect_eq(p.backlog(), 2, "backlog before the restart (the ack of d2 taken)")
    epoch = p.store_epoch()
    endpoint = env.broker.endpoint
    rc = env.broker.stop()
    expect(rc in (0, -signal.SIGTERM), "broker stops on SIGTERM (exit %r)" % rc)
    expect(p.wait_event(zmq.EVENT_DISCONNECTED, ANSWER_S) is not None and not p.connected,
           "the client saw its connection drop")
    away = p.send_heartbeat()                   # waits in the socket's queue (4.9)
    env.broker.start(listen=endpoint)           # same port: the DEALERs reconnect to it
    p.wait_handshake(ANSWER_S * 2)
    answer = p.wait_for(lambda f: p.last_settled == away, ANSWER_S)
    expect_eq((answer.WhichOneof("body"), answer.heartbeat.heartbeat_id, answer.heartbeat.backlog),
              ("heartbeat", p.heartbeat_id(away), 2),
              "the Heartbeat asked while the broker was away, answered on the new connection")
    got = [p.receive(ANSWER_S * 2), p.receive(ANSWER_S)]
    expect(all(got), "both pending deliveries again on the reconnected socket")
    expect_eq([(d.seq, d.item_seq) for d in got], [(d1.seq, d1.item_seq), (d3.seq, d3.item_seq)],
              "the unacknowledged deliveries, oldest first")
    expect(all(d.redelivery for d in got), "pending at broker start: redelivery true (7.5)")
    expect(p.handshakes >= 2, "the client saw a new handshake and re-sent Flow")
    p.ack(*[d.seq for d in got])
    expect_eq(p.backlog(), 0, "backlog after the acks")
    expect_eq(p.store_epoch_floor(), (epoch, 0),
              "a restart keeps the store epoch (only a restore changes it) and its floor seq")
    again = g.retry(res1)
    expect_eq(expect_accepted(again.answer, res1.message_id, 1).duplicate, True,
              "a retry after the restart is a duplicate (the publish was on disk)")
    res4 = g.publish([env.signal(summary="na herstart")])
    expect_accepted(res4.answer, res4.message_id, 1)
    d4 = p.receive(ANSWER_S)
    expect(d4 is not None and d4.redelivery is False, "new delivery after restart not flagged")
    p.ack(d4.seq)
    expect_eq(p.backlog(), 0, "backlog at the end")


@check("10b a Heartbeat that went out on a connection lost before its answer is asked again on"
       " the next, under a new heartbeat_id: backlog() is answered (7.10)")
def check_heartbeat_lost(env):
    g = env.connect("gemeente")
    p = env.connect("politie")
    res = g.publish([env.signal(summary="voor het verbroken verband")])
    expect_accepted(res.answer, res.message_id, 1)
    d = p.receive(ANSWER_S)
    expect(d is not None, "politie receives the delivery")
    asked = []
    heartbeat_sent = threading.Event()
    send_heartbeat = p.send_heartbeat

    def send_heartbeat_seen(*args, **kwargs):
        order = send_heartbeat(*args, **kwargs)
        asked.append((order, p.connected))
        heartbeat_sent.set()
        return order

    p.send_heartbeat = send_heartbeat_seen
    outcome = []

    def ask_backlog():
        try:
            outcome.append(p.backlog(ANSWER_S * 4))
        except Exception as e:      # reported by the check below
            outcome.append(e)

    endpoint = env.broker.endpoint
    broker = env.broker.proc
    broker.send_signal(signal.SIGSTOP)      # it reads nothing: the Heartbeat stays unanswered
    asking = threading.Thread(target=ask_backlog)
    try:
        asking.start()
        expect(heartbeat_sent.wait(ANSWER_S), "backlog() sent its Heartbeat")
        broker.kill()                       # the connection drops with the Heartbeat unanswered
        broker.wait()
        env.broker.proc = None
        env.broker.start(listen=endpoint)   # same port: the DEALER reconnects to it
    finally:
        if broker.poll() is None:
            broker.send_signal(signal.SIGCONT)
        asking.join(ANSWER_S * 5)
    expect(not asking.is_alive(), "backlog() returned")
    p.send_heartbeat = send_heartbeat
    expect_eq(outcome, [1], "backlog() answered on the new connection (the delivery unacked)")
    orders = [order for order, _ in asked]
    expect(len(asked) >= 2 and asked[0][1] and len(set(orders)) == len(orders),
           "the Heartbeat sent on the lost connection, and one asked again on the new one"
           " under another heartbeat_id: %r" % asked)
    again = p.receive(ANSWER_S * 2)
    expect(again is not None and (again.seq, again.redelivery) == (d.seq, True),
           "the unacknowledged delivery comes again")
    p.ack(again.seq)
    expect_eq(p.backlog(), 0, "backlog after the ack")


@check("11 revocation on policy reload: NOT_PERMITTED on the open connection, handshake refused")
def check_revocation(env):
    w = env.connect("woco")
    expect_eq(w.whoami().principal, "woco/medewerker", "woco before the reload")
    path = os.path.join(env.tmp, "policy.yaml")
    entry = "  - id: woco/medewerker\n    role: caseworker\n    key_file: keys/woco.pub\n"
    expect(entry in POLICY, "test policy layout")
    try:
        with open(path, "w") as f:
            f.write(POLICY.replace(entry, ""))
        env.broker.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + ANSWER_S
        refusal = None
        while refusal is None and time.monotonic() < deadline:   # the reload is asynchronous
            try:
                w.whoami()
            except sc.Refusal as e:
                refusal = e.rejected
        expect(refusal is not None, "a frame after the reload is refused")
        expect_eq(reason_name(env, refusal), "NOT_PERMITTED", "reason")
        res = w.publish_items([b"\x0a\x01a"])
        r = expect_rejected(env, res.answer, "NOT_PERMITTED", None, -1)
        expect(not r.HasField("message_id"), "no message_id for a revoked principal (4.5)")
        w2 = env.connect("woco")
        try:
            w2.wait_handshake(ANSWER_S)
        except sc.HandshakeRefused as e:
            expect_eq(e.value, sc.ZAP_REFUSED_STATUS, "event value")
        else:
            raise CheckFailed("a new handshake with the revoked key succeeded")
    finally:
        with open(path, "w") as f:
            f.write(POLICY)
        env.broker.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + ANSWER_S
    while True:                     # a new socket per try: no reconnect after a refusal
        w3 = env.connect("woco")
        try:
            w3.wait_handshake(min(ANSWER_S, max(0.1, deadline - time.monotonic())))
            break
        except sc.HandshakeRefused:
            env.close(w3)
            expect(time.monotonic() < deadline, "the key is admitted again after restoring")
    expect_eq(w3.whoami().principal, "woco/medewerker", "woco after restoring the policy")


def doc_verifier(env):
    """The audit verifier of docs/OPERATIONS.md (its python block that hashes
    entries), written to a file of the test's directory."""
    with open(OPERATIONS_MD) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    code = [b for b in blocks if "schakel-audit-v1" in b]
    expect_eq(len(code), 1, "python blocks of docs/OPERATIONS.md that verify the trail")
    path = os.path.join(env.tmp, "verify_audit.py")
    with open(path, "w") as f:
        f.write(code[0])
    return path


def store_copy(env, name, tamper=None):
    """A consistent copy of the running broker's store (SQLite's online
    backup in one step: one read transaction, as the VACUUM INTO of
    OPERATIONS.md "Backups"), then `tamper` run on the copy."""
    import sqlite3
    path = os.path.join(env.tmp, name)
    src = sqlite3.connect("file:%s?mode=ro" % os.path.join(env.tmp, "store.db"), uri=True)
    dst = sqlite3.connect(path)
    try:
        src.backup(dst)
        if tamper:
            dst.executescript(tamper)
        dst.commit()
    finally:
        src.close()
        dst.close()
    return path


def run_verifier(script, store, pub):
    r = subprocess.run([sys.executable, script, store, pub], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    lines = r.stdout.strip().splitlines()
    return r.returncode, lines[-1] if lines else ""


@check("12 audit trail: the verifier of docs/OPERATIONS.md passes, and names what was changed")
def check_audit_doc_verifier(env):
    g = env.connect("gemeente")
    p = env.connect("politie")
    for i in range(3):  # acked deliveries: entries that list them, and their index rows
        res = g.publish([env.signal(summary="Audit %d" % i)])
        a = expect_accepted(res.answer, res.message_id, 1)
        d = p.receive(ANSWER_S)
        expect(d is not None and d.item_seq == a.items[0].seq, "politie receives item %d" % i)
        p.ack(d.seq)
    # two items of one publish, acked in one frame: one entry, one run of two seqs
    res = g.publish([env.signal(summary="Audit 3"), env.signal(summary="Audit 4")])
    expect_accepted(res.answer, res.message_id, 2)
    both = [p.receive(ANSWER_S) for _ in range(2)]
    expect(all(d is not None for d in both), "politie receives both items")
    seqs = sorted(d.seq for d in both)
    expect_eq(seqs[1], seqs[0] + 1, "the two deliveries' seqs follow each other")
    p.ack(*seqs)
    expect_eq(p.backlog(), 0, "everything acked")
    script = doc_verifier(env)
    pub = os.path.join(env.keydir, "broker.pub")
    rc, last = run_verifier(script, store_copy(env, "copy.db"), pub)
    expect_eq(rc, 0, "the verifier on an untouched copy (%s)" % last)
    m = re.match(r"intact: (\d+) entries, \d+ checkpoints, (\d+) acks indexed\Z", last)
    expect(m is not None and int(m.group(1)) > 0 and int(m.group(2)) >= 3,
           "the verifier's summary: %r" % last)
    rows = [
        ("an entry rewritten",
         "DROP TRIGGER audit_append_only_update; UPDATE audit SET detail = 'x' WHERE seq = 2;",
         r"entry 2 is broken"),
        ("an ack's index row removed",
         "DROP TRIGGER audit_ack_ranges_append_only_delete; DELETE FROM audit_ack_ranges"
         " WHERE first_seq = (SELECT max(first_seq) FROM audit_ack_ranges);",
         r"delivery \d+: the index does not name entry \d+, which lists it"),
        ("a stray index row",
         "INSERT INTO audit_ack_ranges VALUES (999999999, 999999999, 1);",
         r"the index names entry 1 for delivery 999999999, which it does not list"),
        ("an index row cut in two",
         "DROP TRIGGER audit_ack_ranges_append_only_update;"
         " INSERT INTO audit_ack_ranges SELECT first_seq + 1, last_seq, audit_seq"
         " FROM audit_ack_ranges WHERE last_seq > first_seq ORDER BY first_seq LIMIT 1;"
         " UPDATE audit_ack_ranges SET last_seq = first_seq WHERE first_seq ="
         " (SELECT min(first_seq) FROM audit_ack_ranges WHERE last_seq > first_seq);",
         r"the index's row at delivery \d+ cuts a run of entry \d+"),
    ]
    for i, (what, tamper, message) in enumerate(rows):
        rc, last = run_verifier(script, store_copy(env, "tampered-%d.db" % i, tamper), pub)
        expect(rc != 0 and re.search(message, last) is not None,
               "%s: exit %d, %r (want %r)" % (what, rc, last, message))


# --- cases (PROTOCOL.md section 12) and the admin endpoint (section 11) ---

CASE_TYPE = "interop-zaak"
CASE_RETENTION_S = 365 * 86400          # retention_after_close: 1y
ACTOR = {name: PRINCIPALS[name][0] for name in ("gemeente", "politie", "woco")}
# partner -> (membership rule, purpose, legal basis, fields, signal fields); None: "*"
CASE_RULES = {
    "gemeente": (CASE_TYPE + ".lead", "Gezamenlijke aanpak", "Convenant art. 7", None, None),
    "politie": ("interop-zaak-politie", "Opsporing", "Wpg art. 16", {"text", "financieel"},
                {"area"}),
    "woco": ("interop-zaak-woco", "Huurbeheer", "Convenant art. 8", {"address"}, set()),
}
CASE_SUBJECT = "p-4711-interop"


def case_cmd(env, who, case_id=None, **op):
    return sc.case_command(env.pb, ACTOR[who], case_id, **op)


def case_accepted(env, result, recipients=None):
    """The Accepted of a case command (12.2): its command id, one item, a case id."""
    a = expect_accepted(result.answer, result.message_id, 1)
    expect(sc.CASE_ID_RE.fullmatch(a.case_id), "Accepted.case_id is a case id: %r" % a.case_id)
    expect(not a.HasField("duplicate"), "no duplicate on a first answer")
    if recipients is not None:
        expect_eq(a.items[0].recipients, recipients, "recipients of %s"
                  % env.pb.CaseCommand.FromString(result.items[0]).WhichOneof("op"))
    return a


def case_refused(env, conn, command, reason, text=None, **kw):
    """Send COMMAND; it must be refused REASON naming its command id (12.2)."""
    res = conn.case_publish(command, **kw)
    r = expect_rejected(env, res.answer, reason, res.message_id, -1)
    if text is not None:
        expect(re.search(text, r.text), "refusal text %r names %r" % (r.text, text))
    return r


def expected_view(env, full, partner):
    """The event FULL (as the lead gets it) reduced to PARTNER's membership rule (12.5)."""
    _, _, _, fields, signal_fields = CASE_RULES[partner]
    ev = env.pb.CaseEvent()
    ev.CopyFrom(full)
    if fields is None:
        return ev
    for name, entry in (("text", "text"), ("subject", "subject"), ("address", "address"),
                        ("attachment", "attachments")):
        if entry not in fields:
            ev.ClearField(name)
    kept = [f for f in ev.fields if f.name in fields]
    del ev.fields[:]
    ev.fields.extend(kept)
    if ev.HasField("signal"):
        s = env.pb.Signal.FromString(ev.signal)
        for fd, _ in list(s.ListFields()):
            if fd.name not in {"sender", "kind", "theme"} | signal_fields:
                s.ClearField(fd.name)
        ev.signal = s.SerializeToString()
    return ev


def same_event(env, got, want, what):
    """Compare two CaseEvents; a linked signal by its fields, not its bytes."""
    a, b = env.pb.CaseEvent(), env.pb.CaseEvent()
    a.CopyFrom(got)
    b.CopyFrom(want)
    if a.HasField("signal") and b.HasField("signal"):
        expect_eq(env.pb.Signal.FromString(a.signal), env.pb.Signal.FromString(b.signal),
                  what + ": the linked signal")
        a.ClearField("signal")
        b.ClearField("signal")
    expect_eq(a, b, what)


class CaseParty:
    """A receiving connection of one principal, for case events."""

    def __init__(self, env, name):
        self.env, self.name, self.partner = env, name, ACTOR[name].split("/")[0]
        self.conn = env.connect(name)
        self.conn.flow()
        self.rule_hash = None
        self.closed_at = None       # set: the case was closed then, deliveries expire from it

    def events(self, kinds, result=None, ack=True):
        """The next len(KINDS) deliveries: case events of these kinds, in order, with the
        Deliver fields of 12.5 (naming RESULT's command when given). Returns
        [(deliver, event)]."""
        pb, got = self.env.pb, []
        for i, kind in enumerate(kinds):
            d = self.conn.receive(ANSWER_S)
            expect(d is not None, "%s: delivery %d of %d (%s) did not come"
                   % (self.name, i + 1, len(kinds), kind))
            ev = self.conn.case_event(d)
            expect(ev is not None and not d.HasField("signal"),
                   "%s: a case event, not a signal (4.6)" % self.name)
            expect_eq(pb.CaseEventKind.Name(ev.kind), kind, "%s: event %d kind" % (self.name, i))
            self.check_deliver(d, ev, result)
            got.append((d, ev))
            if ack:
                self.conn.ack(d.seq)
        return got

    def check_deliver(self, d, ev, result):
        rule_id, purpose, legal_basis, _, _ = CASE_RULES[self.partner]
        for field in ("seq", "message_id", "item_index", "sender", "sender_partner", "rule_id",
                      "rule_hash", "purpose", "legal_basis", "accepted_at", "expires_at",
                      "item_seq", "redelivery", "case_event"):
            expect(d.HasField(field), "Deliver.%s set (4.6)" % field)
        expect_eq((d.rule_id, d.purpose, d.legal_basis), (rule_id, purpose, legal_basis),
                  "%s: the membership rule (12.5)" % self.name)
        expect(re.fullmatch(r"[0-9a-f]{64}", d.rule_hash), "rule_hash is 64 hex digits")
        if self.rule_hash is None:
            self.rule_hash = d.rule_hash
        expect_eq(d.rule_hash, self.rule_hash, "one membership rule, one hash")
        expect_eq(d.item_index, 0, "Deliver.item_index of a case event")
        expect_eq(d.sender_partner, d.sender.split("/")[0], "Deliver.sender_partner")
        if result is not None:
            cmd = self.env.pb.CaseCommand.FromString(result.items[0])
            expect_eq(d.message_id, result.message_id, "Deliver.message_id = command_id")
            expect_eq(d.item_seq, result.answer.accepted.items[0].seq,
                      "Deliver.item_seq = Accepted.items[0].seq")
            expect_eq(d.sender, cmd.actor, "Deliver.sender = the actor")
        if self.closed_at is not None:
            expect_eq(d.expires_at, self.closed_at + CASE_RETENTION_S,
                      "expires_at once the case is closed: close time + retention_after_close")
        elif ev.kind == self.env.pb.CASE_EVENT_CLOSED:
            expect_eq(d.expires_at, ev.at + CASE_RETENTION_S,
                      "expires_at of a closed case: close time + retention_after_close")
        else:
            expect_eq(d.expires_at, sc.CASE_OPEN_EXPIRES_AT, "expires_at of an open case")
        for field in ("case_id", "case_type", "event_seq", "kind", "actor", "at", "lead"):
            expect(ev.HasField(field), "CaseEvent.%s always set (12.5)" % field)
        expect_eq(ev.case_type, CASE_TYPE, "CaseEvent.case_type")

    def silent(self):
        d = self.conn.receive(SILENCE_S)
        expect(d is None, "%s: no further delivery, got %s" % (self.name, d))
        expect_eq(self.conn.backlog(), 0, "%s: backlog" % self.name)


def linkable_signal(env, p):
    """Publish a signal to politie and receive it on P: its Deliver (item_seq to link)."""
    res = env.connect("gemeente").publish([env.signal(
        summary="Hennepgeur", address=env.pb.Address(postcode="6211AB", house_number=12))])
    expect_accepted(res.answer, res.message_id, 1)
    d = p.conn.receive(ANSWER_S)
    expect(d is not None and d.HasField("signal"), "politie receives the signal")
    p.conn.ack(d.seq)
    return d


@check("13 the case command test vector (12.3): command bytes, root, signed bytes, signature"
       " and the whole frame, read from the document")
def check_case_vector(env):
    pb = env.pb
    sec = doc_section(document(), "12.3 CaseCommand")
    blocks = doc_code_blocks(sec)
    command_hex = next(b for b in blocks if re.fullmatch(r"[0-9a-f\s]+", b) and len(b) < 200)
    frame_hex = [b for b in blocks if re.fullmatch(r"[0-9a-f\s]+", b)][-1]
    cmd = sc.case_command(pb, "riec/analist", "C-00000042", note=pb.CaseNote(
        text="Bezoek afgelegd", fields=[pb.NoteField(name="financieel", value="EUR 12.000")]))
    data = cmd.SerializeToString()
    expect_eq(data.hex(), "".join(command_hex.split()), "the command's bytes")
    expect_eq(len(data), 71, "the command is 71 bytes")
    key = nacl.signing.SigningKey(VECTOR_SEED)
    command_id = bytes(range(16))
    expect_eq(sc.tree_root([data]), doc_table_hex(sec, "root"), "root")
    expect_eq(sc.signed_bytes(command_id, [data]), doc_table_hex(sec, "signed bytes"),
              "signed bytes")
    sig = sc.sign_publish(key, command_id, [data])
    expect_eq(sig, doc_table_hex(sec, "signature"), "signature")
    frame = pb.Frame(version=1, case_publish=pb.CasePublish(
        command_id=command_id, command=data, signature=sig)).SerializeToString()
    expect_eq(frame.hex(), "".join(frame_hex.split()), "the whole frame")
    expect_eq(len(frame), 163, "the frame is 163 bytes")


@check("13b every case command (open, invite, accept, decline, note, attach, link_signal, leave,"
       " remove, close, reopen) is Accepted with its recipients, and each member receives its"
       " events filtered by its membership rule, history first when it joins")
def check_case_lifecycle(env):
    pb = env.pb
    g, p, w = (CaseParty(env, n) for n in ("gemeente", "politie", "woco"))
    linked = linkable_signal(env, p)
    address = pb.Address(postcode="6211AB", house_number=12)
    opened = g.conn.case_publish(case_cmd(env, "gemeente", open=pb.CaseOpen(
        case_type=CASE_TYPE, area="BU09350101", address=address, subject=CASE_SUBJECT,
        title="Hennepteelt, signaal woningcorporatie")))
    case = case_accepted(env, opened, 1).case_id
    full = {}                                   # event_seq -> the lead's copy

    def lead_gets(result, kind):
        (_, ev), = g.events([kind], result)
        full[ev.event_seq] = ev
        log("event", ev.event_seq, pb.CaseEventKind.Name(ev.kind), "by", ev.actor)
        expect_eq(ev.event_seq, len(full), "event_seq counts 1, 2, 3, ... (12.5)")
        expect_eq(ev.case_id, case, "CaseEvent.case_id")
        return ev

    def step(who, recipients, kind, **op):
        conn = {"gemeente": g, "politie": p, "woco": w}[who].conn
        res = conn.case_publish(case_cmd(env, who, case, **op))
        a = case_accepted(env, res, recipients)
        expect_eq(a.case_id, case, "Accepted.case_id")
        return res, lead_gets(res, kind)

    def gets(party, res, seqs, history=None):
        """PARTY receives the events SEQS (the last one made by RES), filtered."""
        kinds = [pb.CaseEventKind.Name(full[s].kind) for s in seqs]
        got = party.events(kinds)
        for (d, ev), s in zip(got, seqs):
            same_event(env, ev, expected_view(env, full[s], party.partner),
                       "%s's copy of event %d" % (party.name, s))
            party.check_deliver(d, ev, res)     # history names the accept (12.5)
        return got

    ev = lead_gets(opened, "CASE_EVENT_OPENED")
    expect_eq((ev.title, ev.area, ev.subject, ev.address, ev.lead, list(ev.members)),
              ("Hennepteelt, signaal woningcorporatie", "BU09350101", CASE_SUBJECT, address,
               "gemeente", ["gemeente"]), "the opened event as given")
    res, ev = step("gemeente", 2, "CASE_EVENT_INVITED", invite=pb.CaseInvite(partner="politie"))
    expect_eq((ev.partner, list(ev.members)), ("politie", ["gemeente"]), "invited event")
    gets(p, res, [2])
    res, _ = step("gemeente", 2, "CASE_EVENT_INVITED", invite=pb.CaseInvite(partner="woco"))
    gets(w, res, [3])
    res, ev = step("woco", 1, "CASE_EVENT_DECLINED", decline=pb.CaseAnswer())
    expect_eq(ev.partner, "woco", "declined event names woco")
    res, ev = step("politie", 5, "CASE_EVENT_JOINED", accept=pb.CaseAnswer())
    expect_eq((ev.partner, sorted(ev.members)), ("politie", ["gemeente", "politie"]), "joined")
    gets(p, res, [1, 3, 4, 5])                  # history without its own invitation (12.5)
    res, _ = step("politie", 2, "CASE_EVENT_NOTE", note=pb.CaseNote(
        text="Bezoek afgelegd", fields=[pb.NoteField(name="financieel", value="EUR 12.000"),
                                        pb.NoteField(name="buurt", value="Jekerdal")]))
    gets(p, res, [6])
    expect_eq([f.name for f in full[6].fields], ["financieel", "buurt"], "the lead sees all")
    res, _ = step("gemeente", 2, "CASE_EVENT_ATTACHMENT", attach=pb.CaseAttach(
        name="rapport.pdf", media_type="application/pdf", content=b"%PDF-1.4 interop"))
    (_, ev), = gets(p, res, [7])
    expect(not ev.HasField("attachment"), "politie's rule does not list attachments")
    res, ev = step("politie", 2, "CASE_EVENT_SIGNAL_LINKED",
                   link_signal=pb.CaseLinkSignal(item_seq=linked.item_seq))
    expect_eq(pb.Signal.FromString(ev.signal), pb.Signal.FromString(linked.signal),
              "the lead gets the linked signal as the linker was given it")
    (_, ev), = gets(p, res, [8])
    expect_eq(signal_fields(pb.Signal.FromString(ev.signal)), {"sender", "kind", "theme", "area"},
              "politie's copy: its signal_fields and sender, kind, theme")
    res, _ = step("gemeente", 3, "CASE_EVENT_INVITED", invite=pb.CaseInvite(partner="woco"))
    gets(p, res, [9])
    gets(w, res, [9])
    summary = w.conn.case_view(case).cases[0]
    expect_eq((summary.my_state, len(w.conn.case_view(case).events)), ("invited", 0),
              "an invited partner's view: the summary, no timeline (12.6)")
    res, ev = step("woco", 10, "CASE_EVENT_JOINED", accept=pb.CaseAnswer())
    gets(p, res, [10])
    got = gets(w, res, [1, 2, 4, 5, 6, 7, 8, 10])
    woco_note = got[4][1]
    expect(not woco_note.HasField("text") and not woco_note.fields,
           "a note woco may not read arrives with neither text nor fields (12.5)")
    expect(got[0][1].HasField("address") and not got[0][1].HasField("subject"),
           "woco sees the address, not the subject")
    expect_eq(signal_fields(pb.Signal.FromString(got[6][1].signal)), {"sender", "kind", "theme"},
              "a rule without signal_fields: sender, kind and theme only")

    # the timelines as each partner may see them are its deliveries (12.6)
    for party in (g, p, w):
        view = party.conn.case_view(case)
        expect_eq(len(view.cases), 1, "one summary")
        s = view.cases[0]
        expect_eq((s.case_id, s.case_type, s.lead, s.state, s.my_state, s.title,
                   sorted(s.members)),
                  (case, CASE_TYPE, "gemeente", "open", "member",
                   "Hennepteelt, signaal woningcorporatie", ["gemeente", "politie", "woco"]),
                  "%s's summary" % party.name)
        expect_eq(s.opened_at, full[1].at, "opened_at")
        expect_eq([e.event_seq for e in view.events], list(range(1, 11)), "the timeline")
        for e in view.events:
            same_event(env, e, expected_view(env, full[e.event_seq], party.partner),
                       "%s's timeline event %d" % (party.name, e.event_seq))
        mine = [c for c in party.conn.case_view().cases if c.case_id == case]
        expect_eq([c.my_state for c in mine], ["member"], "%s's list" % party.name)

    res, ev = step("woco", 2, "CASE_EVENT_LEFT", leave=pb.CaseLeave())
    expect_eq((ev.partner, sorted(ev.members)), ("woco", ["gemeente", "politie"]), "left")
    (left_delivery, _), = p.events(["CASE_EVENT_LEFT"], res, ack=False)
    res, _ = step("gemeente", 2, "CASE_EVENT_CLOSED", close=pb.CaseClose(reason="Afgerond"))
    expect_eq(full[12].text, "Afgerond", "the close reason is the event's text")
    # close sets the expiry of every waiting delivery of the case (12.5): the unacknowledged
    # LEFT event comes again on a new connection with it
    env.close(p.conn)
    p = CaseParty(env, "politie")
    p.closed_at = full[12].at
    got = p.events(["CASE_EVENT_LEFT", "CASE_EVENT_CLOSED"], ack=False)
    expect_eq((got[0][0].seq, got[0][0].redelivery), (left_delivery.seq, True),
              "the waiting delivery again")
    expect_eq(got[0][0].expires_at, full[12].at + CASE_RETENTION_S,
              "a waiting delivery expires at the close + retention_after_close")
    p.conn.ack(got[0][0].seq, got[1][0].seq)
    p.closed_at = None              # reopen takes the expiry away again (12.5)
    expect_eq(p.conn.case_view(case).cases[0].state, "closed", "the summary says closed")
    res, _ = step("gemeente", 2, "CASE_EVENT_REOPENED", reopen=pb.CaseReopen(reason="Nieuw feit"))
    (reopened, _), = p.events(["CASE_EVENT_REOPENED"], res, ack=False)
    res, ev = step("gemeente", 1, "CASE_EVENT_LEFT", leave=pb.CaseLeave(partner="politie"))
    expect_eq((ev.partner, list(ev.members)), ("politie", ["gemeente"]), "politie removed")
    # removal withdraws what still waited: its ack is UNKNOWN_DELIVERY (12.5)
    p.conn.ack(reopened.seq)
    expect_eq(p.conn.backlog(), 0, "politie's waiting case delivery was removed")
    expect(any(r.seq == reopened.seq and reason_name(env, r) == "UNKNOWN_DELIVERY"
               for r in p.conn.ack_refusals), "the ack of a removed delivery: UNKNOWN_DELIVERY")
    for party in (p, w):
        r = party.conn.case_query(case)
        expect_rejected(env, r, "NOT_FOUND", item_index=-1)
        expect_eq(r.rejected.text, "no case %s that you can see" % case, "NOT_FOUND text")
    res, _ = step("gemeente", 1, "CASE_EVENT_CLOSED", close=pb.CaseClose(reason="Klaar"))
    for party in (g, p, w):
        party.silent()


@check("13c case command refusals (12.2-12.4): decoding and validation, SENDER_MISMATCH,"
       " BAD_SIGNATURE, duplicates, NOT_FOUND, NOT_PERMITTED, POLICY_DENIED, CASE_CLOSED")
def check_case_refusals(env):
    pb = env.pb
    g, p, w = (CaseParty(env, n) for n in ("gemeente", "politie", "woco"))
    gc, pc, wc = g.conn, p.conn, w.conn
    opening = dict(case_type=CASE_TYPE, area="BU09350101")

    # 12.2: the CasePublish itself, checked when the frame is decoded
    cmd = case_cmd(env, "gemeente", open=pb.CaseOpen(**opening)).SerializeToString()
    f = gc.request(gc.case_publish_frame(None, cmd, b"\0" * 64))
    r = expect_rejected(env, f, "INVALID_MESSAGE", item_index=-1)
    expect(not r.HasField("message_id"), "no command_id, no message_id")
    f = gc.request(gc.case_publish_frame(b"\1" * 15, cmd, b"\0" * 64))
    expect_rejected(env, f, "INVALID_FIELD", item_index=-1)
    command_id = os.urandom(16)
    f = gc.request(gc.case_publish_frame(command_id, b"", sc.sign_publish(
        gc.signing_key, command_id, [b""])))
    expect_rejected(env, f, "INVALID_MESSAGE", command_id, -1)
    f = gc.request(gc.case_publish_frame(command_id, cmd, None))
    expect_rejected(env, f, "BAD_SIGNATURE", command_id, -1)
    case_refused(env, gc, cmd, "BAD_SIGNATURE",
                 signature=sc.sign_publish(gc.signing_key, os.urandom(16), [cmd]))
    # the signature comes before the bytes are looked at (12.2 step 2)
    case_refused(env, gc, b"\xff\xff", "BAD_SIGNATURE", signature=b"\0" * 64)

    # 12.3: the command
    case_refused(env, gc, b"\xff\xff", "INVALID_MESSAGE")
    case_refused(env, gc, pb.CaseCommand(actor=ACTOR["gemeente"]), "INVALID_MESSAGE")
    case_refused(env, gc, with_unknown_field(cmd), "INVALID_MESSAGE", "unknown field")
    case_refused(env, gc, cmd + pb.CaseCommand(open=pb.CaseOpen(**opening)).SerializeToString(),
                 "INVALID_MESSAGE", "more than once")             # open given twice
    case_refused(env, gc, pb.CaseCommand(open=pb.CaseOpen(**opening)), "INVALID_MESSAGE")
    case_refused(env, gc, case_cmd(env, "politie", open=pb.CaseOpen(**opening)),
                 "SENDER_MISMATCH")
    case_refused(env, gc, case_cmd(env, "gemeente", "C-00000001", open=pb.CaseOpen(**opening)),
                 "INVALID_FIELD", "case_id")
    case_refused(env, gc, case_cmd(env, "gemeente", open=pb.CaseOpen(case_type=CASE_TYPE)),
                 "INVALID_MESSAGE")
    case_refused(env, gc, case_cmd(env, "gemeente", open=pb.CaseOpen(
        case_type=CASE_TYPE, area="BU0935010")), "INVALID_AREA")
    case_refused(env, gc, case_cmd(env, "gemeente", open=pb.CaseOpen(
        address=pb.Address(postcode="6211SS", house_number=1), **opening)), "INVALID_POSTCODE")
    case_refused(env, gc, case_cmd(env, "gemeente", open=pb.CaseOpen(
        subject="123456789", **opening)), "INVALID_FIELD", "subject")
    case_refused(env, gc, case_cmd(env, "gemeente", open=pb.CaseOpen(
        title="x" * 201, **opening)), "INVALID_FIELD", "title")
    case_refused(env, gc, case_cmd(env, "gemeente", note=pb.CaseNote(text="x")),
                 "INVALID_MESSAGE")                            # no case_id
    case_refused(env, gc, case_cmd(env, "gemeente", "C-0000001", note=pb.CaseNote(text="x")),
                 "INVALID_FIELD", "case_id")
    case_refused(env, gc, case_cmd(env, "gemeente", "C-00000001", note=pb.CaseNote()),
                 "INVALID_MESSAGE")
    case_refused(env, gc, case_cmd(env, "gemeente", "C-00000001", note=pb.CaseNote(
        fields=[pb.NoteField(name="text", value="x")])), "INVALID_FIELD", r"fields\[0\]\.name")
    case_refused(env, gc, case_cmd(env, "gemeente", "C-00000001", note=pb.CaseNote(
        text="x", fields=[pb.NoteField(name="a", value="v" * 2001)])),
        "INVALID_FIELD", r"note\.fields\[0\]\.value")
    case_refused(env, gc, case_cmd(env, "gemeente", "C-00000001", attach=pb.CaseAttach(
        name="a/b.pdf", media_type="application/pdf", content=b"x")), "INVALID_FIELD")
    case_refused(env, gc, case_cmd(env, "gemeente", "C-00000001", attach=pb.CaseAttach(
        name="b.pdf", media_type="application/pdf; q=1", content=b"x")), "INVALID_FIELD")
    case_refused(env, gc, case_cmd(env, "gemeente", "C-00000001", close=pb.CaseClose()),
                 "INVALID_MESSAGE")
    case_refused(env, gc, case_cmd(env, "gemeente", "C-00000001",
                                   link_signal=pb.CaseLinkSignal(item_seq=0)), "INVALID_FIELD")

    # 12.4: open
    case_refused(env, pc, case_cmd(env, "politie", open=pb.CaseOpen(**opening)),
                 "POLICY_DENIED", "lead")
    case_refused(env, gc, case_cmd(env, "gemeente", open=pb.CaseOpen(
        case_type="geen-zaak", area="GM0935")), "POLICY_DENIED")
    case_refused(env, gc, case_cmd(env, "gemeente", on_behalf_of="politie",
                                   open=pb.CaseOpen(**opening)), "NOT_PERMITTED", "may not act")

    # idempotency (12.2 step 3)
    first = gc.case_publish(case_cmd(env, "gemeente", open=pb.CaseOpen(**opening)))
    case = case_accepted(env, first, 1).case_id
    again = gc.retry(first)
    expect_eq(again.answer.accepted.duplicate, True, "a repeat is a duplicate")
    expect_eq((again.answer.accepted.case_id, again.answer.accepted.items),
              (case, first.answer.accepted.items), "the original answer again")
    case_refused(env, gc, case_cmd(env, "gemeente", case, note=pb.CaseNote(text="ander")),
                 "DUPLICATE_CONFLICT", command_id=first.message_id)
    # a command id shares its space with publishes (12.2)
    pub = env.connect("gemeente").publish([env.signal()], message_id=first.message_id)
    expect_rejected(env, pub.answer, "DUPLICATE_CONFLICT", first.message_id, -1)
    g.events(["CASE_EVENT_OPENED"], first)

    # 12.4: standing
    unseen = "no case %s that you can see"
    for c in (case, "C-99999999"):
        r = case_refused(env, pc, case_cmd(env, "politie", c, note=pb.CaseNote(text="x")),
                         "NOT_FOUND")
        expect_eq(r.text, unseen % c, "NOT_FOUND says the same for both (12.4)")
        r = pc.case_query(c)
        expect_rejected(env, r, "NOT_FOUND", item_index=-1)
        expect(not r.rejected.HasField("message_id"), "a query's refusal names no message_id")
        expect_eq(r.rejected.text, unseen % c, "a query's NOT_FOUND text")
    case_refused(env, wc, case_cmd(env, "woco", case, on_behalf_of="gemeente",
                                   note=pb.CaseNote(text="x")), "NOT_FOUND")
    case_refused(env, pc, case_cmd(env, "politie", case, accept=pb.CaseAnswer()), "NOT_FOUND")
    res = gc.case_publish(case_cmd(env, "gemeente", case, invite=pb.CaseInvite(partner="politie")))
    case_accepted(env, res, 2)
    g.events(["CASE_EVENT_INVITED"], res)
    p.events(["CASE_EVENT_INVITED"], res)
    case_refused(env, gc, case_cmd(env, "gemeente", case, invite=pb.CaseInvite(
        partner="brandweer")), "POLICY_DENIED")
    case_refused(env, pc, case_cmd(env, "politie", case, note=pb.CaseNote(text="x")),
                 "NOT_PERMITTED")                  # invited, not a member
    case_refused(env, pc, case_cmd(env, "politie", case, on_behalf_of="gemeente",
                                   close=pb.CaseClose(reason="x")), "NOT_PERMITTED",
                 "may not act for gemeente in case type %s" % CASE_TYPE)
    case_refused(env, pc, case_cmd(env, "politie", case, leave=pb.CaseLeave()), "NOT_PERMITTED")
    for op in (dict(invite=pb.CaseInvite(partner="politie")), dict(accept=pb.CaseAnswer()),
               dict(leave=pb.CaseLeave()), dict(leave=pb.CaseLeave(partner="gemeente")),
               dict(reopen=pb.CaseReopen())):
        case_refused(env, gc, case_cmd(env, "gemeente", case, **op), "NOT_PERMITTED")
    res = pc.case_publish(case_cmd(env, "politie", case, accept=pb.CaseAnswer()))
    case_accepted(env, res, 3)
    g.events(["CASE_EVENT_JOINED"], res)
    p.events(["CASE_EVENT_OPENED", "CASE_EVENT_JOINED"], res)
    for op in (dict(invite=pb.CaseInvite(partner="woco")), dict(close=pb.CaseClose(reason="x")),
               dict(leave=pb.CaseLeave(partner="gemeente")), dict(accept=pb.CaseAnswer())):
        case_refused(env, pc, case_cmd(env, "politie", case, **op), "NOT_PERMITTED")
    case_refused(env, pc, case_cmd(env, "politie", case, link_signal=pb.CaseLinkSignal(
        item_seq=1 << 40)), "NOT_FOUND", "no signal with item seq")
    # a signal politie's own principal was not given: gemeente's own item
    mine = env.connect("gemeente").publish([env.signal()])
    expect_accepted(mine.answer, mine.message_id, 1)
    case_refused(env, gc, case_cmd(env, "gemeente", case, link_signal=pb.CaseLinkSignal(
        item_seq=mine.answer.accepted.items[0].seq)), "NOT_FOUND", "no signal with item seq")
    case_refused(env, gc, case_cmd(env, "gemeente", case, note=pb.CaseNote(text="x")),
                 "DUPLICATE_CONFLICT", command_id=mine.message_id)   # and the other way
    d = p.conn.receive(ANSWER_S)
    expect(d is not None and d.HasField("signal"), "politie receives gemeente's signal")
    p.conn.ack(d.seq)

    # CASE_CLOSED (12.4)
    res = gc.case_publish(case_cmd(env, "gemeente", case, close=pb.CaseClose(reason="x")))
    case_accepted(env, res, 2)
    g.events(["CASE_EVENT_CLOSED"], res)
    p.events(["CASE_EVENT_CLOSED"], res)
    for who, conn, op in (("gemeente", gc, dict(close=pb.CaseClose(reason="y"))),
                          ("gemeente", gc, dict(invite=pb.CaseInvite(partner="woco"))),
                          ("gemeente", gc, dict(leave=pb.CaseLeave(partner="politie"))),
                          ("politie", pc, dict(note=pb.CaseNote(text="x"))),
                          ("politie", pc, dict(leave=pb.CaseLeave()))):
        case_refused(env, conn, case_cmd(env, who, case, **op), "CASE_CLOSED")
    for party in (g, p, w):
        party.silent()


@check("13d CaseQuery and CaseView (12.6): field refusals, attachments' bytes left out where a"
       " timeline would overflow, and a timeline in pages with more")
def check_case_query(env):
    pb = env.pb
    g = CaseParty(env, "gemeente")
    gc = g.conn
    for kw in (dict(case_id="C-1"), dict(after_event_seq=1), dict(after_case_id="C-00000001",
               case_id="C-00000001"), dict(after_case_id="zaak")):
        f = gc.case_query(**kw)
        expect_rejected(env, f, "INVALID_FIELD", item_index=-1)
    res = gc.case_publish(case_cmd(env, "gemeente", open=pb.CaseOpen(
        case_type=CASE_TYPE, area="GM0935", title="Paginering")))
    case = case_accepted(env, res, 1).case_id
    g.events(["CASE_EVENT_OPENED"], res)
    content = bytes(range(256)) * 400          # 102,400 bytes
    for i in range(3):
        res = gc.case_publish(case_cmd(env, "gemeente", case, attach=pb.CaseAttach(
            name="bijlage-%d.bin" % i, media_type="application/octet-stream", content=content)))
        case_accepted(env, res, 1)
        g.events(["CASE_EVENT_ATTACHMENT"], res)
    view = gc.case_view(case)
    expect(not view.more, "three attachments fit once their bytes are left out")
    sizes = [len(e.attachment.content) for e in view.events[1:]]
    expect(all(e.attachment.HasField("content") for e in view.events[1:]),
           "an attachment left out keeps content, present")
    expect_eq(sizes[:2], [len(content)] * 2, "the attachments before the overflow are whole")
    expect_eq(sizes[2], 0, "from the overflow on, content is empty")
    expect_eq((view.events[3].attachment.name, view.events[3].attachment.media_type),
              ("bijlage-2.bin", "application/octet-stream"), "name and media type stay")
    text = "n" * 8000
    fields = [pb.NoteField(name="veld-%d" % j, value="v" * 2000) for j in range(32)]
    for i in range(4):
        res = gc.case_publish(case_cmd(env, "gemeente", case,
                                       note=pb.CaseNote(text=text, fields=fields)))
        case_accepted(env, res, 1)
        g.events(["CASE_EVENT_NOTE"], res)
    pages = gc.case_pages(case)
    expect(len(pages) >= 2, "a timeline over 262,144 bytes comes in pages")
    expect(all(pg.more for pg in pages[:-1]) and not pages[-1].HasField("more"),
           "more on every page but the last, where it is unset")
    expect_eq([e.event_seq for pg in pages for e in pg.events], list(range(1, 9)),
              "the pages hold every event once, in order")
    expect(all(len(pg.SerializeToString()) < sc.MAX_FRAME_BYTES for pg in pages),
           "every page fits a frame")
    notes = [e for pg in pages for e in pg.events if e.kind == pb.CASE_EVENT_NOTE]
    expect(all(e.text == text and list(e.fields) == fields for e in notes),
           "notes come whole")
    res = gc.case_publish(case_cmd(env, "gemeente", case, close=pb.CaseClose(reason="klaar")))
    case_accepted(env, res, 1)
    g.events(["CASE_EVENT_CLOSED"], res)
    g.silent()


EXAMPLE_PRINCIPALS = {      # key file name -> (principal id, role)
    "riec-analist": ("riec/analist", "caseworker"),
    "riec-systeem": ("riec/systeem", "system"),
    "politie-analist": ("politie/analist", "caseworker"),
    "politie-systeem": ("politie/systeem", "system"),
    "brandweer-x": ("brandweer/x", "caseworker"),
    "riec-beheer": ("riec/beheer", "operator"),
}
EXAMPLE_POLICY = """\
version: 1
partners:
  - id: riec
    name: RIEC
  - id: politie
    name: Politie
  - id: brandweer
    name: Brandweer
principals:
%s
rules:
  - id: riec-politie
    from: [riec]
    to: [politie]
    themes: [ondermijning]
    areas: [GM0935]
    purpose: "Aanpak ondermijning"
    legal_basis: "Convenant art. 5"
    fields: [area]
    retention: 90d
case_types:
  - id: ondermijning-adres
    purpose: "Gezamenlijke aanpak ondermijning op een adres"
    legal_basis: "Convenant RIEC Limburg, art. 7"
    lead: [riec]
    members:
      - id: ondermijning-politie
        partners: [politie]
        purpose: "Opsporing en vervolging"
        legal_basis: "Wpg art. 16"
        fields: [text, address]
    retention_after_close: 2y
""" % "\n".join("  - id: %s\n    role: %s\n    key_file: keys/%s.pub" % (pid, role, name)
                for name, (pid, role) in EXAMPLE_PRINCIPALS.items())


class SideBroker:
    """A broker of its own, with the example policy of 12.7, in a folder of env.tmp."""

    def __init__(self, env, name):
        self.env = env
        self.dir = os.path.join(env.tmp, name)
        keydir = os.path.join(self.dir, "keys")
        os.makedirs(keydir, 0o700)
        for key in ("broker",) + tuple(EXAMPLE_PRINCIPALS):
            sc.write_key_pair(keydir, key)
        self.policy_path = os.path.join(self.dir, "policy.yaml")
        with open(self.policy_path, "w") as f:
            f.write(EXAMPLE_POLICY)
        os.chmod(self.policy_path, 0o644)
        self.broker = Broker(self.dir)

    def key(self, name):
        return os.path.join(self.dir, "keys", name + ".key")

    def connect(self, name, endpoint=None):
        conn = sc.connect(self.env.pb, endpoint or self.broker.endpoint, self.key(name),
                          os.path.join(self.dir, "keys", "broker.pub"), self.env.ctx)
        self.env.open.append(conn)
        return conn

    def admin_endpoint(self):
        """The admin endpoint the broker names in its broker.ready log line (11.1)."""
        for line in self.broker.log_text().splitlines():
            if "event=broker.ready" in line:
                m = re.search(r"\badmin=(tcp://\S+)", line)
                if m:
                    return m.group(1)
        raise CheckFailed("no admin=ENDPOINT in the broker.ready line:\n"
                          + self.broker.log_text())

    def restart(self, settings=()):
        self.env.close_all()
        self.broker.stop()
        self.broker.start(settings=settings)


def example_open(pb, actor):
    return sc.case_command(pb, actor, open=pb.CaseOpen(
        case_type="ondermijning-adres", area="BU09350101",
        address=pb.Address(postcode="6211AB", house_number=12),
        title="Hennepteelt, signaal woningcorporatie"))


@check("13e the example of 12.7, its values read from the document, on a broker of its own, then"
       " the case-open budget (RATE_LIMITED), a case list in pages, and a store below its floor"
       " (UNAVAILABLE)")
def check_case_example(env):
    pb = env.pb
    example = doc_code_blocks(doc_section(document(), "12.7 Example"))[0]
    answers = [tuple(map(int, m)) for m in
               re.findall(r"items: \[\{seq: (\d+), recipients: (\d+)\}\]", example)]
    expect_eq(len(answers), 3, "the example's three Accepted")
    not_found = re.search(r'Rejected\{reason: NOT_FOUND, text: "([^"]+)"\}', example).group(1)
    side = SideBroker(env, "example")
    try:
        side.broker.start(settings=("max_case_opens_per_hour=1",))
        riec = side.connect("riec-analist")
        pol = side.connect("politie-analist")
        pol.flow()
        a = riec.case_publish(example_open(pb, "riec/analist"))
        expect_eq((a.answer.accepted.case_id, a.answer.accepted.items[0].seq,
                   a.answer.accepted.items[0].recipients), ("C-00000001",) + answers[0],
                  "the open's Accepted")
        b = riec.case_publish(sc.case_command(pb, "riec/analist", "C-00000001",
                                              invite=pb.CaseInvite(partner="politie")))
        expect_eq((b.answer.accepted.case_id, b.answer.accepted.items[0].seq,
                   b.answer.accepted.items[0].recipients), ("C-00000001",) + answers[1],
                  "the invitation's Accepted")
        d = pol.receive(ANSWER_S)
        expect(d is not None, "politie/analist receives the invitation")
        ev = pol.case_event(d)
        expect_eq((d.rule_id, ev.case_id, ev.event_seq, pb.CaseEventKind.Name(ev.kind),
                   ev.partner), ("ondermijning-politie", "C-00000001", 2, "CASE_EVENT_INVITED",
                                 "politie"), "the invitation's Deliver")
        expect(3 <= d.seq <= 6, "the invitation's four deliveries have seqs 3 to 6 (seq %d)"
               % d.seq)
        pol.ack(d.seq)
        c = pol.case_publish(sc.case_command(pb, "politie/analist", "C-00000001",
                                             accept=pb.CaseAnswer()))
        expect_eq((c.answer.accepted.items[0].seq, c.answer.accepted.items[0].recipients),
                  answers[2], "the accept's Accepted")
        got = [pol.receive(ANSWER_S) for _ in range(2)]
        expect(None not in got, "politie/analist receives two events")
        expect_eq([pol.case_event(x).event_seq for x in got], [1, 3],
                  "event 1 (opened), then event 3 (joined); not event 2 again")
        pol.ack(*[x.seq for x in got])
        f = side.connect("brandweer-x").case_query("C-00000001", request_id=9)
        r = expect_rejected(env, f, "NOT_FOUND", item_index=-1)
        expect_eq(r.text, not_found, "the example's text")
        # the case-open budget (10): one an hour for this principal
        r = case_refused(env, riec, example_open(pb, "riec/analist"), "RATE_LIMITED",
                         "case-open budget")
        # list paging (12.6): enough cases that their summaries overflow one frame
        side.restart(("max_case_opens_per_hour=100000",))
        sysconn = side.connect("riec-systeem")
        title = "t" * 200
        ids = []
        for _ in range(980):
            cid = os.urandom(16)
            cmd = sc.case_command(pb, "riec/systeem", open=pb.CaseOpen(
                case_type="ondermijning-adres", area="GM0935", title=title))
            data = cmd.SerializeToString()
            sysconn.send_bytes(sysconn.case_publish_frame(
                cid, data, sc.sign_publish(sysconn.signing_key, cid, [data])))
            ids.append(cid)
        want = set(ids)
        while want:
            f = sysconn.wait_for(lambda f: f.WhichOneof("body") in ("accepted", "rejected"),
                                 30.0)
            expect(f.WhichOneof("body") == "accepted", "open accepted: %s" % f)
            want.discard(f.accepted.message_id)
        pages = sysconn.case_pages()
        expect(len(pages) >= 2, "a list of 981 cases comes in pages")
        listed = [c.case_id for pg in pages for c in pg.cases]
        expect_eq(listed, ["C-%08d" % n for n in range(1, 982)],
                  "every case once, in case id order")
        expect(all(pg.more for pg in pages[:-1]) and not pages[-1].more, "more until the last")
        # below the store's floor (12.2 step 8): content refused, a close goes on
        side.restart(("store_min_free_bytes=1125899906842624",))
        riec = side.connect("riec-analist")
        case_refused(env, riec, sc.case_command(pb, "riec/analist", "C-00000001",
                                                note=pb.CaseNote(text="x")),
                     "UNAVAILABLE", "below its floor")
        done = riec.case_publish(sc.case_command(pb, "riec/analist", "C-00000001",
                                                 close=pb.CaseClose(reason="x")))
        expect_accepted(done.answer, done.message_id, 1)
        expect_eq(riec.case_view("C-00000001").cases[0].state, "closed", "closed below the floor")
    finally:
        env.close_all()
        side.broker.stop()


@check("14 the admin endpoint (11): an operator's status and its values; a partner key"
       " refused there, an admin request refused on the partner endpoint")
def check_admin_status(env):
    pb = env.pb
    side = SideBroker(env, "admin")
    try:
        side.broker.start(settings=("admin_listen=tcp://127.0.0.1:*",))
        admin = side.admin_endpoint()
        riec = side.connect("riec-analist")
        res = riec.case_publish(example_open(pb, "riec/analist"))
        expect_accepted(res.answer, res.message_id, 1)
        op = side.connect("riec-beheer", admin)
        ok, error, doc = op.admin("status")
        expect(ok and error is None, "status ok: %r" % error)
        with open(side.policy_path, "rb") as f:
            policy_hash = sc.blake2b256(f.read()).hex()
        expect_eq((doc["protocol"], doc["endpoint"], doc["admin_endpoint"]),
                  (1, side.broker.endpoint, admin), "protocol and endpoints")
        expect_eq((doc["policy"]["hash"], doc["policy"]["partners"], doc["policy"]["principals"],
                   doc["policy"]["rules"]), (policy_hash, 3, 6, 1), "the policy in force")
        expect(os.path.samefile(doc["policy"]["path"], side.policy_path), "policy.path")
        expect_eq((doc["connected_principals"], doc["connections"]), (1, 1),
                  "one partner connection")
        expect_eq(doc["messages"]["accepted"], 1, "one case command accepted")
        expect_eq(doc["backlog"], 2, "the opened event waits for riec's two principals")
        expect(doc["uptime_s"] >= 0 and doc["started_at"] <= time.time(), "times")
        expect(doc["last_reload"] is None, "no reload since the start")
        ok, error, doc = op.admin("status", ["extra"])
        expect(not ok and error, "status takes no argument: ok false with an error")
        ok, error, _ = op.admin("geen-commando")
        expect(not ok and "unknown command" in error, "unknown command: %r" % error)
        op.send(admin_request=pb.AdminRequest(command="status"))
        f = op.wait_for(lambda f: f.WhichOneof("body") == "rejected", ANSWER_S)
        expect_rejected(env, f, "INVALID_MESSAGE", item_index=-1)
        f = riec.request(riec.frame(admin_request=pb.AdminRequest(request_id=1,
                                                                  command="status")))
        expect_rejected(env, f, "UNEXPECTED_BODY", item_index=-1)
        partner_on_admin = side.connect("riec-analist", admin)
        try:
            partner_on_admin.wait_handshake(ANSWER_S)
        except sc.HandshakeRefused as e:
            expect_eq(e.value, sc.ZAP_REFUSED_STATUS, "ZAP status of a partner key on admin")
        else:
            raise CheckFailed("a partner key completed a handshake on the admin endpoint")
    finally:
        env.close_all()
        side.broker.stop()


def pending_refusal_texts():
    """The refusal texts of `pending` (11.4), from the document's table: case -> text."""
    texts = {}
    for line in doc_section(document(), "`pending`").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[1].startswith("`"):
            texts[cells[0]] = re.findall(r"`([^`]+)`", cells[1])
    if not texts:
        raise CheckFailed("PROTOCOL.md 11.4 has no table of pending's refusals")
    return texts


@check("14b the admin endpoint's pending (11.4): a principal's case event, oldest first, with its"
       " state and no content; pages; each refusal's text as the document gives it")
def check_admin_pending(env):
    pb = env.pb
    texts = pending_refusal_texts()
    side = SideBroker(env, "pending")
    try:
        side.broker.start(settings=("admin_listen=tcp://127.0.0.1:*",))
        riec = side.connect("riec-analist")
        res = riec.case_publish(example_open(pb, "riec/analist"))
        expect_accepted(res.answer, res.message_id, 1)
        res2 = riec.case_publish(sc.case_command(pb, "riec/analist", "C-00000001",
                                                 note=pb.CaseNote(text="Geheime notitie")))
        expect_accepted(res2.answer, res2.message_id, 1)
        op = side.connect("riec-beheer", side.admin_endpoint())
        ok, error, doc = op.admin("pending", ["riec/systeem"])
        expect(ok and error is None, "pending ok: %r" % error)
        expect_eq((doc["principal"], doc["partner"], doc["pending"], doc["after"], doc["limit"],
                   doc["next_after"]), ("riec/systeem", "riec", 2, 0, 100, None), "the page")
        rows = doc["deliveries"]
        expect_eq([r["kind"] for r in rows], ["case_event", "case_event"], "two case events")
        expect(rows[0]["seq"] < rows[1]["seq"], "oldest first")
        first = rows[0]
        expect_eq((first["sender"], first["message_id"], first["item_index"], first["case_id"],
                   first["event_seq"], first["state"], first["sent"], first["set_aside_at"],
                   first["reason"]),
                  ("riec/analist", res.message_id.hex(), None, "C-00000001", 1, "waiting", "no",
                   None, None), "the opened event's row")
        expect_eq(rows[1]["event_seq"], 2, "the note is event 2")
        expect(first["expires_at"] > first["queued_at"] > 0, "times")
        text = json.dumps(doc)
        for secret in ("Geheime", "Hennepteelt", "6211AB", "BU09350101"):
            expect(secret not in text, "no content in the answer (%s)" % secret)
        ok, error, page = op.admin("pending", ["riec/systeem", "limit=1"])
        expect(ok and [r["seq"] for r in page["deliveries"]] == [first["seq"]]
               and page["next_after"] == first["seq"], "a page of one names the next")
        ok, error, page = op.admin("pending", ["riec/systeem", "after=%d" % first["seq"],
                                               "limit=1"])
        expect(ok and [r["seq"] for r in page["deliveries"]] == [rows[1]["seq"]]
               and page["next_after"] is None, "the last page")
        refusals = [
            ([], texts["no argument, or an empty first one"][0]),
            (["riec/systeem", "limit=0"], texts["`limit=` not digits, 0 or above 1000"][0]),
            (["riec/systeem", "after=-1"],
             texts["`after=` not digits, or above 9223372036854775807"][0]),
            (["riec/beheer"], texts["an operator"][0].replace("gemeente/beheer", "riec/beheer")),
            (["riec/niemand"], texts["no such principal in the policy in force"][0]
             .replace("om/griffie", "riec/niemand")),
        ]
        for args, want in refusals:
            ok, error, doc = op.admin("pending", args)
            expect(not ok and error == want and doc is None,
                   "pending %r refused %r, got %r" % (args, want, error))
        ok, _, doc = op.admin("pending", ["riec/systeem"])
        expect(ok and doc["pending"] == 2, "nothing lost by the refusals")
    finally:
        env.close_all()
        side.broker.stop()


# --- runner ---------------------------------------------------------------

def run_check(env, name, fn):
    """Run one check; True if it passed."""
    try:
        fn(env)
    except Exception as e:
        print("FAIL %s: %s: %s" % (name, type(e).__name__, e), flush=True)
        if VERBOSE or not isinstance(e, CheckFailed):
            traceback.print_exc(limit=4)
        return False
    finally:
        env.close_all()
    print("ok   %s" % name, flush=True)
    return True


def after_check(env, ok):
    if not env.broker.alive():
        print("broker exited (%r):\n%s" % (env.broker.proc.returncode, env.broker.log_text()),
              flush=True)
        env.broker.start()
    if not ok:
        # a failed check may leave deliveries behind: do not let it fail the next one
        try:
            env.drain("politie")
        except Exception as e:
            print("     (could not empty politie's mailbox: %s)" % e, flush=True)
        env.close_all()


def main(argv):
    global VERBOSE
    args = [a for a in argv[1:] if a != "-v"]
    VERBOSE = len(args) != len(argv) - 1
    ordered = sorted(CHECKS, key=lambda c: (int(c[0].split()[0].rstrip("abcdefgh")),
                                            c[0].split()[0]))
    selected = [(n, fn) for n, fn in ordered if not args or any(a in n for a in args)]
    passed = failed = 0
    try:
        env = Env()
    except Exception as e:      # the broker did not start: every check fails
        print("setup failed: %s" % e, flush=True)
        env = None
        failed = len(selected) or 1
    if env is not None:
        try:
            for name, fn in selected:
                ok = run_check(env, name, fn)
                passed += ok
                failed += not ok
                after_check(env, ok)
        finally:
            rc = env.shutdown()
        if rc not in (0, -signal.SIGTERM):
            failed += 1
            print("FAIL broker stop: exit status %r after SIGTERM" % rc, flush=True)
    print("interop: %d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

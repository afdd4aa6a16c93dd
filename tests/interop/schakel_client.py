"""schakel_client.py — an independent client of the Schakel wire protocol, version 1.

Written from docs/PROTOCOL.md and proto/schakel.proto only. It covers what a
partner system needs: key files (section 2), the CurveZMQ keys derived from
Ed25519 (2.4), the DEALER connection with its socket monitor (3, 7.1),
"who am I" and backlog via Heartbeat (4.9, 7.7), signed publishing with the
item hash tree (6), receiving with Flow, Deliver and Ack (7.4), sending an Ack
refused RATE_LIMITED again after a pause (4.7), and following reconnects, where a
Heartbeat whose answer may have been lost is asked again (7.10). For cases
(12): signed case commands, case events decoded from deliveries, and case
queries read page by page. For operators (11): admin requests and their
answers in chunks.

The protobuf module is generated from proto/schakel.proto at run time
(`load_schema`); nothing generated is kept in the tree.
"""

import collections
import errno
import hashlib
import importlib.util
import json
import os
import re
import stat
import subprocess
import time

import nacl.signing
import zmq
import zmq.utils.monitor
import zmq.utils.z85

# --- constants of the protocol (PROTOCOL.md section 10) -------------------

PROTOCOL_VERSION = 1
PUBLISH_TAG = b"schakel-publish1"          # 6.1, 16 ASCII bytes
MESSAGE_ID_BYTES = 16
SIGNATURE_BYTES = 64
MAX_FRAME_BYTES = 262144
# libzmq counts the 33 bytes of the CURVE MESSAGE command against
# ZMQ_MAXMSGSIZE on this side too (PROTOCOL.md 3.5).
CURVE_OVERHEAD = 33
MAX_ITEMS = 256
MAX_ITEM_BYTES = 32768
MAX_ACKS = 1024
DEFAULT_WINDOW = 64
CLIENT_HEARTBEAT_S = 5.0                    # SCHAKEL_CLIENT_HEARTBEAT_MS
# An Ack refused RATE_LIMITED goes again after 1 s, then 2 s and 4 s; a fourth
# refusal ends it (4.7). Acks are kept until an answer to a later request shows
# they were taken, at most the last 64.
ACK_PAUSE_S = 1.0
ACK_RESENDS = 3
ACKS_KEPT_MAX = 64
ZAP_REFUSED_STATUS = 400                    # 3.3
CASE_ID_RE = re.compile(r"C-[0-9]{8}")      # 12.1
CASE_OPEN_EXPIRES_AT = (1 << 62) - 1        # Deliver.expires_at of an open case (12.5)
ADMIN_MAX_RESPONSE_BYTES = 64 << 20         # a client bounds an admin answer (11.2)

Z85_ALPHABET = ("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                ".-:+=^!/*?&<>()[]{}@%$#")
KEY_FILE_MAX_BYTES = 4096

SECRET_KEY_COMMENT = "# Schakel secret key (Ed25519 seed, Z85). Keep private: mode 0600."
PUBLIC_KEY_COMMENT = "# Schakel public key (Ed25519, Z85)"
# What a key file's first line begins with names its kind (2.2).
KEY_KINDS = ((b"# Schakel secret key", "secret"), (b"# Schakel public key", "public"),
             (b"# Schakel store sealing key", "store"))


class KeyFileError(ValueError):
    """A key file that section 2.2 says must be refused."""


class HandshakeRefused(Exception):
    """The broker's ZAP handler refused our key (3.3)."""

    def __init__(self, event, value):
        super().__init__("handshake refused: event 0x%x, value %d" % (event, value))
        self.event = event
        self.value = value


class ProtocolError(Exception):
    """The broker sent something this page does not allow."""


class NoAnswer(TimeoutError):
    """No answer within the caller's timeout."""


class Refusal(Exception):
    """A request was answered with Rejected."""

    def __init__(self, rejected, schema):
        name = schema.Reason.Name(rejected.reason) if rejected.HasField("reason") else "?"
        super().__init__("%s: %s" % (name, rejected.text))
        self.rejected = rejected


# --- protobuf schema ------------------------------------------------------

def load_schema(proto_dir, out_dir, proto_name="schakel.proto"):
    """Run protoc on PROTO_DIR/PROTO_NAME into OUT_DIR and import the result."""
    subprocess.run(["protoc", "--python_out=" + out_dir, "--proto_path=" + proto_dir,
                    os.path.join(proto_dir, proto_name)], check=True)
    module_name = proto_name[:-len(".proto")] + "_pb2"
    path = os.path.join(out_dir, module_name + ".py")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- keys (section 2) -----------------------------------------------------

def z85_encode(raw):
    return zmq.utils.z85.encode(raw).decode("ascii")


def z85_decode(text):
    if isinstance(text, bytes):
        text = text.decode("ascii")
    if len(text) % 5 or any(c not in Z85_ALPHABET for c in text):
        raise KeyFileError("not Z85 text: %r" % text)
    return zmq.utils.z85.decode(text.encode("ascii"))


MAX_LINKS = 40  # as the kernel follows (MAXSYMLINKS)


def _check_folder(path, st, shown):
    """A folder on a key file's path (2.2): root's or the reader's, and not
    writable by group or others unless sticky."""
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise KeyFileError(path + ": in a folder group or others may write (%s)" % shown)
    if st.st_uid not in (0, os.geteuid()):
        raise KeyFileError(path + ": in a folder of another user (%s, uid %d)"
                           % (shown, st.st_uid))


def _open_key_file(path):
    """The key file at path opened for reading as 2.2 says: one name at a
    time from "/" (or from the working folder, whose folders up to "/"
    count too), each opened without following it; every folder on the way
    checked, a symbolic link in the folder part followed (in a sticky
    folder others may write, only the reader's or root's), one at the end
    refused. Returns (fd, stat of the folder holding it)."""
    def opened(name, dir_fd, flags):
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except OSError as e:
            raise KeyFileError(path + ": " + e.strerror) from None

    names = [n for n in path.split("/") if n]
    dir_fd = opened("/" if path.startswith("/") else ".", None, os.O_PATH | os.O_DIRECTORY)
    try:
        shown = "/" if path.startswith("/") else os.getcwd()
        here = shown  # the folder reached, for the messages
        below = os.fstat(dir_fd)
        _check_folder(path, below, shown)
        up = dir_fd
        while not path.startswith("/"):  # the folders above the working one
            parent = opened("..", up, os.O_PATH | os.O_DIRECTORY)
            if up != dir_fd:
                os.close(up)
            up = parent
            st = os.fstat(up)
            if (st.st_dev, st.st_ino) == (below.st_dev, below.st_ino):
                break
            shown = os.path.dirname(shown)
            _check_folder(path, st, shown)
            below = st
        if up != dir_fd:
            os.close(up)
        links = 0
        while names:
            name = names.pop(0)
            if not names:
                return opened(name, dir_fd, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), \
                    os.fstat(dir_fd)
            entry = opened(name, dir_fd, os.O_PATH | os.O_NOFOLLOW)
            try:
                st = os.fstat(entry)
                if stat.S_ISLNK(st.st_mode):
                    folder = os.fstat(dir_fd)
                    if folder.st_mode & 0o022 and st.st_uid not in (0, os.geteuid()):
                        raise KeyFileError(path + ": a symbolic link of another user (%s) in a "
                                           "folder others may write" % name)
                    links += 1
                    if links > MAX_LINKS:
                        raise KeyFileError(path + ": too many levels of symbolic links")
                    target = os.readlink("", dir_fd=entry)
                    names = [n for n in target.split("/") if n] + names
                    if target.startswith("/"):
                        os.close(dir_fd)
                        dir_fd = opened("/", None, os.O_PATH | os.O_DIRECTORY)
                        here = "/"
                        _check_folder(path, os.fstat(dir_fd), here)
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    raise KeyFileError(path + ": " + os.strerror(errno.ENOTDIR))
                here = os.path.join(here, name)
                _check_folder(path, st, here)
                os.close(dir_fd)
                dir_fd, entry = entry, -1
            finally:
                if entry >= 0:
                    os.close(entry)
        raise KeyFileError(path + ": names a folder")
    finally:
        os.close(dir_fd)


def read_key_line(path, want=None):
    """The key line of a key file, read as section 2.2 describes; with want
    ("secret" or "public"), a file whose first line names another kind, or
    none, is refused."""
    fd, _ = _open_key_file(path)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(path + ": not a regular file")
        data = f.read(KEY_FILE_MAX_BYTES + 1)
    if len(data) > KEY_FILE_MAX_BYTES:
        raise KeyFileError(path + ": larger than 4096 bytes")
    first = data.split(b"\n")[0].lstrip(b" \t").rstrip(b" \t\r")
    kind = next((name for prefix, name in KEY_KINDS if first.startswith(prefix)), None)
    if want is not None and kind is not None and kind != want:
        raise KeyFileError(path + ": a %s key file (its first line says so), not a %s key"
                           % (kind, want))
    if want is not None and kind is None:
        raise KeyFileError(path + ": does not say it is a %s key (first line)" % want)
    if kind == "public" and st.st_mode & 0o022:
        raise KeyFileError(path + ": public key file may be written by group or others")
    if st.st_uid not in (0, os.geteuid()):  # its owner may rewrite it whatever its mode
        raise KeyFileError(path + ": key file of another user (uid %d)" % st.st_uid)
    for raw in data.split(b"\n"):
        line = raw.lstrip(b" \t").rstrip(b" \t\r")
        if not line or line.startswith(b"#"):
            continue
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise KeyFileError(path + ": key line is not ASCII") from None
        if len(text) != 40 or any(c not in Z85_ALPHABET for c in text):
            raise KeyFileError(path + ": key line is not 40 Z85 characters")
        return text
    raise KeyFileError(path + ": no key line")


def load_signing_key(path):
    """NAME.key -> nacl SigningKey (the file holds the 32-byte seed)."""
    line = read_key_line(path, "secret")  # its kind first: a .pub is not to be chmodded
    if os.lstat(path).st_mode & 0o077:
        raise KeyFileError(path + ": secret key readable by group or others")
    return nacl.signing.SigningKey(z85_decode(line))


def load_verify_key(path):
    """NAME.pub -> nacl VerifyKey (the Ed25519 public key)."""
    return nacl.signing.VerifyKey(z85_decode(read_key_line(path, "public")))


def write_key_pair(directory, name, seed=None):
    """Write NAME.key (0600) and NAME.pub (0644) as the reference tools do."""
    if seed is None:
        seed = os.urandom(32)
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    sk = nacl.signing.SigningKey(seed)
    files = ((name + ".key", SECRET_KEY_COMMENT, seed, 0o600),
             (name + ".pub", PUBLIC_KEY_COMMENT, bytes(sk.verify_key), 0o644))
    for filename, comment, raw, mode in files:
        path = os.path.join(directory, filename)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(comment + "\n" + z85_encode(raw) + "\n")
        os.chmod(path, mode)  # independent of the umask
    return sk


def curve_public(verify_key):
    """X25519 public key derived from an Ed25519 public key (2.4)."""
    return bytes(verify_key.to_curve25519_public_key())


def curve_secret(signing_key):
    """X25519 secret key derived from an Ed25519 key (2.4)."""
    return bytes(signing_key.to_curve25519_private_key())


_P = 2 ** 255 - 19


def curve_public_math(ed_pk):
    """The same derivation in plain arithmetic (2.4), for cross-checking."""
    y = int.from_bytes(ed_pk, "little") & ((1 << 255) - 1)
    return ((1 + y) * pow((1 - y) % _P, _P - 2, _P) % _P).to_bytes(32, "little")


def curve_secret_math(seed):
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return bytes(h)


# --- signing (section 6) --------------------------------------------------

def blake2b256(data):
    return hashlib.blake2b(data, digest_size=32).digest()


def leaf_hash(item):
    return blake2b256(b"\x00" + item)


def node_hash(left, right):
    return blake2b256(b"\x01" + left + right)


def tree_root(items):
    """Root of the RFC 6962-shaped tree over the exact item bytes."""
    n = len(items)
    if n == 0:
        raise ValueError("a publish has at least one item")
    if n == 1:
        return leaf_hash(items[0])
    k = 1 << ((n - 1).bit_length() - 1)     # largest power of two strictly below n
    return node_hash(tree_root(items[:k]), tree_root(items[k:]))


def signed_bytes(message_id, items):
    if len(message_id) != MESSAGE_ID_BYTES:
        raise ValueError("message_id must be 16 bytes")
    data = PUBLISH_TAG + message_id + tree_root(items)
    assert len(data) == 64
    return data


def sign_publish(signing_key, message_id, items):
    """64-byte detached Ed25519 signature of a publish (6.1)."""
    return signing_key.sign(signed_bytes(message_id, items)).signature


def content_hash(message_id, items, signature):
    """What the broker remembers a publish by (7.3)."""
    return blake2b256(signed_bytes(message_id, items) + signature)


def case_command(schema, actor, case_id=None, on_behalf_of=None, **op):
    """A CaseCommand (12.3) of ACTOR with one operation, given as name=message, e.g.
    note=CaseNote(text=...) or accept=CaseAnswer(). An empty message (CaseAnswer, a
    CaseLeave without partner) is set all the same: the operation is the oneof's
    choice, present even with no fields."""
    if len(op) != 1:
        raise ValueError("a case command has exactly one operation")
    c = schema.CaseCommand(actor=actor)
    if on_behalf_of is not None:
        c.on_behalf_of = on_behalf_of
    if case_id is not None:
        c.case_id = case_id
    (name, value), = op.items()
    field = getattr(c, name)
    field.SetInParent()
    field.MergeFrom(value)
    return c


# --- connection -----------------------------------------------------------

PublishResult = collections.namedtuple("PublishResult",
                                       "message_id items signature frame answer")

_MONITORED = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH |
              zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL |
              zmq.EVENT_DISCONNECTED)


class SentAck:
    """An Ack whose refusal may still come, or one refused RATE_LIMITED and owed again
    (4.7): sent again as it was, the same bytes."""

    def __init__(self, request, first_seq, frame):
        self.request = request      # when it was (last) sent, among this client's requests
        self.first_seq = first_seq  # the seq a refusal of it names
        self.frame = frame
        self.refusals = 0           # RATE_LIMITED refusals so far
        self.resend_at = None       # None: on the wire; else owed again at this monotonic time


class Connection:
    """One DEALER connection of one principal to the broker."""

    def __init__(self, schema, endpoint, signing_key, broker_key, context=None):
        self.pb = schema
        self.signing_key = signing_key
        self._own_context = context is None
        self.ctx = context or zmq.Context()
        s = self.sock = self.ctx.socket(zmq.DEALER)       # never a ROUTING_ID (3.2)
        s.curve_serverkey = curve_public(broker_key)
        s.curve_publickey = curve_public(signing_key.verify_key)
        s.curve_secretkey = curve_secret(signing_key)
        for option, value in ((zmq.LINGER, 500), (zmq.SNDHWM, 10000), (zmq.RCVHWM, 10000),
                              (zmq.MAXMSGSIZE, MAX_FRAME_BYTES + CURVE_OVERHEAD),
                              (zmq.HANDSHAKE_IVL, 5000),
                              (zmq.HEARTBEAT_IVL, 2000), (zmq.HEARTBEAT_TIMEOUT, 6000),
                              (zmq.HEARTBEAT_TTL, 6000), (zmq.RECONNECT_IVL, 200),
                              (zmq.RECONNECT_IVL_MAX, 5000)):
            s.setsockopt(option, value)
        self.monitor = s.get_monitor_socket(_MONITORED)
        self.events = []            # (event, value) as the monitor reported them
        self.handshakes = 0
        self.connected = False      # a handshake succeeded and no DISCONNECTED came since
        self.window = None          # set once this client receives
        self.last_send = 0.0
        # Heartbeats sent on this connection and not yet answered, oldest first:
        # (order, named, sent_connected, request). A Heartbeat names itself by its order
        # (heartbeat_id, 8 bytes), never reused by this Connection, and an answer is
        # paired by the id it names (4.9): not by counting, which takes a keep-alive's
        # answer, or one that came over a lost connection (7.10), for the answer to a
        # later Heartbeat. One sent while there was no connection waits in the socket's
        # queue and goes out on the next one: it stays owed an answer there (4.9).
        self.heartbeats_sent = 0
        self.heartbeats_owed = []
        # The Heartbeat heartbeat() waits for, and whether it went out on a connection
        # lost since: its answer may be lost with it, so it is asked again (7.10).
        self.heartbeat_waited = None
        self.heartbeat_waited_lost = False
        # Requests (publishes, Heartbeats, Acks) are numbered in the order sent: an
        # answer to one shows that the broker took the Acks sent before it (answers
        # come in order), whose refusal would have come first (4.7).
        self.requests_sent = 0
        self.acks_kept = []         # SentAck, in the order sent (owed ones where refused)
        self.acks_resent = 0        # Acks sent again after a RATE_LIMITED refusal
        self.acks_given_up = []     # first seqs of Acks refused a fourth time
        self.heartbeat_ids_refused = False  # this connection's broker is from before the field
        self.last_settled = None    # the order of the Heartbeat the frame just read answers
        self.deliveries = collections.deque()   # Deliver frames kept while waiting
        self.ack_refusals = []      # Rejected{UNKNOWN_DELIVERY, seq}
        self.unmatched = []         # any other frame nobody waited for
        s.connect(endpoint)

    # -- lifecycle --

    def close(self, linger_ms=500):
        if self.sock is None:
            return
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)
        self.sock.close(linger_ms)
        self.sock = None
        if self._own_context:
            self.ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- monitor --

    def _poll_events(self):
        while self.monitor.poll(0):
            ev = zmq.utils.monitor.recv_monitor_message(self.monitor)
            self.events.append((ev["event"], ev["value"]))
            if ev["event"] == zmq.EVENT_DISCONNECTED:
                self.connected = False
            elif ev["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshakes += 1
                self.connected = True
                # Those that went out on a lost connection are owed nothing (an answer
                # may still be read, 7.10: it names a Heartbeat no longer owed one, and
                # is ignored); those sent while there was none go out on this one, and
                # are answered there (or refused, by a broker from before heartbeat_id,
                # whose refusal must not be taken for a later Heartbeat's).
                if any(order == self.heartbeat_waited and sent_connected
                       for order, _, sent_connected, _ in self.heartbeats_owed):
                    self.heartbeat_waited_lost = True
                self.heartbeats_owed[:] = [(order, named, True, request)
                                           for order, named, sent_connected, request
                                           in self.heartbeats_owed if not sent_connected]
                if self.handshakes > 1:
                    self.heartbeat_ids_refused = False  # the broker may be newer
                if self.window is not None and self.handshakes > 1:
                    # a new connection has no receiving state (7.4, 7.10)
                    self.send(flow=self.pb.Flow(window=self.window))
            elif ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                raise HandshakeRefused(ev["event"], ev["value"])

    def wait_handshake(self, timeout_s=5.0):
        """Wait for HANDSHAKE_SUCCEEDED; HandshakeRefused on a ZAP refusal."""
        deadline = time.monotonic() + timeout_s
        start = self.handshakes
        while self.handshakes == start:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoAnswer("no handshake within %.1f s (events %r)" % (timeout_s, self.events))
            self.monitor.poll(int(min(left, 0.2) * 1000) + 1)
            self._poll_events()

    def wait_event(self, wanted, timeout_s):
        """Wait for a monitor event of one of the types in WANTED (no raising)."""
        deadline = time.monotonic() + timeout_s
        seen = len(self.events)
        while True:
            while self.monitor.poll(0):
                ev = zmq.utils.monitor.recv_monitor_message(self.monitor)
                self.events.append((ev["event"], ev["value"]))
                if ev["event"] == zmq.EVENT_DISCONNECTED:
                    self.connected = False
            for event, value in self.events[seen:]:
                if event & wanted:
                    return event, value
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.monitor.poll(int(min(left, 0.2) * 1000) + 1)

    # -- frames --

    def frame(self, **body):
        return self.pb.Frame(version=PROTOCOL_VERSION, **body).SerializeToString()

    def send_bytes(self, data):
        """Send one ZMQ message (bytes) or a multipart message (list)."""
        if isinstance(data, (list, tuple)):
            self.sock.send_multipart(list(data))
        else:
            self.sock.send(data)
        self.last_send = time.monotonic()

    def send(self, **body):
        self.send_bytes(self.frame(**body))

    @staticmethod
    def heartbeat_id(order):
        """The heartbeat_id of this Connection's Heartbeat number ORDER (4.9)."""
        return order.to_bytes(8, "big")

    def send_heartbeat(self, ask_epoch=False):
        """Send a Heartbeat naming itself (4.9), with an empty store_epoch when ASK_EPOCH;
        without the id to a broker that refused it. Returns its order."""
        self._poll_events()     # sent knowing whether a connection is up
        hb = self.pb.Heartbeat(time=int(time.time() * 1000))
        if ask_epoch:
            hb.store_epoch = b""
        self.heartbeats_sent += 1
        order, named = self.heartbeats_sent, not self.heartbeat_ids_refused
        if named:
            hb.heartbeat_id = self.heartbeat_id(order)
        self.send(heartbeat=hb)
        self.requests_sent += 1
        self.heartbeats_owed.append((order, named, self.connected, self.requests_sent))
        return order

    def _settle_heartbeat(self, f):
        """The order of the Heartbeat owed an answer that frame F answers, or None (4.9):
        an answer naming a heartbeat_id answers that one, an answer naming none only the
        oldest, if it went without the id too; a Rejected naming nothing answers the
        oldest (refusals are paired by order, 4.5). Those before it were answered too."""
        owed = self.heartbeats_owed
        body = f.WhichOneof("body")
        index = None
        if body == "heartbeat" and f.heartbeat.HasField("principal"):
            if f.heartbeat.HasField("heartbeat_id"):
                index = next((i for i, (order, named, _, _) in enumerate(owed)
                              if named and self.heartbeat_id(order) == f.heartbeat.heartbeat_id),
                             None)
            elif owed and not owed[0][1]:
                index = 0
        elif self.is_anonymous_refusal(f) and owed:
            index = 0
        if index is None:
            return None
        order, request = owed[index][0], owed[index][3]
        del owed[:index + 1]
        self._acks_taken_before(request)
        return order

    def _keepalive(self):
        if self.window is not None and time.monotonic() - self.last_send >= CLIENT_HEARTBEAT_S:
            self.send_heartbeat()   # named too: its answer is not taken for a later one's

    # -- Acks refused RATE_LIMITED (4.7) --

    def _acks_taken_before(self, request):
        """An answer to request number REQUEST came: the Acks sent before it were taken
        (refused, their refusal came first), except those owed again."""
        self.acks_kept[:] = [a for a in self.acks_kept
                             if a.resend_at is not None or a.request >= request]

    def _ack_refused(self, first_seq):
        """A RATE_LIMITED refusal naming FIRST_SEQ: the oldest Ack on the wire that begins
        with it is owed again after a pause (1 s, 2 s, 4 s), or given up at the fourth."""
        ack = next((a for a in self.acks_kept
                    if a.resend_at is None and a.first_seq == first_seq), None)
        if ack is None:
            return
        self._acks_taken_before(ack.request)
        if ack.refusals >= ACK_RESENDS:
            self.acks_kept.remove(ack)
            self.acks_given_up.append(first_seq)
            return
        ack.resend_at = time.monotonic() + ACK_PAUSE_S * (1 << ack.refusals)
        ack.refusals += 1

    def acks_owed(self):
        """How many refused Acks wait to be sent again."""
        return sum(a.resend_at is not None for a in self.acks_kept)

    def _ack_next_due(self):
        due = [a.resend_at for a in self.acks_kept if a.resend_at is not None]
        return min(due) if due else None

    def _resend_acks(self):
        """Send again, unchanged, each refused Ack whose pause is over. Called from
        whatever waits on the broker, and from ack(): there is no loop of its own."""
        now = time.monotonic()
        for ack in self.acks_kept:
            if ack.resend_at is not None and ack.resend_at <= now:
                self.send_bytes(ack.frame)
                self.requests_sent += 1
                ack.request, ack.resend_at = self.requests_sent, None
                self.acks_resent += 1
        # an Ack sent again is on the wire again: kept in the order sent
        self.acks_kept.sort(key=lambda a: a.request)

    def recv_frame(self, timeout_s, until=None):
        """The next frame from the broker, or None after TIMEOUT_S (or once UNTIL() is
        true, checked between frames)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._poll_events()
            self._keepalive()
            self._resend_acks()
            if until is not None and until():
                return None
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                return None
            slice_s = min(left, 0.2)
            due = self._ack_next_due()
            if due is not None:
                slice_s = max(0.0, min(slice_s, due - now))
            if self.sock.poll(int(slice_s * 1000) + 1, zmq.POLLIN):
                parts = self.sock.recv_multipart()
                if len(parts) != 1:
                    raise ProtocolError("broker sent a %d-part message" % len(parts))
                f = self.pb.Frame()
                f.ParseFromString(parts[0])
                if not f.HasField("version") or f.version != PROTOCOL_VERSION:
                    raise ProtocolError("frame of protocol version %r" %
                                        (f.version if f.HasField("version") else None))
                self.last_settled = self._settle_heartbeat(f)
                if (f.WhichOneof("body") == "rejected" and f.rejected.HasField("seq")
                        and f.rejected.reason == self.pb.RATE_LIMITED):
                    self._ack_refused(f.rejected.seq)
                return f

    def wait_for(self, is_answer, timeout_s, until=None):
        """Read frames until IS_ANSWER(frame); keep deliveries and stray frames. With
        UNTIL, None once UNTIL() is true (checked between frames)."""
        deadline = time.monotonic() + timeout_s
        while True:
            f = self.recv_frame(max(0.0, deadline - time.monotonic()), until)
            if f is None:
                if until is not None and until():
                    return None
                raise NoAnswer("no answer within %.1f s" % timeout_s)
            if is_answer(f):
                return f
            body = f.WhichOneof("body")
            if body == "deliver":
                self.deliveries.append(f.deliver)
            elif body == "rejected" and f.rejected.HasField("seq"):
                self.ack_refusals.append(f.rejected)
            else:
                self.unmatched.append(f)

    @staticmethod
    def is_anonymous_refusal(f):
        """A Rejected that names neither a message_id nor a seq (4.5)."""
        return (f.WhichOneof("body") == "rejected" and not f.rejected.HasField("message_id")
                and not f.rejected.HasField("seq"))

    def request(self, data, timeout_s=5.0):
        """Send raw frame bytes and return the next answer that is not a Deliver or ack refusal."""
        self.send_bytes(data)
        return self.wait_for(lambda f: f.WhichOneof("body") in ("accepted", "heartbeat")
                             or (f.WhichOneof("body") == "rejected"
                                 and not f.rejected.HasField("seq")), timeout_s)

    # -- who am I / backlog (4.9, 7.1, 7.7) --

    def heartbeat(self, timeout_s=5.0, ask_epoch=False):
        """Send Heartbeat{time, heartbeat_id} (with an empty store_epoch when ask_epoch: it
        asks for the store epoch); return the broker's answer to it, paired by heartbeat_id
        (4.9; Refusal if refused). A broker from before the field refuses it
        INVALID_MESSAGE: it is asked again without the id, and that broker's answers are
        paired by order until the next connection. One that went out on a connection
        lost before its answer came is asked again on the next, under a new id (7.10):
        its answer may have been lost with it."""
        deadline = time.monotonic() + timeout_s
        while True:
            named = not self.heartbeat_ids_refused
            order = self.send_heartbeat(ask_epoch)
            self.heartbeat_waited, self.heartbeat_waited_lost = order, False
            try:
                f = self.wait_for(lambda f: self.last_settled == order,
                                  max(0.0, deadline - time.monotonic()),
                                  until=lambda: self.heartbeat_waited_lost)
            finally:
                self.heartbeat_waited = None
            if f is None:
                continue
            if f.WhichOneof("body") == "heartbeat":
                return f.heartbeat
            if named and f.rejected.reason == self.pb.INVALID_MESSAGE:
                self.heartbeat_ids_refused = True
                continue
            raise Refusal(f.rejected, self.pb)

    whoami = heartbeat

    def store_epoch(self, timeout_s=5.0):
        """The broker's store epoch (4.9): 16 bytes, new after every restore from a backup."""
        hb = self.heartbeat(timeout_s, ask_epoch=True)
        if not hb.HasField("store_epoch") or len(hb.store_epoch) != 16:
            raise ProtocolError("Heartbeat answer without a 16-byte store_epoch")
        return hb.store_epoch

    def store_epoch_floor(self, timeout_s=5.0):
        """The store epoch and its floor seq (4.9): (16 bytes, the highest item seq of the
        backup the store was restored from, 0 if never restored; None when unknown)."""
        hb = self.heartbeat(timeout_s, ask_epoch=True)
        if not hb.HasField("store_epoch") or len(hb.store_epoch) != 16:
            raise ProtocolError("Heartbeat answer without a 16-byte store_epoch")
        return hb.store_epoch, (hb.store_epoch_floor if hb.HasField("store_epoch_floor") else None)

    def backlog(self, timeout_s=5.0):
        hb = self.heartbeat(timeout_s)
        if not hb.HasField("backlog"):
            raise ProtocolError("Heartbeat answer without backlog")
        return hb.backlog

    def acks_settled(self, timeout_s=10.0):
        """Wait until no refused Ack is owed again (4.7): read frames, sending those due,
        then ask the backlog, whose answer comes after the refusal of any Ack sent before
        it. Returns that backlog. Refused Acks are sent again either way, by whichever
        call waits on the broker; this only waits for it."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.acks_owed():
                self.wait_for(lambda f: False, max(0.0, deadline - time.monotonic()),
                              until=lambda: self.acks_owed() == 0)
            backlog = self.backlog(max(0.0, deadline - time.monotonic()))
            if not self.acks_owed():
                return backlog

    # -- publishing (4.3, 6, 7.2, 7.3) --

    def publish_frame(self, message_id, items, signature):
        """Serialized Frame{publish}; absent arguments (None) are left unset."""
        p = self.pb.Publish()
        if message_id is not None:
            p.message_id = message_id
        p.items.extend(items)
        if signature is not None:
            p.signature = signature
        return self.frame(publish=p)

    def _publish_answer(self, message_id, timeout_s):
        def is_answer(f):
            body = f.WhichOneof("body")
            if body == "accepted":
                return f.accepted.message_id == message_id
            if body == "rejected":
                r = f.rejected
                if r.HasField("seq"):
                    return False
                return (not r.HasField("message_id")) or r.message_id == message_id
            return False
        return self.wait_for(is_answer, timeout_s)

    def _publish_sent(self, frame, message_id, timeout_s):
        self.send_bytes(frame)
        self.requests_sent += 1
        request = self.requests_sent
        answer = self._publish_answer(message_id, timeout_s)
        self._acks_taken_before(request)
        return answer

    def publish_items(self, items, message_id=None, signature=None, timeout_s=10.0):
        """Publish already serialized items. Sign them unless SIGNATURE is given."""
        if message_id is None:
            message_id = os.urandom(MESSAGE_ID_BYTES)
        if signature is None:
            signature = sign_publish(self.signing_key, message_id, items)
        frame = self.publish_frame(message_id, items, signature)
        answer = self._publish_sent(frame, message_id, timeout_s)
        return PublishResult(message_id, list(items), signature, frame, answer)

    def publish(self, signals, message_id=None, timeout_s=10.0):
        """Serialize, sign and publish Signal messages. Keep the result to retry."""
        items = [s.SerializeToString() for s in signals]
        return self.publish_items(items, message_id=message_id, timeout_s=timeout_s)

    def retry(self, result, timeout_s=10.0):
        """Send the exact same publish frame again (7.3)."""
        answer = self._publish_sent(result.frame, result.message_id, timeout_s)
        return result._replace(answer=answer)

    # -- receiving (4.6 - 4.8, 7.4 - 7.8) --

    def flow(self, window=DEFAULT_WINDOW):
        self.window = window
        self.send(flow=self.pb.Flow(window=window))

    def receive(self, timeout_s, window=DEFAULT_WINDOW):
        """The next Deliver (its body), or None after TIMEOUT_S."""
        if self.window is None:
            self.flow(window)
        if self.deliveries:
            return self.deliveries.popleft()
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            f = self.recv_frame(left)
            if f is None:
                return None
            body = f.WhichOneof("body")
            if body == "deliver":
                return f.deliver
            if body == "rejected" and f.rejected.HasField("seq"):
                self.ack_refusals.append(f.rejected)
            else:
                self.unmatched.append(f)

    def ack(self, *seqs):
        """Acknowledge SEQS, 1024 to an Ack. Each Ack is kept until it is known to be
        taken: one refused RATE_LIMITED is sent again after a pause (4.7)."""
        self._resend_acks()
        seqs = list(seqs)
        for i in range(0, len(seqs), MAX_ACKS):
            frame = self.frame(ack=self.pb.Ack(seqs=seqs[i:i + MAX_ACKS]))
            self.send_bytes(frame)
            self.requests_sent += 1
            if len(self.acks_kept) == ACKS_KEPT_MAX:
                self.acks_kept.pop(0)
            self.acks_kept.append(SentAck(self.requests_sent, seqs[i], frame))


    # -- cases (12) --

    def case_publish_frame(self, command_id, command, signature):
        """Serialized Frame{case_publish}; absent arguments (None) are left unset."""
        p = self.pb.CasePublish()
        if command_id is not None:
            p.command_id = command_id
        if command is not None:
            p.command = command
        if signature is not None:
            p.signature = signature
        return self.frame(case_publish=p)

    def case_publish(self, command, command_id=None, signature=None, timeout_s=10.0):
        """Sign and send one case command (a CaseCommand or its bytes), signed as a
        one-item publish whose message id is the command id (12.2). The answer names
        the command id as message_id; keep the result to retry."""
        data = command if isinstance(command, bytes) else command.SerializeToString()
        if command_id is None:
            command_id = os.urandom(MESSAGE_ID_BYTES)
        if signature is None:
            signature = sign_publish(self.signing_key, command_id, [data])
        frame = self.case_publish_frame(command_id, data, signature)
        answer = self._publish_sent(frame, command_id, timeout_s)
        return PublishResult(command_id, [data], signature, frame, answer)

    def case_event(self, deliver):
        """The CaseEvent of a Deliver that carries one (12.5), or None for a signal."""
        if not deliver.HasField("case_event"):
            return None
        ev = self.pb.CaseEvent()
        ev.ParseFromString(deliver.case_event)
        return ev

    def case_query(self, case_id=None, after_event_seq=None, after_case_id=None,
                   request_id=None, timeout_s=5.0):
        """Send a CaseQuery (12.6); return the answer frame: a CaseView naming its
        request_id, or a Rejected without message_id (refusals of queries are paired
        by order, 4.5). A view that fails the light checks is a ProtocolError."""
        q = self.pb.CaseQuery(request_id=request_id or int.from_bytes(os.urandom(6), "big") + 1)
        if case_id is not None:
            q.case_id = case_id
        if after_event_seq is not None:
            q.after_event_seq = after_event_seq
        if after_case_id is not None:
            q.after_case_id = after_case_id
        self.send(case_query=q)
        self.requests_sent += 1
        request = self.requests_sent

        def is_answer(f):
            body = f.WhichOneof("body")
            if body == "case_view":
                return f.case_view.request_id == q.request_id
            return body == "rejected" and self.is_anonymous_refusal(f)
        f = self.wait_for(is_answer, timeout_s)
        self._acks_taken_before(request)
        if f.WhichOneof("body") == "case_view":
            view = f.case_view
            for c in view.cases:
                if not CASE_ID_RE.fullmatch(c.case_id):
                    raise ProtocolError("CaseView summary with case id %r" % c.case_id)
            if case_id is not None and any(c.case_id != case_id for c in view.cases):
                raise ProtocolError("CaseView for %s shows another case" % case_id)
            for ev in view.events:
                if (not CASE_ID_RE.fullmatch(ev.case_id) or ev.event_seq < 1
                        or not ev.HasField("kind")):
                    raise ProtocolError("CaseView event fails the light checks of 4.1")
        return f

    def case_view(self, case_id=None, after_event_seq=None, after_case_id=None,
                  timeout_s=5.0):
        """One page of a case list or timeline (12.6); Refusal if refused."""
        f = self.case_query(case_id, after_event_seq, after_case_id, timeout_s=timeout_s)
        if f.WhichOneof("body") == "rejected":
            raise Refusal(f.rejected, self.pb)
        return f.case_view

    def case_pages(self, case_id=None, timeout_s=30.0):
        """Every page of a list (no CASE_ID) or of a timeline, asked for with
        after_case_id / after_event_seq until a page without more (12.6). A page
        that goes back, or says more with nothing in it, is a ProtocolError."""
        deadline = time.monotonic() + timeout_s
        pages, after_case, after_event = [], None, None
        while True:
            view = self.case_view(case_id, after_event, after_case,
                                  max(0.0, deadline - time.monotonic()))
            pages.append(view)
            if case_id is None:
                ids = [c.case_id for c in view.cases]
                if ids != sorted(set(ids)) or (ids and after_case and ids[0] <= after_case):
                    raise ProtocolError("a list page goes back")
                if view.more and not ids:
                    raise ProtocolError("a list page says more with no case in it")
                if ids:
                    after_case = ids[-1]
            else:
                seqs = [e.event_seq for e in view.events]
                if seqs != sorted(set(seqs)) or (seqs and after_event and seqs[0] <= after_event):
                    raise ProtocolError("a timeline page goes back")
                if view.more and not seqs:
                    raise ProtocolError("a timeline page says more with no event in it")
                if seqs:
                    after_event = seqs[-1]
            if not view.more:
                return pages

    # -- admin endpoint (11) --

    def admin(self, command, args=(), request_id=None, timeout_s=10.0):
        """One AdminRequest on a connection to the admin endpoint (11.2): returns
        (ok, error, document), the document parsed from the concatenated json chunks
        (None if there are none). Refusal when answered Rejected."""
        request_id = request_id or int.from_bytes(os.urandom(6), "big") + 1
        self.send(admin_request=self.pb.AdminRequest(request_id=request_id, command=command,
                                                     args=list(args)))
        deadline = time.monotonic() + timeout_s
        chunks, size, first = [], 0, None
        while True:
            f = self.wait_for(lambda f: f.WhichOneof("body") in ("admin_response", "rejected"),
                              max(0.0, deadline - time.monotonic()))
            if f.WhichOneof("body") == "rejected":
                raise Refusal(f.rejected, self.pb)
            a = f.admin_response
            if a.request_id != request_id:
                continue
            if first is None:
                first = a
            if a.HasField("json"):
                size += len(a.json.encode("utf-8"))
                if size > ADMIN_MAX_RESPONSE_BYTES:
                    raise ProtocolError("admin answer over %d bytes" % ADMIN_MAX_RESPONSE_BYTES)
                chunks.append(a.json)
            if not a.more:
                break
        doc = json.loads("".join(chunks)) if chunks else None
        return first.ok, (first.error if first.HasField("error") else None), doc


def connect(schema, endpoint, key_file, broker_pub_file, context=None):
    """Open a connection with the key files of section 2.2."""
    return Connection(schema, endpoint, load_signing_key(key_file),
                      load_verify_key(broker_pub_file), context)

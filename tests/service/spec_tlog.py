"""Transparency-log pieces written from the C2SP specs and RFC 6962 alone, to test `custody` against.

Nothing here imports `ledger`: an independent reading of c2sp.org/signed-note, tlog-checkpoint,
tlog-cosignature (Ed25519) and tlog-witness, with RFC 6962 §2.1 hashing and consistency proofs written
as the RFC's recursive definitions. `SpecLog` is a log operator; `spec_push` a tlog-witness client;
`SpecWitness` a tlog-witness server (stdlib `http.server`, in a thread).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

DASH = "\u2014 "  # signed-note: a signature line starts with U+2014 and a space


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle Tree Hash of a list of entries (not leaf hashes)."""
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return sha256(b"\x00" + leaves[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def proof(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.2 PROOF(m, D[n]) = SUBPROOF(m, D[n], true)."""

    def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if b else [mth(d)]
        k = 1 << ((n - 1).bit_length() - 1)
        if m <= k:
            return [*subproof(m, d[:k], b), mth(d[k:])]
        return [*subproof(m - k, d[k:], False), mth(d[:k])]

    return subproof(m, leaves, True)


def key_id(name: str, sig_type: int, public: bytes) -> bytes:
    """signed-note / tlog-cosignature: SHA-256(name || 0x0A || type || key)[:4]."""
    return sha256(name.encode() + b"\n" + bytes([sig_type]) + public)[:4]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class SpecLog:
    """A log operator: entries, and checkpoints signed as plain Ed25519 notes under the origin's name."""

    origin: str
    key: SigningKey = field(default_factory=SigningKey.generate)
    entries: list[bytes] = field(default_factory=list)

    @property
    def public(self) -> bytes:
        return bytes(self.key.verify_key)

    def append(self, count: int) -> None:
        for _ in range(count):
            self.entries.append(f"entry {len(self.entries)} of {self.origin}".encode())

    def body(self, size: int | None = None, root: bytes | None = None) -> str:
        size = len(self.entries) if size is None else size
        root = mth(self.entries[:size]) if root is None else root
        return f"{self.origin}\n{size}\n{b64(root)}\n"

    def note(self, size: int | None = None, root: bytes | None = None, key: SigningKey | None = None) -> str:
        body = self.body(size, root)
        signer = key or self.key
        sig = signer.sign(body.encode()).signature
        line = f"{DASH}{self.origin} {b64(key_id(self.origin, 1, bytes(signer.verify_key)) + sig)}\n"
        return f"{body}\n{line}"

    def proof(self, old: int, new: int) -> list[bytes]:
        return proof(old, self.entries[:new]) if 0 < old < new else []


def add_checkpoint_body(old: int, hashes: list[bytes], note: str) -> bytes:
    return (f"old {old}\n" + "".join(b64(h) + "\n" for h in hashes) + "\n" + note).encode()


def check_cosignature(line: str, witness: str, public: bytes, body: str) -> int:
    """Check one tlog-cosignature/v1 (Ed25519) line over a checkpoint `body`; return its timestamp."""
    assert line.startswith(DASH) and line.endswith("\n"), line
    name, _, encoded = line[len(DASH):-1].partition(" ")
    assert name == witness, name
    raw = base64.b64decode(encoded, validate=True)
    assert b64(raw) == encoded
    assert len(raw) == 4 + 8 + 64, len(raw)
    assert raw[:4] == key_id(witness, 4, public)
    timestamp = int.from_bytes(raw[4:12], "big")
    assert timestamp < 2**63
    message = f"cosignature/v1\ntime {timestamp}\n{body}".encode()
    VerifyKey(public).verify(message, raw[12:])  # raises BadSignatureError
    return timestamp


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes


def spec_push(url: str, body: bytes) -> Answer:
    """POST <url>/add-checkpoint with the stdlib's HTTP client."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("POST", parts.path.rstrip("/") + "/add-checkpoint", body=body)
        response = conn.getresponse()
        return Answer(response.status, response.getheader("Content-Type") or "", response.read())
    finally:
        conn.close()


# --- a witness server -------------------------------------------------------------------------------


class SpecWitness:
    """A tlog-witness for the given logs ({origin: Ed25519 key}), keeping its latest (size, root) per log.

    `requests` records each request's old size and proof length, for tests to look at.
    """

    def __init__(self, name: str, logs: dict[str, bytes]) -> None:
        self.name = name
        self.key = SigningKey.generate()
        self.logs = logs
        self.state: dict[str, tuple[int, bytes]] = {}
        self.requests: list[tuple[int, int, int]] = []  # (old, proof lines, checkpoint size)
        self.lock = threading.Lock()
        self.extra_lines = ""  # lines added before the cosignature in each answer (other keys)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def public(self) -> bytes:
        return bytes(self.key.verify_key)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> SpecWitness:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, body: bytes) -> tuple[int, str, bytes]:
        text = body.decode()
        m = re.match(r"old (0|[1-9][0-9]*)\n", text)
        if not m:
            return 400, "text/plain", b"bad old line\n"
        old, rest = int(m.group(1)), text[m.end():]
        hashes = []
        while not rest.startswith("\n"):
            line, _, rest = rest.partition("\n")
            hashes.append(base64.b64decode(line))
        note = rest[1:]
        body_text, _, sigs = note.partition("\n\n")
        origin, size_text, root_text = body_text.split("\n")
        size, root = int(size_text), base64.b64decode(root_text)
        self.requests.append((old, len(hashes), size))
        if origin not in self.logs:
            return 404, "text/plain", b"unknown log\n"
        kid = key_id(origin, 1, self.logs[origin])
        ok = False
        for line in sigs.splitlines():
            name, _, encoded = line[len(DASH):].partition(" ")
            raw = base64.b64decode(encoded)
            if name == origin and raw[:4] == kid:
                try:
                    VerifyKey(self.logs[origin]).verify((body_text + "\n").encode(), raw[4:])
                    ok = True
                except BadSignatureError:
                    pass
        if not ok:
            return 403, "text/plain", b"no valid log signature\n"
        if old > size:
            return 400, "text/plain", b"old size beyond the checkpoint\n"
        with self.lock:
            latest_size, latest_root = self.state.get(origin, (0, sha256(b"")))
            if old != latest_size:
                return 409, "text/x.tlog.size", f"{latest_size}\n".encode()
            if old == 0:
                good = not hashes
            elif old == size:
                good = not hashes and root == latest_root
            else:
                good = _verify_consistency(old, size, hashes, latest_root, root)
            if not good:
                return 422, "text/plain", b"inconsistent\n"
            self.state[origin] = (size, root)
        timestamp = int(time.time())
        message = f"cosignature/v1\ntime {timestamp}\n{body_text}\n".encode()
        sig = self.key.sign(message).signature
        line = f"{DASH}{self.name} {b64(key_id(self.name, 4, self.public) + timestamp.to_bytes(8, 'big') + sig)}\n"
        return 200, "text/plain; charset=utf-8", (self.extra_lines + line).encode()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        witness = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != "/add-checkpoint":
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, ctype, content = witness.answer(body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def _verify_consistency(m: int, n: int, hashes: list[bytes], root1: bytes, root2: bytes) -> bool:
    """RFC 9162 §2.1.4.2, as written there."""
    if not hashes:
        return False
    path = list(hashes)
    if m & (m - 1) == 0:
        path.insert(0, root1)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = sha256(b"\x01" + c + fr)
            sr = sha256(b"\x01" + c + sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = sha256(b"\x01" + sr + c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root1 and sr == root2

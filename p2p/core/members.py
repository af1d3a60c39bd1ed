"""Members only: the network secret and the network certificate.

A network is open by default. Two things, each optional, close it to strangers:

**The network secret** (``--secret-file FILE`` or ``P2P_SECRET``). Every
request to the load balancer and to a peer's file server carries::

    X-P2P-Auth: p2p-hmac-v2 ts=<unix seconds> nonce=<32 hex> body=<64 hex> mac=<64 hex>

where ``body`` is the SHA-256 of the request's body (of nothing, without one)
and ``mac`` is HMAC-SHA256, keyed with a key derived from the secret, over
``METHOD\\nTARGET\\nAUTHORITY\\nbody\\nts\\nnonce`` (TARGET is the request-target
exactly as sent, query included; AUTHORITY the ``Host`` header, the server's
``host:port`` as the client addressed it). The secret never crosses the wire. A
server refuses with 401 a request without the header, with a wrong ``mac``, with
a ``Host`` that does not name it (``names_this_server``: a request captured and
replayed to another server), with a body whose SHA-256 is not ``body``, with a
``ts`` more than ``MAX_CLOCK_SKEW_S`` from its own clock, or with a nonce it has
already seen in that window (a captured request replayed later).

A server proves that it holds the secret too: its answer to a signed request
carries ``X-P2P-Proof: <64 hex>``, HMAC-SHA256 with a fourth derived key over
``nonce\\nSTATUS\\nSHA-256 of the answer's body``. A member refuses a load
balancer whose answers lack a good proof (``answer_ok``): an open load balancer,
or another network's, never gets a member's files or registrations.

A presigned URL lets curl, wget or a browser, which cannot sign, fetch one
file from a holder until it expires (like a presigned S3 URL)::

    /files/NAME?p2p-expires=<unix seconds>&p2p-sig=<64 hex>

``p2p-sig`` is HMAC-SHA256, keyed with another derived key, over
``NAME\\nexpires`` (NAME decoded, as the file server sees it). It is good for
``GET`` and ``HEAD`` of that one name, with any ``Range``, as often as needed
until ``expires``.

Discovery datagrams can be signed with a third derived key (``sign_datagram``).

**The network certificate** (``--tls-cert FILE --tls-key FILE [--tls-ca
FILE]``). All traffic, to the load balancer and between peers, goes over TLS
1.2 or newer, and both ends present a certificate (mutual TLS). Without
``--tls-ca`` the certificate is its own and only authority: one certificate
and key shared by the members is both the membership and the encryption. With
``--tls-ca`` any certificate that CA signed is a member (a real PKI). Peers
are addressed by IP address and change ports, so host names are not checked:
holding a member's certificate and key is what makes a member.

``NetworkSecret`` (signing and checking, no I/O, an injectable clock),
``ReplayGuard`` and ``NetworkTLS`` (SSL contexts) are the parts; ``Members``
bundles what one process uses. ``Unauthorized`` is the one error a server
turns into a 401.
"""

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import ssl
import threading
import time
from dataclasses import dataclass

from p2p.core.wire import parse_address

AUTH_HEADER = "X-P2P-Auth"
AUTH_SCHEME = "p2p-hmac-v2"
PROOF_HEADER = "X-P2P-Proof"
MAX_CLOCK_SKEW_S = 30  # a signed request's timestamp may be this far from the server's clock
MAX_REMEMBERED_NONCES = 1_000_000  # about 80 MB at most; beyond it, requests wait (503)
NONCE_BYTES = 16
SECRET_BYTES = 32  # what `peer.py secret` makes: 256 random bits
MIN_SECRET_CHARS = 16
MAX_SECRET_CHARS = 4096
MAX_AUTH_HEADER_CHARS = 256
DEFAULT_URL_LIFETIME_S = 3600
MAX_URL_LIFETIME_S = 7 * 24 * 3600  # a presigned URL lives at most a week, as S3's do
URL_EXPIRES_PARAM = "p2p-expires"
URL_SIG_PARAM = "p2p-sig"
SECRET_ENV = "P2P_SECRET"
AUTH_RE = re.compile(
    r"p2p-hmac-v2 ts=([0-9]{1,12}) nonce=([0-9a-f]{32}) body=([0-9a-f]{64}) mac=([0-9a-f]{64})")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
HEX64_RE = re.compile(r"[0-9a-f]{64}")
DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)")
DURATION_UNITS_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
NETWORK_CERT_NAME = "p2p-network"  # the host name in the README's network certificate (for curl)
SECRET_HINT = "make one with: python peer.py secret > network.secret"


class SecretError(ValueError):
    """A secret that cannot be used (missing file, too short); the message says why."""


class TLSSetupError(ValueError):
    """Certificate or key files that cannot be used; the message says why."""


class Unauthorized(Exception):
    """A request that does not prove it knows the network secret; answered 401."""


@dataclass(frozen=True)
class Signed:
    """What a checked request was signed with: its nonce (the server's proof answers it)
    and the SHA-256 of its body (checked once the body is read)."""
    nonce: str
    body_sha256: str


class ReplayFull(Exception):
    """More signed requests in the clock window than the replay guard can remember."""


# ---------------------------------------------------------------------------
# The secret


def new_secret():
    """A fresh network secret: 256 random bits, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def read_secret(path=None, environ=os.environ):
    """The secret from ``path`` (first) or ``$P2P_SECRET``, as bytes; None when neither is set."""
    if path:
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_SECRET_CHARS + 1)
        except OSError as e:
            raise SecretError(f"Cannot read the secret file {path}: {e.strerror}.") from None
        where = path
    elif environ.get(SECRET_ENV):
        raw, where = environ[SECRET_ENV].encode("utf-8", "surrogateescape"), SECRET_ENV
    else:
        return None
    secret = raw.strip()
    if len(raw) > MAX_SECRET_CHARS:
        raise SecretError(f"The secret in {where} is longer than {MAX_SECRET_CHARS} "
                          "characters; is it the right file?")
    if len(secret) < MIN_SECRET_CHARS:
        raise SecretError(f"The secret in {where} is shorter than {MIN_SECRET_CHARS} "
                          f"characters; {SECRET_HINT}")
    return secret


def parse_duration(text):
    """``90``, ``30s``, ``10m``, ``2h``, ``1d`` -> seconds (int), or ValueError with a sentence."""
    match = DURATION_RE.fullmatch(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 10m, 2h or 1d.")
    seconds = int(float(match.group(1)) * DURATION_UNITS_S[match.group(2)])
    if seconds <= 0:
        raise ValueError("The duration must be more than zero.")
    return seconds


class ReplayGuard:
    """The nonces seen within the clock window, forgotten second by second as they age out."""

    def __init__(self, window_s=2 * MAX_CLOCK_SKEW_S, capacity=MAX_REMEMBERED_NONCES):
        self.window_s, self.capacity = window_s, capacity
        self._by_second = {}  # the request's timestamp -> set of its nonces
        self._count = 0
        self._lock = threading.Lock()

    def first_time(self, ts, nonce, now):
        """True the first time (ts, nonce) is seen; False for a replay. ReplayFull when full."""
        with self._lock:
            if self._by_second and min(self._by_second) < now - self.window_s:
                for second in [s for s in self._by_second if s < now - self.window_s]:
                    self._count -= len(self._by_second.pop(second))
            seen = self._by_second.setdefault(ts, set())
            if nonce in seen:
                return False
            if self._count >= self.capacity:
                raise ReplayFull()
            seen.add(nonce)
            self._count += 1
            return True

    def __len__(self):
        return self._count


class NetworkSecret:
    """Signs requests, URLs and datagrams with the network secret, and checks them."""

    def __init__(self, secret, clock=time.time):
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        self._request_key = self._derive(secret, b"request")
        self._url_key = self._derive(secret, b"url")
        self._datagram_key = self._derive(secret, b"datagram")
        self._answer_key = self._derive(secret, b"answer")
        self.clock = clock
        self.replays = ReplayGuard()

    @staticmethod
    def _derive(secret, purpose):
        return hmac.new(secret, b"p2p-v1 " + purpose, hashlib.sha256).digest()

    # -- requests ----------------------------------------------------------

    def _request_mac(self, method, target, authority, body_sha256, ts, nonce):
        message = (f"{method}\n{target}\n{authority}\n{body_sha256}\n{ts}\n{nonce}"
                   .encode("utf-8", "surrogateescape"))
        return hmac.new(self._request_key, message, hashlib.sha256).hexdigest()

    def sign(self, method, target, authority, body=b""):
        """The ``X-P2P-Auth`` value for one request to ``authority`` (the Host header: the
        server's host:port as addressed) with ``body`` (a new nonce every time)."""
        ts, nonce = int(self.clock()), secrets.token_hex(NONCE_BYTES)
        digest = hashlib.sha256(body).hexdigest()
        mac = self._request_mac(method, target, authority, digest, ts, nonce)
        return f"{AUTH_SCHEME} ts={ts} nonce={nonce} body={digest} mac={mac}"

    def check(self, method, target, value, authority, is_here=lambda authority: True):
        """A ``Signed`` if ``value`` signs this request, to ``authority`` (the Host header
        received), now, for the first time; else Unauthorized. ``is_here(authority)`` says
        whether the authority names this server. The body is checked once read."""
        if not value:
            raise Unauthorized("This network needs its secret, and the request was not "
                               f"signed ({AUTH_HEADER} is missing): wrong or missing network "
                               "secret.")
        value = value.strip()[:MAX_AUTH_HEADER_CHARS]
        match = AUTH_RE.fullmatch(value)
        if not match:
            older = value.startswith("p2p-hmac-v1 ")
            raise Unauthorized("The request was signed by an older peer.py: give every member "
                               "the same version." if older
                               else f"The {AUTH_HEADER} header is malformed.")
        ts, nonce, digest, mac = int(match.group(1)), *match.group(2, 3, 4)
        if not hmac.compare_digest(mac, self._request_mac(method, target, authority, digest,
                                                          ts, nonce)):
            raise Unauthorized("The request was signed with another secret: wrong or missing "
                               "network secret.")
        if not is_here(authority):
            raise Unauthorized(f"The request was signed for {authority[:100]!r}, not for this "
                               "server (a signed request captured and sent elsewhere).")
        now = self.clock()
        if abs(now - ts) > MAX_CLOCK_SKEW_S:
            raise Unauthorized(f"The request was signed {now - ts:+.0f} s from this server's "
                               f"clock (at most {MAX_CLOCK_SKEW_S} s is allowed): set both "
                               "clocks right (NTP).")
        if not self.replays.first_time(ts, nonce, int(now)):
            raise Unauthorized("This signed request was already used (a replay).")
        return Signed(nonce, digest)

    @staticmethod
    def check_body(signed, body):
        """Return if ``body`` is the one ``signed`` (a ``Signed``) was signed with; else
        Unauthorized."""
        if not hmac.compare_digest(hashlib.sha256(body).hexdigest(), signed.body_sha256):
            raise Unauthorized("The request's body is not the one that was signed (changed "
                               "on the way?).")

    # -- answers -------------------------------------------------------------

    def prove(self, nonce, status, body):
        """The ``X-P2P-Proof`` of an answer (``status``, ``body``) to the request of ``nonce``."""
        message = f"{nonce}\n{status}\n{hashlib.sha256(body).hexdigest()}".encode("ascii")
        return hmac.new(self._answer_key, message, hashlib.sha256).hexdigest()

    def answer_ok(self, sent, status, body, proof):
        """True if ``proof`` proves that the answer (``status``, ``body``) to the request we
        signed with ``sent`` (our ``X-P2P-Auth`` value) comes from a holder of the secret."""
        match = AUTH_RE.fullmatch(sent)
        if not match or not proof or not HEX64_RE.fullmatch(proof):
            return False
        return hmac.compare_digest(proof, self.prove(match.group(2), status, body))

    # -- presigned URLs -----------------------------------------------------

    def _url_sig(self, name, expires):
        message = f"{name}\n{expires}".encode("utf-8", "surrogateescape")
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()

    def url_query(self, name, lifetime_s=DEFAULT_URL_LIFETIME_S):
        """The query string that presigns ``/files/NAME`` for ``lifetime_s`` seconds."""
        if not 0 < lifetime_s <= MAX_URL_LIFETIME_S:
            raise ValueError(f"A signed URL lives at most {MAX_URL_LIFETIME_S // 86400} days.")
        expires = int(self.clock()) + int(lifetime_s)
        return f"{URL_EXPIRES_PARAM}={expires}&{URL_SIG_PARAM}={self._url_sig(name, expires)}"

    def check_url(self, method, name, query):
        """Return if ``query`` (parse_qs form) presigns ``name`` now; else Unauthorized."""
        if method not in ("GET", "HEAD"):
            raise Unauthorized("A signed URL is good for GET and HEAD only.")
        expires, sig = query.get(URL_EXPIRES_PARAM, [""])[0], query.get(URL_SIG_PARAM, [""])[0]
        if not re.fullmatch(r"[0-9]{1,12}", expires) or not HEX64_RE.fullmatch(sig):
            raise Unauthorized("This network needs its secret: sign the request, or use a URL "
                               "from 'python peer.py url NAME'.")
        if not hmac.compare_digest(sig, self._url_sig(name, int(expires))):
            raise Unauthorized("The URL's signature does not match (another network's secret, "
                               "or the URL was changed).")
        if int(expires) < self.clock():
            raise Unauthorized("The signed URL has expired; make a new one with "
                               "'python peer.py url NAME'.")

    # -- datagrams ----------------------------------------------------------

    def sign_datagram(self, payload):
        """HMAC-SHA256 of a datagram's payload, as 64 hex digits."""
        return hmac.new(self._datagram_key, payload, hashlib.sha256).hexdigest()

    def datagram_ok(self, payload, sig):
        return hmac.compare_digest(sig, self.sign_datagram(payload))


# ---------------------------------------------------------------------------
# TLS


class NetworkTLS:
    """The SSL contexts of one member: its certificate and key, and whom it accepts."""

    def __init__(self, cert, key, ca=None):
        self.cert, self.key, self.ca = cert, key, ca
        self.server = self._context(ssl.PROTOCOL_TLS_SERVER)
        self.client = self._context(ssl.PROTOCOL_TLS_CLIENT)

    def _context(self, protocol):
        context = ssl.SSLContext(protocol)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False  # members are known by certificate, not by name
        context.verify_mode = ssl.CERT_REQUIRED
        for path, what in ((self.cert, "--tls-cert"), (self.key, "--tls-key"),
                           (self.ca, "--tls-ca")):
            if path is not None and not os.path.isfile(path):
                raise TLSSetupError(f"{what} {path}: there is no such file.")
        try:
            context.load_cert_chain(self.cert, self.key)
        except ssl.SSLError as e:
            raise TLSSetupError(f"--tls-cert {self.cert} and --tls-key {self.key} cannot be "
                                f"used together ({e.reason or e}): is the key the "
                                "certificate's?") from None
        except OSError as e:
            raise TLSSetupError(f"Cannot read the certificate or key: {e.strerror}.") from None
        try:
            context.load_verify_locations(cafile=self.ca or self.cert)
        except ssl.SSLError as e:
            raise TLSSetupError(f"{self.ca or self.cert} holds no usable certificate "
                                f"({e.reason or e}).") from None
        return context


def _ip(host):
    """``host`` as an IP address (an IPv4-mapped IPv6 one as IPv4), or None for a name."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    return getattr(address, "ipv4_mapped", None) or address


def names_this_server(authority, local_ip, port, known_hosts=()):
    """True if ``authority`` (a request's Host header) names this server: the ``port`` it
    listens on, and the address the connection came in on (``local_ip``), ``localhost``
    on loopback, or one of ``known_hosts`` (the addresses others are told, --advertise)."""
    try:
        host, asked_port = parse_address(authority or "")
    except ValueError:
        return False
    if asked_port != port:
        return False
    here, asked = _ip(local_ip), _ip(host)
    if asked is not None and asked == here:
        return True
    if host.lower() == "localhost" and here is not None and here.is_loopback:
        return True
    return any(host == known or (asked is not None and asked == _ip(known))
               for known in known_hosts if known)


def describe_tls_error(error):
    """A few words for a person about a failed TLS connection."""
    reason = (getattr(error, "reason", None) or "").upper()
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER_FAILURE" in reason \
            or "PACKET_LENGTH_TOO_LONG" in reason or "HTTP_REQUEST" in reason:
        return "it does not speak TLS: start every member with the same --tls-cert"
    if "EOF" in reason:
        return ("the other side closed the TLS handshake: it does not speak TLS, or does not "
                "accept this network's certificate")
    if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason or "BAD_CERT" in reason \
            or "HANDSHAKE" in reason or "DECRYPT" in reason:
        return ("the TLS handshake failed: the two sides do not have the same network "
                "certificate")
    return f"TLS failed ({reason.lower() or error.__class__.__name__})"


# ---------------------------------------------------------------------------
# What one process uses


class Members:
    """The secret and the certificate of the network a process belongs to (either may be None)."""

    def __init__(self, secret=None, tls=None):
        self.secret = secret
        self.tls = tls

    @property
    def scheme(self):
        return "https" if self.tls else "http"

    def auth_headers(self, method, target, authority, body=b""):
        """The headers of a request to ``authority`` (host:port as addressed): its ``Host``,
        and on a network with a secret the signature (over the body too)."""
        if self.secret is None:
            return {"Host": authority}
        return {"Host": authority, AUTH_HEADER: self.secret.sign(method, target, authority, body)}

    def connect(self, sock):
        """``sock``, connected, wrapped in TLS when the network uses it (handshake done)."""
        if self.tls is None:
            return sock
        return self.tls.client.wrap_socket(sock)

    def describe(self):
        """How this network is closed, in a few words for a banner."""
        parts = []
        if self.secret:
            parts.append("network secret")
        if self.tls:
            parts.append("TLS with " + ("the CA's certificates" if self.tls.ca
                                         else "the network certificate"))
        return " + ".join(parts) or "open to anyone who can reach it"

    @classmethod
    def from_options(cls, secret_file=None, tls_cert=None, tls_key=None, tls_ca=None,
                     environ=os.environ):
        """Build from command-line options; SecretError or TLSSetupError when unusable."""
        raw = read_secret(secret_file, environ)
        if (tls_cert is None) != (tls_key is None):
            raise TLSSetupError("--tls-cert and --tls-key go together: give both.")
        if tls_ca is not None and tls_cert is None:
            raise TLSSetupError("--tls-ca needs --tls-cert and --tls-key too.")
        tls = NetworkTLS(tls_cert, tls_key, tls_ca) if tls_cert else None
        return cls(NetworkSecret(raw) if raw is not None else None, tls)

    def options(self, secret_file=None):
        """The command-line options that give a child process (the load balancer) the same."""
        words = ["--secret-file", os.path.abspath(secret_file)] if secret_file else []
        if self.tls:
            words += ["--tls-cert", os.path.abspath(self.tls.cert),
                      "--tls-key", os.path.abspath(self.tls.key)]
            if self.tls.ca:
                words += ["--tls-ca", os.path.abspath(self.tls.ca)]
        return words


OPEN = Members()

"""The peer's client of the load balancer: typed answers and named errors.

``LBClient`` keeps one keep-alive connection to one load balancer (thread-safe,
one request at a time; TLS and the network secret as ``members`` says) and
turns its JSON into values:

* ``pick`` asks for up to ``count`` holders of a file (``POST /transfers``) and
  returns a ``Pick``: the ``FileRecord``, one ``Lease`` per holder (a transfer
  the load balancer counts against that holder until ``end`` or expiry), how
  often to ``renew`` them, the piece-list hash the holders agree on, and the
  other versions of the name;
* ``register``, ``heartbeat`` and ``unregister`` keep the peer on the network;
  ``files`` and ``status`` are the listings, as the load balancer sends them.

Every refusal is an ``LBClientError`` (``message``, a sentence for a person,
and ``status``, the HTTP code or None), one subclass per case the caller acts
on: ``Unreachable`` (nothing, or nothing that is a load balancer, answers),
``NotAdmitted`` (wrong or missing network secret; ``tls_required`` when it
speaks TLS and we do not), ``NotKnown`` (nobody shares that file; or the load
balancer forgot this peer), ``Ambiguous`` (several versions of the name and
none leads; ``versions`` lists them), ``AllBusy`` (every holder's upload slots
are taken; ``busy`` holders, ask again in ``retry_after`` seconds) and
``NoHolderLeft`` (every holder is excluded). The downloader also uses
``connect_http`` and ``describe_socket_error`` for its own connections.
"""

import contextlib
import http.client
import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from urllib.parse import quote

from p2p.core.errors import Problem
from p2p.core.members import AUTH_HEADER, OPEN, PROOF_HEADER, describe_tls_error
from p2p.core.wire import FileRecord, format_address
from p2p.http.server import set_nodelay

CLIENT_TIMEOUT_S = 10.0
DEFAULT_RETRY_AFTER_S = 1.0  # when a busy answer does not say how long to wait
PEER_SERVER_PREFIX = "p2p-peer/"  # what a peer's replies say they come from
PEER_LB_HEADER = "X-P2P-Load-Balancer"  # on a peer's replies: the load balancer it uses
PROBE_PATH = "/files?q=p2p-membership-probe"  # a question that tells a load balancer nothing
SECRET_FIX = "Give every member the same --secret-file (or P2P_SECRET)."
TLS_FIX = "Give every member the same --tls-cert and --tls-key."


# ---------------------------------------------------------------------------
# Errors


class LBClientError(Problem):
    """The load balancer said no; ``message`` is its sentence, ``status`` its code."""


class Unreachable(LBClientError):
    """Nothing (or nothing sane) answers at the load balancer's address."""


class NotAdmitted(LBClientError):
    """The load balancer refuses us as we are: wrong or missing network secret (401), or
    it speaks TLS and we do not (``tls_required``)."""

    def __init__(self, message, status=401, tls_required=False):
        super().__init__(message, status)
        self.tls_required = tls_required


class NotAMember(LBClientError):
    """A member asked a load balancer that cannot prove it holds the network secret (an
    open load balancer, or another network's): refused, whatever it answered."""


class NotKnown(LBClientError):
    """Nobody shares that file (or that version, or at that address); or the load balancer
    does not know this peer (it restarted: register again)."""


class Ambiguous(LBClientError):
    """Several files are shared under that name and none leads: choose one by its SHA-256.
    ``versions``: [{name, size, sha256, holders}]."""

    def __init__(self, message, status=409, versions=()):
        super().__init__(message, status)
        self.versions = list(versions)


class AllBusy(LBClientError):
    """Every holder left has all its upload slots taken: not a failure, ask again after
    ``retry_after`` seconds. ``busy``: how many holders are busy."""

    def __init__(self, message, status=503, busy=0, retry_after=DEFAULT_RETRY_AFTER_S,
                 downloading=0):
        super().__init__(message, status)
        self.busy = busy
        self.retry_after = retry_after
        self.downloading = downloading  # other peers downloading the file now


class NoHolderLeft(LBClientError):
    """Every holder of the file has been excluded (tried and failed). ``downloading``:
    other peers downloading the file now."""

    def __init__(self, message, status=503, downloading=0):
        super().__init__(message, status)
        self.downloading = downloading


# ---------------------------------------------------------------------------
# Answers


@dataclass
class Lease:
    """One transfer handed out: the holder to fetch from, and how to renew or end it."""
    transfer_id: str
    secret: str
    peer_id: str
    host: str
    port: int
    name: str = ""  # what the holder calls itself
    done: int | None = None  # None from a full holder; bytes verified from a partial one
    via: object = field(default=None, repr=False, compare=False)  # the LBClient that gave it

    @property
    def address(self):
        return format_address(self.host, self.port)

    @classmethod
    def parse(cls, source):
        peer = source["peer"]
        done = source.get("done")
        if not isinstance(peer["port"], int) or not (done is None or isinstance(done, int)):
            raise ValueError("a source's port and done must be integers")
        return cls(str(source["transfer_id"]), str(source.get("secret", "")), str(peer["id"]),
                   str(peer["host"]), peer["port"], str(peer.get("name") or ""), done)


@dataclass
class Pick:
    """What one ``POST /transfers`` handed out: the file and a lease per holder."""
    file: FileRecord
    leases: list
    renew_s: float
    pieces: str | None = None  # the piece-list hash most holders announced
    versions: list = field(default_factory=list)  # the other versions of the name
    downloading: int = 0  # other peers downloading the file now

    @classmethod
    def parse(cls, answer):
        sources = answer.get("sources") or [answer]
        leases = [Lease.parse(source) for source in sources]
        renew_s = answer["renew_s"]
        if not isinstance(renew_s, (int, float)) or renew_s <= 0:
            raise ValueError("renew_s must be a positive number of seconds")
        downloading = answer.get("downloading", 0)
        if not isinstance(downloading, int):
            raise ValueError("downloading must be a number of peers")
        return cls(FileRecord.parse(answer["file"]), leases, float(renew_s),
                   answer.get("pieces"), list(answer.get("versions") or []), downloading)


# ---------------------------------------------------------------------------
# Plumbing shared with the downloader


def not_a_load_balancer(address, server, told=None):
    """What to say when ``address`` answered as something else, from its Server header.

    A peer names its own load balancer (``told``) in its replies; None when the
    reply may well be from a load balancer.
    """
    if server.startswith(PEER_SERVER_PREFIX):
        where = f"; the load balancer is {told}" if told else ""
        return f"{address} is a peer, not a load balancer{where}. Give that to --lb."
    return None


def describe_socket_error(error):
    """A few words for a person: 'connection refused', not '[Errno 111] ...'."""
    if isinstance(error, ssl.SSLError):
        return describe_tls_error(error)
    if isinstance(error, ConnectionRefusedError):
        return "connection refused: is it running?"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    if isinstance(error, socket.gaierror):
        return "unknown host name"
    if isinstance(error, (ConnectionError, http.client.HTTPException)):
        return "the connection broke"
    return error.strerror or error.__class__.__name__


def authority(sock, port):
    """The Host a request on the connected ``sock`` is signed for: the server's IP address
    as connected to (a name resolves to it), and its port."""
    return format_address(sock.getpeername()[0], port)


def connect_http(host, port, timeout, members=OPEN):
    """An http.client connection to a server of the network: TLS when it uses TLS, Nagle off."""
    if members.tls is None:
        return _Connection(host, port, timeout=timeout)
    return _TLSConnection(host, port, timeout=timeout, context=members.tls.client)


class _Connection(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        set_nodelay(self.sock)


class _TLSConnection(http.client.HTTPSConnection):
    def connect(self):
        super().connect()
        set_nodelay(self.sock)


def downloading_of(answer):
    """How many other peers download the file, as a pick's answer (or refusal) says."""
    downloading = answer.get("downloading", 0)
    return downloading if isinstance(downloading, int) and downloading >= 0 else 0


def refusal(status, answer, unavailable=LBClientError):
    """The error for a refusal (``status`` >= 400) with the JSON ``answer``.

    ``unavailable`` is the error of a 503 that is not "every holder is busy".
    """
    message = answer.get("error") or f"The load balancer answered HTTP {status}."
    if status == 404:
        return NotKnown(message, status)
    if status == 409 and answer.get("versions"):
        return Ambiguous(message, status, answer["versions"])
    if status == 503 and "busy" in answer:
        retry_after = answer.get("retry_after")
        if not isinstance(retry_after, (int, float)) or retry_after <= 0:
            retry_after = DEFAULT_RETRY_AFTER_S
        return AllBusy(message, status, answer["busy"], retry_after, downloading_of(answer))
    if status == 503 and unavailable is NoHolderLeft:
        return NoHolderLeft(message, status, downloading_of(answer))
    if status == 503:
        return unavailable(message, status)
    return LBClientError(message, status)


# ---------------------------------------------------------------------------
# The client


class LBClient:
    """A keep-alive client of one load balancer; thread-safe (one request at a time)."""

    def __init__(self, host, port, timeout=CLIENT_TIMEOUT_S, members=OPEN, connect_timeout=None):
        self.host, self.port, self.timeout = host, port, timeout
        self.connect_timeout = connect_timeout  # None: ``timeout``
        self.members = members
        self.peer_id = None  # this peer's id here, once registered (membership.Member sets it)
        self._conn = None
        self._proven = None  # the connection whose load balancer proved it holds the secret
        self._lock = threading.Lock()
        self._interrupted = False

    @property
    def address(self):
        return format_address(self.host, self.port)

    def close(self):
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def retarget(self, host, port):
        """Talk to the load balancer at ``host:port`` from the next request on."""
        with self._lock:
            self.host, self.port = host, port
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def interrupt(self, timeout):
        """Cut short a request in flight in another thread, and use ``timeout`` from now on.

        The socket is shut down before taking the lock, so the request in flight fails at
        once (and does not reconnect) instead of holding the lock for its whole timeout.
        """
        self.timeout = timeout
        self._interrupted = True
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            self._interrupted = False
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _call(self, method, path, body=None, token=None, unavailable=LBClientError):
        if self.members.secret is not None and method != "GET" \
                and (self._conn is None or self._conn is not self._proven):
            self._call("GET", PROBE_PATH)  # tell nothing to one that cannot prove it is ours
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        with self._lock:
            status, raw, server, told, proof = self._roundtrip(method, path, data or b"",
                                                               headers)
        wrong = not_a_load_balancer(self.address, server, told)
        if wrong:
            raise Unreachable(wrong, status)
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise Unreachable(f"{self.address} answered, but not as a load balancer "
                              f"(HTTP {status}).", status)
        if status == 401 or answer.get("tls_required"):
            tls = bool(answer.get("tls_required"))
            raise NotAdmitted(f"The load balancer at {self.address} refuses us: "
                               f"{answer.get('error') or 'wrong or missing network secret.'} "
                               f"{TLS_FIX if tls else SECRET_FIX}", 401, tls)
        self._check_proof(headers, status, raw, proof)
        if status >= 400:
            raise refusal(status, answer, unavailable)
        return answer

    def _roundtrip(self, method, path, data, headers):
        for attempt in (1, 2):
            fresh = self._conn is None
            if fresh:
                self._conn = connect_http(self.host, self.port,
                                          self.connect_timeout or self.timeout, self.members)
            try:  # signed on every attempt: a retry with the same nonce would be a replay
                if self._conn.sock is None:
                    self._conn.connect()
                    self._conn.sock.settimeout(self.timeout)
                headers.update(self.members.auth_headers(method, path,
                                                         authority(self._conn.sock, self.port),
                                                         data))
                # refused before the body was all sent (413)? then read why, if it said
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._conn.request(method, path, body=data or None, headers=headers)
                response = self._conn.getresponse()
                raw = response.read()
                if response.will_close:
                    self._conn.close()
                    self._conn = None
                return (response.status, raw, response.getheader("Server", ""),
                        response.getheader(PEER_LB_HEADER), response.getheader(PROOF_HEADER))
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                self._conn.close()
                self._conn = None
                # A kept-alive connection the server closed: try once on a new one.
                if fresh or attempt == 2 or isinstance(e, (TimeoutError, ssl.SSLError)) \
                        or self._interrupted:
                    if isinstance(e, ssl.SSLError):
                        raise Unreachable(f"Cannot talk to the load balancer at "
                                          f"{self.address}: {describe_tls_error(e)}.") from None
                    raise Unreachable(f"No load balancer answers at {self.address} "
                                      f"({describe_socket_error(e)}).") from None
        raise AssertionError("unreachable")

    def _check_proof(self, sent, status, raw, proof):
        """A member talks only to a load balancer that proves it holds the secret too."""
        secret = self.members.secret
        if secret is None or secret.answer_ok(sent[AUTH_HEADER], status, raw, proof):
            self._proven = self._conn
            return
        raise NotAMember(f"The load balancer at {self.address} cannot prove that it holds this "
                         "network's secret (an open load balancer, or another network's): this "
                         "member will not use it. Start the network's load balancer with the "
                         "same --secret-file (or P2P_SECRET), or name it with --lb.",
                         status)

    # -- the API ------------------------------------------------------------

    def register(self, port, files, host=None, name="", slots=None, partial=None):
        """Join the network sharing ``files`` ([{name, size, sha256, pieces?}]) and
        downloading ``partial`` ([{name, size, sha256, pieces, done}]); returns {peer_id,
        token, heartbeat_s, host}."""
        body = {"port": port, "files": files}
        if host:
            body["host"] = host
        if name:
            body["name"] = name
        for key, value in (("slots", slots), ("partial", partial)):
            if value is not None:
                body[key] = value
        return self._call("POST", "/peers", body)

    def heartbeat(self, peer_id, token, files=None, uploads=None, slots=None, partial=None):
        """Say we are alive; ``files`` and ``partial`` ([{name, size, sha256, pieces, done}])
        replace what was announced, when given. NotKnown: register again."""
        body = {}
        for key, value in (("files", files), ("uploads", uploads), ("slots", slots),
                           ("partial", partial)):
            if value is not None:
                body[key] = value
        return self._call("PUT", f"/peers/{quote(peer_id)}", body, token)

    def unregister(self, peer_id, token):
        self._call("DELETE", f"/peers/{quote(peer_id)}", token=token)

    def files(self, query=""):
        return self._call("GET", "/files?q=" + quote(query))

    def status(self):
        return self._call("GET", "/status")

    def pick(self, name, sha256=None, peer=None, exclude=(), requester=None, count=None):
        """Holders of ``name`` (that version, at that address), each a Lease to end; NotKnown,
        Ambiguous, AllBusy or NoHolderLeft when there is none to give.

        Without ``count``, one holder of the whole file (for ``GET /files/NAME``); with it,
        up to ``count`` holders, partial ones included (for ``GET /blobs/SHA256``).
        """
        body = {"name": name, "exclude": list(exclude)}
        for key, value in (("sha256", sha256), ("peer", peer), ("requester", requester)):
            if value:
                body[key] = value
        if count is not None:
            body["count"] = count
        answer = self._call("POST", "/transfers", body, unavailable=NoHolderLeft)
        try:
            return Pick.parse(answer)
        except (KeyError, TypeError, ValueError) as e:  # wire.BadRecord is a ValueError
            raise Unreachable(f"{self.address} answered a pick this peer cannot read "
                              f"({e}).", 201) from None

    def renew(self, lease):
        """Keep ``lease`` counted: it expires when not renewed for 3 x renew_s."""
        self._call("PUT", f"/transfers/{quote(lease.transfer_id)}", token=lease.secret)

    def end(self, lease, outcome="done"):
        """Release ``lease``: ``done``, ``failed`` (its holder cools down) or ``cancelled``."""
        self._call("DELETE", f"/transfers/{quote(lease.transfer_id)}?outcome={quote(outcome)}",
                   token=lease.secret)

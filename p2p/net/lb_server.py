"""The load balancer: who is online, who shares what, and who should send the next file.

A standalone threaded HTTP/1.1 + JSON server (``python load_balancer.py``). It
keeps soft state only, rebuilt from the peers' heartbeats after a restart:

==========================================  ==========================================
request                                     answer
==========================================  ==========================================
``POST /peers`` {port, host?, files,        201 {peer_id, token, heartbeat_s, host};
  slots?, partial?}                         409 another live peer has that address
``PUT /peers/{id}`` + Bearer token          200; 404 unknown (register again); 403
  {files?, uploads?, slots?, partial?}
``DELETE /peers/{id}`` + Bearer token       204
``GET /files?q=TEXT``                       200 {files: [{name, size, sha256, pieces?,
                                            holders, partial}]}
``POST /transfers`` {name, sha256?, peer?,  201 {transfer_id, secret, peer, file, renew_s,
  exclude?, requester?, count?}             sources, pieces, versions?}; 404 nobody
                                            shares it; 409 several versions, none
                                            leading; 503 all excluded, or all busy
                                            {busy, retry_after} + Retry-After
``PUT /transfers/{id}`` + Bearer secret     200 renewed; 403 wrong secret
``DELETE /transfers/{id}?outcome=...``      204 (done, failed or cancelled); 403
  + Bearer secret
``GET /status``                             200 {policy, requests, uptime_s, network
                                            (the name it announces, or null), peers:
                                            [{..., slots, partial}]}
``GET /``                                   an HTML page of the same and of the files,
                                            refreshing itself
``GET /files/{name}[?sha256=HEX]``          302 to the least-loaded holder's
                                            ``/files/{name}``, counted as a transfer;
                                            with ``Accept: application/metalink4+xml``
                                            the Metalink instead
``GET /metalink/{name}[?sha256=HEX]``       200 Metalink 4 (``lb_documents.py``) of a
                                            file, or of a folder ``{name}/``; 404 no
                                            whole holder; 409 several versions
``GET /torrent/{name}[?sha256=HEX]``        200 a .torrent with webseeds (BEP 19), of
                                            a file, or of a folder ``{name}/`` (multi-
                                            file; 404 when no peer holds all of it)
``GET /holders/{name}?sha256=HEX``          200 {holders: [{id, name, host, port}]},
                                            least loaded first, nothing counted
==========================================  ==========================================

File records are ``wire.FileRecord``: {name, size, sha256, pieces?}, where
``pieces`` is the holder's piece-list hash. ``partial`` lists the files a peer
is downloading, each a file record plus ``done``, its verified bytes (``PUT``
replaces the list); ``slots`` is its number of upload slots (1 to
``MAX_SLOTS``). ``count`` (1 to ``MAX_SOURCES``) asks for several holders,
partial ones included: ``sources`` is [{transfer_id, secret, peer, done}], the
first of them also at the top level, ``done`` null for a holder of the whole
file; ``pieces`` is the piece-list hash announced by the most machines among
the full holders (null on a tie or when none announced one). Each source is a
transfer of its own, renewed and ended by its id and secret. A holder whose
load is at or above its slots is busy and never handed out; busy is not a
failure.

A peer's ``POST /peers`` and ``PUT /peers/{id}`` may carry its whole list of
files: up to ``MAX_PEER_BODY_BYTES``, derived from ``MAX_FILES_PER_PEER``
(``core/lb_limits.py``); other bodies up to ``LIMITS.max_body_bytes``. A longer
body is answered 413 with the reason and the limit, and more files than a peer
may share 400; one host may hold ``MAX_PEERS_PER_HOST`` registrations (429
beyond, ``--max-peers-per-host``).

``HEAD`` is answered wherever ``GET`` is. Every error is ``{"error": "<a
sentence a person can act on>"}``; every reply says ``Server:
p2p-load-balancer/VERSION``, so ``lb_client.py`` (the peer's end of this
wire) names a peer given as the load balancer as the mistake it is.

The decisions live in ``Registry`` (``core/registry.py``: no sockets,
thread-safe, injectable clock), composed of the table of peers and their files,
the leases of the transfers handed out, and the picking policy, which spreads
picks over hosts before peers (``core/lb_picking.py``). ``LBHandler`` is the
wire around it, and ``DownloadRoutes`` the part of it download tools use.

It announces itself on the local network (``beacon.py``: UDP multicast on
each interface it listens on, under ``--network NAME``; ``--no-announce`` to
stay quiet), and stands down, exiting, when it hears a senior load balancer of
the same network: one load balancer per network.
"""

import logging
import threading
import time
from urllib.parse import quote, unquote, urlencode

from p2p import VERSION
from p2p.core.errors import Problem
from p2p.core.lb_answers import transfer_answer
from p2p.core.lb_limits import MAX_PEER_BODY_BYTES
from p2p.core.lb_requests import peer_body_too_large
from p2p.core.members import URL_EXPIRES_PARAM, URL_SIG_PARAM, Unauthorized
from p2p.core.metalink import MEDIA_TYPE as METALINK_TYPE
from p2p.core.metalink import wants_metalink
from p2p.core.registry import (
    Forbidden,
    Invalid,
    parse_heartbeat,
    parse_register,
    parse_transfer_request,
)
from p2p.core.torrent import MEDIA_TYPE as TORRENT_TYPE
from p2p.core.wire import check_file_name, check_sha256
from p2p.http.limits import LIMITS
from p2p.http.messages import decode_json, parse_query
from p2p.http.server import BoundedHTTPServer, JSONRequestHandler, Routes
from p2p.net.lb_documents import Documents
from p2p.net.lb_page import PAGE_FILES, render_status_page

log = logging.getLogger("p2p.lb")

LB_SERVER = f"p2p-load-balancer/{VERSION}"  # the Server header: what answers here is one
SIGNED_PREFIXES = ("/files/", "/metalink/", "/torrent/")  # where a presigned URL is good
PAGE_PATH = "/"  # the page; a presigned URL of it signs this "name" (no file is called that)


# ---------------------------------------------------------------------------
# The HTTP server


class DownloadRoutes:
    """The routes download tools use: the redirector, Metalinks, torrents and holders."""

    def name_and_version(self, quoted_name, folders=False):
        """The checked name of a route's argument (a folder ends in ``/`` when ``folders``)
        and the ``?sha256=`` asked for, or None."""
        try:
            name = unquote(quoted_name, errors="strict")
        except UnicodeDecodeError:
            raise Invalid("The file name is not valid UTF-8.") from None
        if folders and name.endswith("/"):
            check_file_name(name[:-1])
        else:
            check_file_name(name)
        sha256 = self.query.get("sha256", [None])[0]
        if sha256 is not None:
            check_sha256(sha256)
        return name, sha256

    def route_redirect(self, quoted_name):
        """``GET /files/NAME``: 302 to the least-loaded holder, counted like any pick.

        A mirror network's redirector: ``curl -L`` and browsers get the balancing too.
        The transfer is never ended by such a client, so it counts until it expires
        (``3 x renew_s``). ``HEAD`` says where a GET would go without counting. A
        request whose ``Accept`` names Metalink 4 (aria2c's) gets the Metalink instead.
        """
        if wants_metalink(self.headers.get("Accept")):
            self.route_metalink(quoted_name)
            return
        name, sha256 = self.name_and_version(quoted_name)
        transfer = self.registry.pick(name, sha256, source=self.source).first
        if self.command == "HEAD":
            self.registry.end(transfer.id, transfer.secret, "cancelled")
        signed = {key: self.query[key][0] for key in (URL_EXPIRES_PARAM, URL_SIG_PARAM)
                  if key in self.query}  # a presigned URL is good on any holder of the name
        location = (f"{self.server.members.scheme}://{transfer.holder.address}/files/"
                    f"{quote(name, safe='/')}" + (f"?{urlencode(signed)}" if signed else ""))
        self.send_whole(302, b"", None, {"Location": location, "Cache-Control": "no-store"})

    def send_document(self, made, media_type, filename):
        """Send a (document, transfers) pair; a HEAD counts nothing."""
        body, transfers = made
        if self.command == "HEAD":
            self.server.documents.cancel(transfers)
        disposition = f"attachment; filename*=UTF-8''{quote(filename, safe='')}"
        self.send_whole(200, body, media_type,
                        {"Content-Disposition": disposition, "Cache-Control": "no-store"})

    def route_metalink(self, quoted_name):
        """``GET /metalink/NAME``: the Metalink 4 of a file (or of a folder, NAME/)."""
        name, sha256 = self.name_and_version(quoted_name, folders=True)
        made = self.server.documents.metalink(name, sha256, self.source)
        base = name.rstrip("/").rsplit("/", 1)[-1]
        self.send_document(made, METALINK_TYPE, f"{base}.meta4")

    def route_torrent(self, quoted_name):
        """``GET /torrent/NAME``: a .torrent whose webseeds are the whole holders (of a
        folder, NAME/: a multi-file torrent)."""
        name, sha256 = self.name_and_version(quoted_name, folders=True)
        made = self.server.documents.torrent(name, sha256, self.source)
        base = name.rstrip("/").rsplit("/", 1)[-1]
        self.send_document(made, TORRENT_TYPE, f"{base}.torrent")

    def route_holders(self, quoted_name):
        """``GET /holders/NAME?sha256=HEX``: its whole holders, least loaded first; nothing
        counted (what a holder names in its ``Link: rel=duplicate`` headers)."""
        name, sha256 = self.name_and_version(quoted_name)
        if sha256 is None:
            raise Invalid("Say which version: GET /holders/NAME?sha256=HEX.")
        self.send_json(200, {"holders": self.registry.holders_of(name, sha256)})


class LBHandler(DownloadRoutes, JSONRequestHandler):
    """One request against ``self.server.registry``."""

    server_version = LB_SERVER
    routes = Routes({
        "/": {"GET": "page"},
        "/status": {"GET": "status"},
        "/files": {"GET": "files"},
        "/files/**": {"GET": "redirect"},
        "/metalink/**": {"GET": "metalink"},
        "/torrent/**": {"GET": "torrent"},
        "/holders/**": {"GET": "holders"},
        "/peers": {"POST": "register"},
        "/peers/*": {"PUT": "heartbeat", "DELETE": "unregister"},
        "/transfers": {"POST": "start_transfer"},
        "/transfers/*": {"PUT": "renew_transfer", "DELETE": "end_transfer"},
    })
    not_found = "There is no {path} here; see GET /status or GET /."

    def handle_request(self):
        try:
            self.body = self.read_body()
            self.request_read()
            path, _, query = self.path.partition("?")
            self.query = parse_query(query) if query else {}
            self.dispatch(path)
        except Problem as problem:  # HTTPProblem, LBError, and BadRecord (a 400)
            self.send_problem(problem)
        except Exception:
            self.send_unexpected()
        finally:
            self.server.answered()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = handle_request

    def check_auth(self, secret):
        """A signed request, or a presigned URL of a file to redirect to its holder."""
        path, _, query = self.path.partition("?")
        signed = parse_query(query) if query else {}
        prefix = next((p for p in SIGNED_PREFIXES if path.startswith(p)), None)
        if path == PAGE_PATH and URL_SIG_PARAM in signed:  # the page, in a browser
            return secret.check_url(self.command, PAGE_PATH, signed)
        if URL_SIG_PARAM not in signed or prefix is None:
            try:
                return super().check_auth(secret)
            except Unauthorized as e:
                if path == PAGE_PATH:
                    raise Unauthorized(f"{e} A browser needs a signed link to this page: "
                                       "'python peer.py url /' prints one.") from None
                if prefix in (None, "/files/"):
                    raise
                raise Unauthorized(f"{e} A download tool needs a signed URL: 'python peer.py "
                                   "url NAME' prints one; put its ?p2p-expires=...&p2p-sig=... "
                                   f"after {prefix}NAME.") from None
        try:
            name = unquote(path[len(prefix):], errors="strict")
        except UnicodeDecodeError:
            raise Unauthorized("A signed URL is good for /files/NAME only.") from None
        secret.check_url(self.command, name, signed)

    @property
    def registry(self):
        return self.server.registry

    @property
    def max_body(self):
        """A peer's registration or heartbeat carries its whole list of files."""
        return MAX_PEER_BODY_BYTES if self.path.startswith("/peers") else LIMITS.max_body_bytes

    def body_too_large(self, length):
        if self.path.startswith("/peers"):
            return peer_body_too_large(length)
        return super().body_too_large(length)

    def json_body(self):
        if not self.body:
            return {}
        try:
            obj = decode_json(self.body)
        except (ValueError, RecursionError):
            raise Invalid("The body is not valid JSON (or nested too deeply).") from None
        if not isinstance(obj, dict):
            raise Invalid("The body must be a JSON object.")
        return obj

    def bearer(self):
        """The token of ``Authorization: Bearer TOKEN``, or '' without one."""
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def token(self):
        token = self.bearer()
        if not token:
            raise Forbidden("Send the token from registration as 'Authorization: Bearer TOKEN'.")
        return token

    # -- routes -------------------------------------------------------------

    def route_page(self):
        files, truncated = self.registry.find_files(limit=PAGE_FILES)
        page = render_status_page(self.registry.status(), files, truncated).encode("utf-8")
        self.send_whole(200, page, "text/html; charset=utf-8")

    def route_status(self):
        self.send_json(200, {**self.registry.status(), "requests": self.server.requests,
                             "uptime_s": round(time.monotonic() - self.server.started, 1),
                             "network": self.server.network})

    def route_files(self):
        query = self.query.get("q", [""])[0]
        files, truncated = self.registry.find_files(query)
        self.send_json(200, {"files": files, "truncated": truncated})

    def route_register(self):
        request = parse_register(self.json_body(), self.source)
        peer = self.registry.register(**request, source=self.source)
        log.info("peer %s registered at %s with %d files", peer.id, peer.address,
                 len(request["files"]))
        self.send_json(201, {"peer_id": peer.id, "token": peer.token, "host": peer.host,
                             "heartbeat_s": self.registry.heartbeat_s})

    def route_heartbeat(self, peer_id):
        self.registry.heartbeat(peer_id, self.token(), **parse_heartbeat(self.json_body()))
        self.send_json(200, {"heartbeat_s": self.registry.heartbeat_s})

    def route_unregister(self, peer_id):
        self.registry.unregister(peer_id, self.token())
        log.info("peer %s unregistered", peer_id)
        self.send_json(204)

    def route_start_transfer(self):
        request = parse_transfer_request(self.json_body())
        registry = self.server.registry
        handout = registry.pick(**request, source=self.request.source)
        self.send_whole(201, transfer_answer(handout, registry.renew_s), "application/json")

    def route_renew_transfer(self, transfer_id):
        self.registry.renew(transfer_id, self.bearer())
        self.send_json(200, {"renew_s": self.registry.renew_s})

    def route_end_transfer(self, transfer_id):
        outcome = self.query.get("outcome", ["done"])[0]
        self.server.registry.end(transfer_id, self.bearer(), outcome)
        self.send_json(204)


class LoadBalancerServer(BoundedHTTPServer):
    network = None  # the network name it announces on the LAN (None: it does not announce)

    def __init__(self, address, registry, **limits):
        self.registry = registry
        self.requests = 0  # answered since start
        self.started = time.monotonic()
        self._requests_lock = threading.Lock()
        super().__init__(address, LBHandler, **limits)
        self.documents = Documents(registry, self.members)

    def answered(self):
        with self._requests_lock:
            self.requests += 1


"""Other whole holders of a file, for a holder's ``Link: rel=duplicate`` headers (RFC 6249).

A holder asks its load balancer ``GET /holders/{name}?sha256=HEX`` (signed on
a members-only network), at most once per ``TTL_S`` per version: the answer,
least loaded first, is kept that long, so the ``Link`` headers follow the
load balancer's view without asking it on every range request. A load
balancer that does not answer within ``FETCH_TIMEOUT_S`` gives no duplicates
(for ``TTL_S``, so a dead one costs one short wait per version and period).
The holder's own address is left out. Each URL is presigned when the network
has a secret.
"""

import http.client
import logging
import threading
import time
from urllib.parse import quote

from p2p.core.metalink import MAX_DUPLICATES
from p2p.core.wire import format_address, parse_address
from p2p.net.holder_lists import get_json

log = logging.getLogger("p2p.share")

TTL_S = 5.0  # a version's duplicates are asked for again after this long
FETCH_TIMEOUT_S = 1.0  # the load balancer answers GET /holders within this, or none are named
URL_LIFETIME_S = 3600  # presigned duplicate URLs last this long
MAX_REMEMBERED = 1024  # versions whose duplicates are kept


class Duplicates:
    """``urls(name, sha256)``: up to MAX_DUPLICATES other holders' URLs of that version."""

    def __init__(self, server, clock=time.monotonic):
        self.server = server  # a FileServer: its lb_address, address and members
        self._clock = clock
        self._lock = threading.Lock()
        self._known = {}  # (name, sha256) -> (fetched at, [holder dicts])

    def urls(self, name, sha256):
        server = self.server
        if not server.lb_address:
            return []
        now = self._clock()
        with self._lock:
            known = self._known.get((name, sha256))
        if known is None or now - known[0] >= TTL_S:
            known = (now, self._fetch(name, sha256))
            with self._lock:
                if len(self._known) >= MAX_REMEMBERED:
                    self._known.clear()
                self._known[(name, sha256)] = known
        members = server.members
        query = ("?" + members.secret.url_query(name, URL_LIFETIME_S)
                 if members.secret is not None else "")
        path = "/files/" + quote(name, safe="/")
        return [f"{members.scheme}://{format_address(h['host'], h['port'])}{path}{query}"
                for h in known[1]
                if format_address(h["host"], h["port"]) != server.address][:MAX_DUPLICATES]

    def _fetch(self, name, sha256):
        try:
            host, port = parse_address(self.server.lb_address)
            body = get_json(self.server.members, host, port,
                            f"/holders/{quote(name, safe='/')}?sha256={sha256}",
                            timeout=FETCH_TIMEOUT_S)
            holders = body["holders"]
            return [{"host": str(h["host"]), "port": int(h["port"])} for h in holders]
        except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException) as e:
            log.info("no duplicates of %s from the load balancer: %s", name, e)
            return []

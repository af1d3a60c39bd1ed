"""The transfers the load balancer handed out: leases with expiry, and the load they count.

Pure state, no lock and no clock of its own (``Registry`` holds both). Each transfer has
a random id and a secret that only its requester gets; it expires ``MISSED_BEATS x
renew_s`` after its last renewal (kept least recently renewed first, so expiry costs
O(expired)), and counts against its holder's load (``PeerRecord.fresh``) until it ends,
expires, or the holder next reports its uploads, whichever comes first. Its outcome
counts for the holder: ``done`` as served, ``failed`` as a failure that cools it down.

A transfer handed out to a swarm download (``requester``: the downloading peer's id)
also says that this peer downloads that version from now on (``swarming``), before its
heartbeat announces the partial file: downloaders that start together learn of each
other at their first pick.

Ids and secrets are drawn from the system's random source ``TOKEN_BATCH`` transfers at a
time (``Tokens``): each is the URL-safe base64 of its own random bytes, as
``secrets.token_urlsafe`` makes it, for a tenth of the cost of two calls per transfer.
"""

import base64
import collections
import hmac
import os
from dataclasses import dataclass

from p2p.core.lb_errors import Forbidden, NotFound
from p2p.core.lb_limits import (
    MISSED_BEATS,
    TOKEN_BATCH,
    TRANSFER_ID_BYTES,
    TRANSFER_SECRET_BYTES,
)
from p2p.core.lb_peers import PeerRecord
from p2p.core.wire import FileRecord


@dataclass
class Transfer:
    id: str
    secret: str  # given only to the requester; needed to renew or end the transfer
    holder: PeerRecord
    file: FileRecord
    expires_at: float
    source: str = None  # the requester's host
    counted: bool = True  # still in its holder's ``fresh`` count
    done: int = None  # None from a full holder; the bytes a partial holder had verified
    requester: str = None  # the downloading peer's id, for a swarm download

    @property
    def key(self):
        return self.file.sha256, self.file.size


class Tokens:
    """(id, secret) pairs of ``id_bytes`` and ``secret_bytes`` random bytes, URL-safe base64
    without padding (both a multiple of 3 bytes, so that a batch's base64 cuts into each
    pair's own), drawn ``batch`` pairs at a time."""

    def __init__(self, id_bytes=TRANSFER_ID_BYTES, secret_bytes=TRANSFER_SECRET_BYTES,
                 batch=TOKEN_BATCH):
        if id_bytes % 3 or secret_bytes % 3:
            raise ValueError("token sizes must be multiples of 3 bytes")
        self._id_chars, self._pair_chars = id_bytes * 4 // 3, (id_bytes + secret_bytes) * 4 // 3
        self._batch_bytes = (id_bytes + secret_bytes) * batch
        self._ready = []

    def pair(self):
        if not self._ready:
            text = base64.urlsafe_b64encode(os.urandom(self._batch_bytes)).decode("ascii")
            n, cut = self._pair_chars, self._id_chars
            self._ready = [(text[i:i + cut], text[i + cut:i + n]) for i in range(0, len(text), n)]
        return self._ready.pop()


class Leases:
    """The running transfers, least recently renewed first."""

    def __init__(self, renew_s):
        self.renew_s = float(renew_s)
        self._transfers = collections.OrderedDict()  # id -> Transfer
        self._picks = 0  # sequence number of the last hand-out: round-robin among equals
        self.swarming = {}  # (sha256, size) -> {requester id: its running transfers of it}
        self._tokens = Tokens()

    def __len__(self):
        return len(self._transfers)

    def hand_out(self, holder, record, source, now, done=None, requester=None):
        """A transfer of ``record`` from ``holder``, counted against it from now on; for a
        swarm download, ``requester`` (its peer id) downloads that version."""
        self._picks += 1
        holder.last_pick = self._picks
        holder.fresh += 1
        transfer_id, secret = self._tokens.pair()
        transfer = Transfer(transfer_id, secret, holder, record,
                            now + MISSED_BEATS * self.renew_s, source, done=done,
                            requester=requester)
        self._transfers[transfer.id] = transfer
        holder.transfers.add(transfer.id)
        if requester is not None:
            running = self.swarming.setdefault(transfer.key, {})
            running[requester] = running.get(requester, 0) + 1
        return transfer

    def _pop(self, transfer_id):
        """Forget a transfer (and, with its last one, that its requester downloads it)."""
        transfer = self._transfers.pop(transfer_id, None)
        if transfer is not None and transfer.requester is not None:
            running = self.swarming[transfer.key]
            running[transfer.requester] -= 1
            if not running[transfer.requester]:
                del running[transfer.requester]
                if not running:
                    del self.swarming[transfer.key]
        return transfer

    def owned(self, transfer_id, secret):
        """The transfer, if ``secret`` is the one it was handed out with."""
        transfer = self._transfers.get(transfer_id)
        if transfer is None:
            raise NotFound(f"Transfer {transfer_id} is not running (it ended or expired).")
        if not secret:
            raise Forbidden("Send the transfer's secret (from POST /transfers) as "
                            "'Authorization: Bearer SECRET'.")
        if not hmac.compare_digest(transfer.secret.encode(), str(secret).encode()):
            raise Forbidden(f"The secret does not match transfer {transfer_id}; only the "
                            "requester it was handed to may renew or end it.")
        return transfer

    def renew(self, transfer, now):
        transfer.expires_at = now + MISSED_BEATS * self.renew_s
        self._transfers.move_to_end(transfer.id)

    def reported(self, holder):
        """``holder`` reported its uploads: its transfers so far are in that figure."""
        holder.fresh = 0
        for transfer_id in holder.transfers:
            self._transfers[transfer_id].counted = False

    def expired(self, now):
        """The least recently renewed transfer if it has expired, else None."""
        if not self._transfers:
            return None
        transfer = next(iter(self._transfers.values()))
        return transfer if transfer.expires_at <= now else None

    def next_expiry(self):
        """When the least recently renewed transfer expires (infinity without one)."""
        if not self._transfers:
            return float("inf")
        return next(iter(self._transfers.values())).expires_at

    def finish(self, transfer_id, outcome, now, live):
        """End a transfer with ``outcome``; it counts for its holder only if ``live(holder)``
        (the holder is still the registered one)."""
        transfer = self._pop(transfer_id)
        peer = transfer.holder
        if not live(peer):
            return
        peer.transfers.discard(transfer_id)
        if transfer.counted:
            peer.fresh -= 1
        if outcome == "done":
            peer.served += 1
        elif outcome == "failed":
            peer.blame(transfer.source, now)

    def drop_holder(self, holder):
        """Forget the transfers of a holder that left."""
        for transfer_id in holder.transfers:
            self._pop(transfer_id)

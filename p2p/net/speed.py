"""How fast one download goes and what holds it back: the facts ``core/bottleneck.py``
decides on, read from a running ``swarm.Swarm``, and what the peer's heartbeat says of it.

``Speed.look`` runs in the swarm's own loop each time it reports progress: each
holder connection's bytes so far (``Worker.received``) give its rate; its
connection (``holder.HolderConnection``) keeps the upload limit the holder said
in its last answer; ``Swarm.busy`` the holders that answered busy; ``Landing``
how many pieces wait for their SHA-256 (its queue) and how many bytes it hashed.
The sources sending, the fastest first, and the reason go into the ``Progress``
record (the last reason while bytes arrived into the ``Result`` too, for the
last line), and to the peer's ``PartialShares`` (the heartbeat's partial records), so
that ``peer.py status`` and option 3 show them too.
"""

from p2p.core.bottleneck import (
    ARRIVING,
    BUSY_RECENT_S,
    Facts,
    LimitWatch,
    RateWindow,
    Source,
    SourceRates,
    limiting,
)
from p2p.core.swarm import BUSY
from p2p.net.worker import BUFFER_BUDGET_BYTES, MIN_BUFFERS_PER_SOURCE


class Speed:
    """Each source's rate and the reason shown, for one ``Swarm``."""

    def __init__(self, swarm):
        self.swarm = swarm
        self.rates = SourceRates()
        self.hashing = RateWindow()
        self.watch = LimitWatch(swarm.clock)
        self.receiving = None  # since when bytes arrive (None: nothing arrives now)
        self.buffers = max(MIN_BUFFERS_PER_SOURCE,  # per source, as each Worker has
                           BUFFER_BUDGET_BYTES // swarm.pieces.piece_size)

    def look(self, rate, workers):
        """(the Sources sending now, the fastest first; what holds the download back, in
        words, while bytes arrive), for ``rate`` bytes/s arriving from ``workers`` (the
        holder connections). While nothing arrives, the progress says what it waits for
        (``Progress.waiting``); the heartbeat gets the reason either way."""
        swarm = self.swarm
        now = swarm.clock.now()
        rates = self.rates.update(now, {w.key: w.received for w in workers})
        sources = tuple(Source(w.lease.address, rates[w.key], w.conn.upload_limit,
                               w.conn.uploads) for w in workers)
        if rate <= 0 or self.receiving is None:
            self.receiving = now if rate > 0 else None
        with swarm.cond:
            turned_away = sum(1 for when in swarm.busy.values() if now - when < BUSY_RECENT_S)
        facts = Facts(rate, sources, swarm.asking.pace.max_sources, turned_away,
                      swarm.asking.state == BUSY, swarm.asking.stalled,
                      swarm.landing.queue.qsize(), self.buffers * len(workers),
                      self.hashing.add(now, swarm.landing.hashed),
                      now - self.receiving if self.receiving is not None else 0.0)
        limit = self.watch.see(limiting(facts))
        arriving = limit.text if limit.kind in ARRIVING else ""
        swarm.result.limit = arriving or swarm.result.limit  # the last, said at the end
        sending = tuple(sorted((s for s in sources if s.rate > 0), key=lambda s: -s.rate))
        if swarm.partials is not None:
            swarm.partials.set_speed(swarm.file.sha256, rate, sending, limit.text)
        return sending, arriving

"""The load balancer's picking policy, as plain functions over the table of peers.

A pick has three steps, each a function here: ``choose_version`` (which version of a
name: by its SHA-256, or the one held by the most distinct machines), ``candidates``
(who may send it to this requester: its full holders and, for a swarm, the partial ones
that verified some of it), and ``best`` (the ``count`` best that have a free upload
slot). ``best`` spreads picks across hosts before peers: the least-loaded host first
(its load is that of all its holders of the file), then the least-loaded peer on it, as
``ORDER`` ranks them; the least recently picked breaks ties, host and peer alike
(round-robin among equals). So a host that registers many peers gets the share of one
host, however many it registers. Everything looks only at the holders of the file.
"""

import heapq
from dataclasses import dataclass

from p2p.core.lb_errors import Busy, Conflict, NotFound, Unavailable
from p2p.core.lb_peers import PeerRecord
from p2p.core.wire import FileRecord, format_address


@dataclass(slots=True)
class Candidate:
    """A holder that may be handed out: ``done`` is None for a full holder."""
    peer: PeerRecord
    file: FileRecord
    done: int = None
    cooling: bool = False


# How each policy ranks candidates on one host, and hosts, best first. Holders that failed
# recently go last; under least-connections, full holders before partial ones at an equal
# load; the least recently picked breaks ties (round-robin among equals). (A peer's load is
# PeerRecord.load, inline: this is called for every candidate of every pick.)
ORDER = {
    "least-connections": lambda c: (c.cooling, c.peer.uploads + c.peer.fresh, c.done is not None,
                                    c.peer.last_pick),
    "round-robin": lambda c: (c.cooling, c.peer.last_pick),
}
HOST_ORDER = {  # a host: its best candidate, the load and the last pick of all its holders
    "least-connections": lambda best, load, last: (best.cooling, load, best.done is not None,
                                                   last),
    "round-robin": lambda best, load, last: (best.cooling, last),
}
POLICIES = tuple(ORDER)


# -- step 1: the version --------------------------------------------------------------


def choose_version(peers, name, sha256, named):
    """The version of ``name`` to hand out, as {(sha256, size): holders} (several sizes when
    holders disagree on it), and the other versions as listed to people.

    Without ``sha256``, a name shared as several files is the version held by the most
    distinct machines (or the ``named`` (host, port-or-None) peer's), or Conflict when
    none leads.
    """
    versions = peers.index.get(name)
    if not versions:
        raise NotFound(f"Nobody shares {name!r} right now; list the shared files to see "
                       "what there is.")
    if sha256 is not None:
        versions = {key: h for key, h in versions.items() if key[0] == sha256}
        if not versions:
            raise NotFound(f"Nobody shares {name!r} with SHA-256 {sha256}.")
    elif len(versions) > 1 and named is not None:  # the named peer's version, if one
        versions = {key: h for key, h in versions.items() if peers.at(h, *named)} or versions
    return ranked_version(peers, name, versions)


def ranked_version(peers, name, versions):
    """The versions to pick from among ``versions`` ({(sha256, size): holders}) of
    ``name``, and the other versions as listed to people; or Conflict.

    Contents (SHA-256s) are ranked by the distinct machines that hold them: one machine
    cannot outvote many, however many peers it registers. Sizes claimed for the leading
    SHA-256 are ranked the same way; when no size leads, all are candidates (the
    downloader's checks sort them out), so a wrong size claimed for a file never hides
    its true holders.
    """
    if len(versions) == 1:
        return versions, []
    by_content = {}
    for key, holders in versions.items():
        by_content.setdefault(key[0], []).append((key, holders))
    leader = leading(peers, by_content)
    if leader is None:
        raise Conflict(f"{len(by_content)} different files are shared as {name!r} and none "
                       "is held by more hosts than the others; choose one by its sha256.",
                       versions=listed(peers, name, versions))
    others = listed(peers, name, {k: h for k, h in versions.items() if k[0] != leader})
    size = leading(peers, {key: [(key, h)] for key, h in by_content[leader]})
    if size is not None:
        return {size: versions[size]}, others
    return dict(by_content[leader]), others


def leading(peers, groups):
    """The key of ``groups`` ({key: [(version, holders)]}) held by the most distinct
    machines, or None on a tie."""
    if len(groups) == 1:
        return next(iter(groups))
    hosts = {key: len({peers[pid].machine for _, h in group for pid in h})
             for key, group in groups.items()}
    ranked = sorted(hosts.values(), reverse=True)
    if ranked[0] == ranked[1]:
        return None
    return max(hosts, key=hosts.get)


def agreed_pieces(peers, name, version):
    """The piece-list hash the most distinct machines announced among the full holders
    of ``version``; None when none announced one, or on a tie."""
    announced, by_id = {}, peers.by_id
    for key, holders in version.items():
        for pid in holders:
            pieces = by_id[pid].files[name].pieces
            if pieces is not None:
                announced.setdefault(pieces, []).append((key, [pid]))
    return leading(peers, announced) if announced else None


def listed(peers, name, versions):
    return [{**peers[next(iter(h))].files[name].as_dict(), "holders": len(h)}
            for h in versions.values()]


def downloading(peers, version, requester, swarming):
    """How many peers other than ``requester`` are downloading ``version`` now: those that
    announced a partial file of it, and those running a swarm transfer of it
    (``swarming``, ``Leases.swarming``: they started and have not announced yet)."""
    others = set()
    for key in version:
        others.update(peers.partials.get(key, ()))
        others.update(swarming.get(key, ()))
    others.discard(requester)
    return len(others)


# -- step 2: the candidates -------------------------------------------------------------


def candidates(peers, name, version, named, exclude, requester, partial):
    """Who may send ``version`` to this requester: its full holders and, when ``partial``,
    the peers that have verified some of it; never the requester; only the ``named``
    peer, or else none that is in ``exclude``."""
    by_id = peers.by_id
    found = [Candidate(peer, peer.files[name]) for holders in version.values()
             for pid in holders if pid != requester for peer in (by_id[pid],)]
    if partial:
        full = {c.peer.id for c in found}
        for key in version:
            for pid in peers.partials.get(key, ()):
                downloading_it = peers[pid].partial[key]
                if pid != requester and pid not in full and downloading_it.done > 0:
                    record = FileRecord(name, key[1], key[0], downloading_it.file.pieces)
                    found.append(Candidate(peers[pid], record, downloading_it.done))
    if named is not None:
        return at_named(peers, name, version, found, named, requester)
    if not found:
        raise NotFound(f"Only you share {name!r}; no other peer has it.")
    if not exclude:
        return found
    excluded = set(exclude)
    found = [c for c in found if c.peer.id not in excluded]
    if not found:
        raise Unavailable(f"Every holder of {name!r} has been tried and failed; "
                          "try again later.")
    return found


def at_named(peers, name, version, found, named, requester):
    """The candidates at the ``named`` (host, port-or-None), or NotFound saying who has it."""
    host, port = named
    at = [c for c in found if c.peer.host == host and port in (None, c.peer.port)]
    if at:
        return at
    holders = [pid for h in version.values() for pid in h]
    if requester in holders and peers.at([requester], *named):
        raise NotFound(f"That address is you; you already share {name!r}.")
    wanted = host if port is None else format_address(host, port)
    others = [peers[pid].address for pid in holders if pid != requester]
    raise NotFound(f"{wanted} does not share {name!r}"
                   + (f"; it is shared by {', '.join(others[:5])}." if others else "."))


# -- step 3: the best ---------------------------------------------------------------------


def best(name, found, policy, count, cooling):
    """The ``count`` best of ``found`` that have a free upload slot, spread over hosts; or
    Busy. ``cooling(peer)`` says whether a holder that failed for someone (``peer.failures``)
    is sidelined for this requester."""
    free, machines = [], set()
    for c in found:
        peer = c.peer
        machines.add(peer.source or peer.host)  # PeerRecord.machine, inline: this loop is hot
        if peer.slots is None or peer.uploads + peer.fresh < peer.slots:  # not PeerRecord.busy
            if peer.failures:  # only a holder that failed for someone may be cooling down
                c.cooling = cooling(peer)
            free.append(c)
    if not free:
        n = len(found)
        raise Busy(f"Every holder of {name!r} is busy ({n} holder{'s' * (n != 1)}); "
                   "waiting for a free upload slot.", busy=n)
    if len(machines) == len(found):  # each on a host of its own: a host ranks as its holder
        if count == 1:
            return [min(free, key=ORDER[policy])]
        return heapq.nsmallest(count, free, key=ORDER[policy])
    return best_of_hosts(found, free, policy, count)


def best_of_hosts(found, free, policy, count):
    """``best``'s choice among ``free``, the holders of ``found`` with a free slot: the best
    hosts, a host's load and last pick counting its busy holders too."""
    load, last = {}, {}
    for c in found:
        peer = c.peer
        machine = peer.machine
        load[machine] = load.get(machine, 0) + peer.load
        if peer.last_pick > last.get(machine, 0):
            last[machine] = peer.last_pick
    hosts = best_per_host(free, policy, count)
    host_key = HOST_ORDER[policy]
    ranked = [(host_key(group[0], load[m], last.get(m, 0)), i, m)  # i: the first of equals
              for i, (m, group) in enumerate(hosts.items())]
    if count == 1:
        return [hosts[min(ranked)[2]][0]]
    return spread([m for _, _, m in heapq.nsmallest(count, ranked)], hosts, count)


def best_per_host(free, policy, count):
    """{host: its ``count`` best candidates, best first}."""
    key, on = ORDER[policy], {}
    for c in free:
        on.setdefault(c.peer.source or c.peer.host, []).append(c)
    return {m: group if len(group) == 1 else heapq.nsmallest(count, group, key=key)
            for m, group in on.items()}


def spread(ranked, hosts, count):
    """Up to ``count`` candidates: the best peer of each host in ``ranked`` (the best hosts,
    best first), then the second best of each, and so on; those cooling down after all
    the others. (A host after the first ``count`` could add only what comes later.)"""
    chosen = []
    for rank in range(min(count, max(len(hosts[m]) for m in ranked))):
        chosen += [hosts[m][rank] for m in ranked if rank < len(hosts[m])]
    chosen.sort(key=lambda c: c.cooling)  # stable: the order above among equals
    return chosen[:count]

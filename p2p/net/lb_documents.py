"""The load balancer's documents for download tools: Metalink 4 and .torrent.

``documents.metalink(name, sha256, source)`` and ``documents.torrent(...)``
pick the whole holders of a file (``Registry.pick`` with ``count``: each pick
is a transfer counted as load, expiring ``3 x renew_s`` later as the
redirector's do; picks of partial holders are cancelled at once), fetch the
piece list from one of them (``holder_lists.py``, cached), leave out a
holder that could not be reached (its transfer ends ``failed``), and render
the document (``core/metalink.py``, ``core/torrent.py``). A name ending in
``/`` is a folder: one ``<file>`` per file under it in a Metalink; a
multi-file torrent whose webseeds are the peers holding every file under it
(one transfer counted on each), hashed by one of them. On a network with a
secret every URL in a document is presigned for ``URL_LIFETIME_S``.
"""

import contextlib
import time
from urllib.parse import quote

from p2p import VERSION
from p2p.core.errors import Problem
from p2p.core.metalink import BadDocument, MetalinkFile, render
from p2p.core.pieces import piece_size
from p2p.core.registry import MAX_SOURCES, Invalid, NotFound
from p2p.core.torrent import BadTorrent, folder_metainfo, folder_parent, metainfo
from p2p.net.holder_lists import HolderLists

GENERATOR = f"p2p-load-balancer/{VERSION}"
URL_LIFETIME_S = 24 * 3600  # presigned URLs in a document last a day
MAX_FOLDER_FILES = 1000  # a folder's Metalink lists at most this many files


class Gone(Problem):
    status = 503

    def __init__(self, message):
        super().__init__(message)
        self.headers["Retry-After"] = "1"


def file_url(members, holder, name):
    url = f"{members.scheme}://{holder.address}/files/{quote(name, safe='/')}"
    if members.secret is not None:
        url += "?" + members.secret.url_query(name, URL_LIFETIME_S)
    return url


class Documents:
    """Metalinks and torrents made from ``registry``'s picks and the holders' piece lists."""

    def __init__(self, registry, members):
        self.registry = registry
        self.members = members
        self.lists = HolderLists(members)

    def _pick_whole(self, name, sha256, source):
        """(Handout, [its transfers from whole holders]) or NotFound when none has it all."""
        handout = self.registry.pick(name, sha256, count=MAX_SOURCES, source=source)
        whole = [t for t in handout.transfers if t.done is None]
        for t in handout.transfers:
            if t.done is not None:
                self.registry.end(t.id, t.secret, "cancelled")
        if not whole:
            raise NotFound(f"No peer has the whole of {name!r} yet ({len(handout.transfers)} "
                           "are downloading it); try again when one has finished.")
        return handout, whole

    def _drop(self, name, transfers, failed):
        """``transfers`` without those of unreachable holders (ended ``failed``)."""
        gone = {h.id for h in failed}
        for t in transfers:
            if t.holder.id in gone:
                self.registry.end(t.id, t.secret, "failed")
        kept = [t for t in transfers if t.holder.id not in gone]
        if not kept:
            raise Gone(f"Every holder of {name!r} went away while the document was made; "
                       "try again.")
        return kept

    @contextlib.contextmanager
    def cancelling(self, transfers):
        """End ``transfers`` (a list, as it stands when an error escapes) unused when the
        document cannot be made; a document the standards cannot carry is a 400."""
        try:
            yield
        except (BadDocument, BadTorrent) as e:
            self.cancel(transfers)
            raise Invalid(str(e)) from None
        except Exception:
            self.cancel(transfers)
            raise

    def _sha1_holders(self, name, transfers, fetched):
        """``transfers`` without the holders that could not give the SHA-1 piece hashes;
        Gone when none could."""
        transfers = self._drop(name, transfers, fetched.failed)
        if fetched.value is None:
            raise Gone(f"No holder of {name!r} could give its SHA-1 piece hashes yet; "
                       "try again shortly.")
        return transfers

    def cancel(self, transfers):
        """End ``transfers`` unused (a HEAD, or a document that could not be made)."""
        for t in transfers:
            try:
                self.registry.end(t.id, t.secret, "cancelled")
            except Problem:
                pass  # ended already (a holder found gone)

    def metalink_file(self, name, sha256, source):
        """(MetalinkFile of one file, the transfers it counts)."""
        handout, whole = self._pick_whole(name, sha256, source)
        record = whole[0].file
        fetched = self.lists.pieces(record, [t.holder for t in whole], handout.pieces)
        whole = self._drop(name, whole, fetched.failed)
        pieces = fetched.value
        entry = MetalinkFile(name, record.size, record.sha256,
                             [file_url(self.members, t.holder, name) for t in whole],
                             pieces.piece_size if pieces else 0,
                             list(pieces.digests) if pieces else [])
        return entry, whole

    def folder_names(self, folder):
        """The names of the files under ``folder`` (ending in ``/``), or NotFound."""
        found, truncated = self.registry.find_files(folder, limit=MAX_FOLDER_FILES)
        names = sorted({f["name"] for f in found if f["name"].startswith(folder)})
        if truncated:
            raise Invalid(f"{folder!r} holds more than {MAX_FOLDER_FILES} files; "
                          "ask for one of its folders.")
        if not names:
            raise NotFound(f"Nobody shares a file under {folder!r}.")
        return names

    def metalink(self, name, sha256, source):
        """(the Metalink document as bytes, the transfers it counts)."""
        names = self.folder_names(name) if name.endswith("/") else [name]
        if len(names) > 1 and sha256 is not None:
            raise Invalid("?sha256= chooses the version of one file, not of a folder.")
        entries, counted = [], []
        with self.cancelling(counted):
            for each in names:
                entry, transfers = self.metalink_file(each, sha256, source)
                entries.append(entry)
                counted += transfers
            return render(entries, GENERATOR), counted

    def torrent(self, name, sha256, source):
        """(the .torrent of one file, or of a folder (NAME/), as bytes, the transfers it
        counts)."""
        if name.endswith("/"):
            if sha256 is not None:
                raise Invalid("?sha256= chooses the version of one file, not of a folder.")
            return self.folder_torrent(name, source)
        _, whole = self._pick_whole(name, sha256, source)
        record = whole[0].file
        with self.cancelling(whole):
            fetched = self.lists.sha1(record, [t.holder for t in whole])
            whole = self._sha1_holders(name, whole, fetched)
            body = metainfo(name, record.size, piece_size(record.size), fetched.value,
                            [file_url(self.members, t.holder, name) for t in whole],
                            GENERATOR, time.time(), private=self.members.secret is not None)
        return body, whole

    def folder_torrent(self, folder, source):
        """(the multi-file .torrent of ``folder`` as bytes, the transfers it counts): its
        webseeds are the peers that hold every file under it, each counted once."""
        if self.members.secret is not None:
            raise Invalid(f"On a members-only network a folder's torrent cannot carry a signed "
                          f"URL for each file; use its Metalink (GET /metalink/{quote(folder)} "
                          "with the query of 'python peer.py url NAME') or one file's torrent.")
        picked = []
        with self.cancelling(picked):
            records, whole = self._folder_holders(folder, source, picked)
            fetched = self.lists.folder_sha1(folder, records, [t.holder for t in whole])
            whole = self._sha1_holders(folder, whole, fetched)
            counted = {t.id for t in whole}
            self.cancel([t for t in picked if t.id not in counted])
            picked[:] = whole
            base = quote(folder_parent(folder), safe="/")
            urls = [f"{self.members.scheme}://{t.holder.address}/files/{base}" for t in whole]
            body = folder_metainfo(folder, [(r.name, r.size) for r in records],
                                   piece_size(sum(r.size for r in records)), fetched.value,
                                   urls, GENERATOR, time.time())
        return body, whole

    def _folder_holders(self, folder, source, picked):
        """([the FileRecord of each file under ``folder``], [one transfer per peer holding
        every one of them, least loaded first]); every pick is added to ``picked``."""
        records, holding = [], None
        for name in self.folder_names(folder):
            _, whole = self._pick_whole(name, None, source)
            picked += whole
            records.append(whole[0].file)
            ids = {t.holder.id for t in whole}
            holding = ids if holding is None else holding & ids
        first = {}
        for t in picked:
            first.setdefault(t.holder.id, t)
        whole = [t for pid, t in first.items() if pid in holding]
        if not whole:
            raise NotFound(f"No single peer has every file under {folder!r} "
                           f"({len(records)} files); use its Metalink "
                           f"(GET /metalink/{quote(folder)}), which names the holders of each "
                           "file.")
        return records, whole

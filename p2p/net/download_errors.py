"""The downloader's errors: one class per meaning, each a sentence a person can act on.

``DownloadError`` is the base the callers catch: a download could not finish, and
the message says what happened and what to do. The others say which way it
failed, so that the downloader can act on it (ask other holders, blame a liar).
"""

from p2p.core.errors import Problem


class DownloadError(Problem):
    """A download could not finish; the message says what happened and what to do."""


class DiskError(DownloadError):
    """The partial file could not be created, written or read back (full disk, no right,
    a folder leading outside ``downloads/``); the holders are not to blame."""


class VerifyFailed(DownloadError):
    """The whole file did not match its SHA-256: nothing is saved under its name."""


class NoPieceList(DownloadError):
    """No holder handed out gave the file's piece list; ``broken``: the peer ids that failed."""

    def __init__(self, message, broken):
        super().__init__(message)
        self.broken = broken


class Spoiled(DownloadError):
    """Pieces written unhashed (while alone) turned out bad: ``peer_ids`` sent them. The
    good ones are kept; the download goes on from other holders, checking every piece."""

    def __init__(self, message, peer_ids):
        super().__init__(message)
        self.peer_ids = peer_ids


class FalseList(VerifyFailed):
    """Every piece matched a holder's piece list, but the whole file did not: the list
    (from ``peer_id``) is false."""

    def __init__(self, message, peer_id):
        super().__init__(message)
        self.peer_id = peer_id


class DownloadCancelled(Exception):
    """A background download was cancelled by the person (raised from its progress
    callback); its partial file is kept. Not a DownloadError: nothing failed, and a folder
    download stops at it instead of going on to the next file."""

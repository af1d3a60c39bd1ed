"""What a download tells its caller: ``Progress`` while it runs, ``Result`` when it is done.

Plain records, no behaviour: the downloader (``net/download.py``) fills them, the
command line and the menu (``cli/``) print them, ``folder.py`` adds them up. What
``each`` and ``limit`` say comes from ``bottleneck.py``: each holder's rate, and
what holds the download back now.
"""

from dataclasses import dataclass, field


@dataclass
class Progress:
    name: str
    done: int
    total: int
    rate: float  # bytes/s, recent
    source: str  # the holder sending the most, or the one being waited for
    finished: bool = False
    sources: int = 1  # holders sending now
    waiting: str = ""  # why nothing arrives: "waiting for a free upload slot, 3 holders busy"
    stalled: bool = False  # no holder is online: waiting for one to come back
    each: tuple = ()  # bottleneck.Source per holder sending now, the fastest first
    limit: str = ""  # what holds it back now: "limited by this machine's link"


@dataclass
class Result:
    path: str
    name: str
    size: int
    sha256: str
    already: bool = False  # the same content was already there: nothing moved
    received: int = 0  # bytes that came over the network this time
    resumed_from: int = 0  # verified bytes found on disk at the start
    sources: list = field(default_factory=list)
    started: float = 0.0  # when it started, on the downloader's clock
    others: list = field(default_factory=list)  # other versions of the name on the network
    limit: str = ""  # what limited it last while bytes arrived (Progress.limit)

"""A download's progress for ``peer.py get``: one updating line on a terminal, plain lines otherwise.

``ProgressPrinter`` is the downloader's ``on_progress`` callback: it turns each
``Progress`` record into text on its stream (standard error). On a terminal it
redraws one line. To a pipe or a file it writes whole lines, so that a script can
tell a moving download from a stalled one: the first report, then a line once
both ``PLAIN_EVERY_S`` have passed and ``PLAIN_STEP_PERCENT`` more has arrived
(or the source, what it waits for or what limits it has changed), whichever comes
later; a line at least every ``PLAIN_STILL_S`` even when nothing moves; and the
last one. Each line says what limits the download now and, when several holders
send, each one's rate (``core/bottleneck.py``).
"""

import shutil
import time

from p2p.cli.text import cut, human_duration, human_size, sent_by_each

PLAIN_EVERY_S = 5.0  # plain lines: at most one this often...
PLAIN_STEP_PERCENT = 5.0  # ...and only once this much more has arrived (or something changed)
PLAIN_STILL_S = 30.0  # ...but one at least this often, to show a stalled download as such


class ProgressPrinter:
    """One updating line on a terminal; plain lines now and then otherwise."""

    def __init__(self, stream, tty=None, clock=time.monotonic):
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.clock = clock
        self.last = None  # (when, percent, source, waiting, limit) of the last plain line
        self.drawn = False

    def __call__(self, p):
        done = 100 * p.done / p.total if p.total else 100.0
        line = progress_line(p, done)
        if self.tty:  # one line that fits, or the terminal would scroll instead of redraw
            line = cut(line, shutil.get_terminal_size().columns - 1)
            self.stream.write("\r\x1b[K" + line)
            self.drawn = True
            if p.finished:
                self.stream.write("\n")
                self.drawn = False
        elif self.due(p, done):
            self.stream.write(line + "\n")
            self.last = (self.clock(), done, p.source, p.waiting, p.limit)
        self.stream.flush()

    def due(self, p, done):
        """Whether a plain line is due now."""
        if self.last is None or p.finished:
            return True
        when, percent, source, waiting, limit = self.last
        waited = self.clock() - when
        changed = (done - percent >= PLAIN_STEP_PERCENT or p.source != source
                   or p.waiting != waiting or p.limit != limit)
        return waited >= PLAIN_STILL_S or (waited >= PLAIN_EVERY_S and changed)

    def end(self):
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def progress_line(p, done):
    """' 52.0%  6.2 MiB / 12.0 MiB  5.0 MiB/s  ETA 0:01  limited by this machine's link
    from 127.0.0.1:41237', each holder's rate when several send: what limits the download
    comes before the holders, so that a terminal too narrow for both still shows it."""
    if p.waiting:
        waiting = p.waiting + (" (Ctrl-C to stop)" if p.stalled else "")
        return (f"{done:5.1f}%  {human_size(p.done)} / {human_size(p.total)}  {waiting}"
                if p.total else f"{p.name}: {waiting}")
    eta = human_duration((p.total - p.done) / p.rate) if p.rate > 0 else "--:--"
    limit = f"{p.limit}  " if p.limit else ""
    return (f"{done:5.1f}%  {human_size(p.done)} / {human_size(p.total)}  "
            f"{human_size(p.rate)}/s  ETA {eta}  {limit}{sent_by_each(p)}")

"""A download's progress for ``peer.py get``: one updating line on a terminal, plain lines otherwise.

``ProgressPrinter`` is the downloader's ``on_progress`` callback: it turns each
``Progress`` record into text on its stream (standard error), redrawing one line
on a terminal and writing a few whole lines to a pipe or a file.
"""

import shutil

from p2p.cli.text import cut, human_duration, human_size, sent_by

PROGRESS_LINES = 4  # plain progress lines when output is not a terminal (25 %, 50 %, ...)


class ProgressPrinter:
    """One updating line on a terminal; a few plain lines otherwise."""

    def __init__(self, stream, tty=None):
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.source = None
        self.next_mark = 1
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
        else:
            changed = self.source is not None and p.source != self.source
            if changed or done >= 100 * self.next_mark / PROGRESS_LINES:
                self.stream.write(line + "\n")
                while done >= 100 * self.next_mark / PROGRESS_LINES:
                    self.next_mark += 1
        self.source = p.source
        self.stream.flush()

    def end(self):
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def progress_line(p, done):
    """' 52.0%  6.2 MiB / 12.0 MiB  5.0 MiB/s  ETA 0:01  from 127.0.0.1:41237'."""
    if p.waiting:
        return (f"{done:5.1f}%  {human_size(p.done)} / {human_size(p.total)}  {p.waiting}"
                if p.total else f"{p.name}: {p.waiting}")
    eta = human_duration((p.total - p.done) / p.rate) if p.rate > 0 else "--:--"
    return (f"{done:5.1f}%  {human_size(p.done)} / {human_size(p.total)}  "
            f"{human_size(p.rate)}/s  ETA {eta}  {sent_by(p)}")

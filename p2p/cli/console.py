"""What the menu needs from a terminal: numbered choices, line editing, history, Tab.

``Choices`` remembers the numbered lines the menu showed last (option 1's list,
the "did you mean" suggestions), so that option 2 takes a number as well as a
name; ``pick`` turns what a person typed into a file (name and, when several
versions share a name, the SHA-256 of the one listed), with no I/O.

``LineReader`` reads a line with the standard ``readline`` where it exists and
input is a terminal (arrow keys, Ctrl-A/E, history with Up/Down, Tab completion
of the names on the network at the questions that ask for a name); elsewhere
it is plain ``input``. Only names go into the history, never menu numbers.
"""

import sys
import threading
import time

try:
    import readline
except ImportError:  # Windows without pyreadline: plain input
    readline = None

NAMES_FRESH_S = 2.0  # Tab asks the load balancer for names at most this often


class Choices:
    """The numbered files shown last: number -> (name, sha256 or None)."""

    def __init__(self):
        self._files = []

    def show(self, files):
        """Number ``files`` ((name, sha256 or None) pairs) from 1; returns the numbers."""
        self._files = list(files)
        return list(range(1, len(self._files) + 1))

    def pick(self, typed):
        """(name, sha256 or None) for a number shown last, None for anything else."""
        typed = typed.strip()
        if typed.isdigit() and typed.isascii() and 1 <= int(typed) <= len(self._files):
            return self._files[int(typed) - 1]
        return None

    def __len__(self):
        return len(self._files)


def completions(text, names):
    """Names that start with ``text``, those of the same case first."""
    exact = [n for n in names if n.startswith(text)]
    folded = text.casefold()
    return exact + [n for n in names if n.casefold().startswith(folded) and n not in exact]


class LineReader:
    """``read(prompt)`` with line editing where the terminal allows it.

    ``names`` is called (in the reading thread, at most every NAMES_FRESH_S) for the
    names Tab completes; it returns a list and must not raise.
    """

    def __init__(self, names, stdin=sys.stdin):
        self.names = names
        self.editing = readline is not None and stdin.isatty()
        self._completing = False
        self._matches = []
        self._cache = ([], 0.0)
        self._lock = threading.Lock()
        if self.editing:
            readline.set_completer_delims("")  # the whole line is one name: they have spaces
            readline.set_completer(self._complete)
            if "libedit" in (readline.__doc__ or ""):
                readline.parse_and_bind("bind ^I rl_complete")
            else:
                readline.parse_and_bind("tab: complete")

    def read(self, prompt, complete=False, remember=False):
        """A line; Tab completes names when ``complete``; kept in history when ``remember``."""
        self._completing = complete
        try:
            line = input(prompt)
        finally:
            self._completing = False
        if self.editing and not remember and line.strip():
            length = readline.get_current_history_length()
            if length:
                readline.remove_history_item(length - 1)
        return line

    def _known_names(self):
        with self._lock:
            names, when = self._cache
            if time.monotonic() - when > NAMES_FRESH_S:
                names = self.names()
                self._cache = (names, time.monotonic())
            return names

    def _complete(self, text, state):
        if not self._completing:
            return None
        if state == 0:
            self._matches = completions(text, self._known_names())
        return self._matches[state] if state < len(self._matches) else None

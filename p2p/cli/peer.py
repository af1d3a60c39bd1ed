"""A peer: shares its ``shared/`` folder, downloads into ``downloads/``, and has a menu.

``python peer.py`` starts the interactive peer: the running peer of
``p2p/net/node.py`` (a file server over ``shared/``, a member of the load
balancer's registry; unregistered on exit, however it is asked to), a downloader
(``download.py``, several downloads in the background) and the numbered menu
(line editing and Tab completion in ``console.py``). Without ``--lb`` (or
``P2P_LB``) every command first looks for the load balancer of its ``--network``
on the local network, and a peer that found it that way follows the network;
finding or starting one is ``autostart.py``.

Subcommands, for scripts and tests (``--help`` on each, or ``help COMMAND``)::

    python peer.py [menu]        the interactive peer (default)
    python peer.py serve         the same peer without the menu, until Ctrl-C / SIGTERM
    python peer.py get NAME...   download files one after another, then exit; a peer
                                 meanwhile, serving their verified pieces
    python peer.py list [TEXT]   the files on the network
    python peer.py status        the load balancer's view of every peer, my unfinished downloads
    python peer.py clean         delete my unfinished downloads
    python peer.py secret        print a new network secret
    python peer.py url NAME      a signed, time-limited URL of a holder, for curl

A server's first line on standard output is ``listening on HOST:PORT``. Exit
status is 0 on success, 1 with a one-line reason on standard error otherwise,
130 after Ctrl-C.
"""

import argparse
import difflib
import logging
import logging.handlers
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import unicodedata

from p2p import VERSION
from p2p.cli.autostart import (
    DEFAULT_LB,
    TOP,
    find_on_lan,
    find_or_start_load_balancer,
    lb_answers,
    lb_client_for,
    parse_lb_list,
    membership_hooks,
    open_to,
    user_tag,
)
from p2p.cli.console import Choices, LineReader
from p2p.cli.lb_main import add_member_options, members_from_args, port_number
from p2p.core import discovery
from p2p.core.folder import FolderError, is_folder
from p2p.core.members import (
    DEFAULT_URL_LIFETIME_S,
    NETWORK_CERT_NAME,
    new_secret,
    parse_duration,
)
from p2p.core.units import human_size
from p2p.core.wire import BadName, check_name, format_address, parse_address, percent
from p2p.net.download import (
    DEFAULT_PARALLEL,
    DirectSource,
    Downloader,
    DownloadError,
    DownloadQueue,
    find_unfinished,
    remove_unfinished,
)
from p2p.net.folder import folder_result, get_folder
from p2p.net.lb_client import (
    Ambiguous,
    LBClientError,
    NotFound,
    Unreachable,
)
from p2p.net.membership import RECONNECT_S
from p2p.net.node import Peer, PeerError
from p2p.net.sharing import (
    DEFAULT_UPLOAD_SLOTS,
    parse_rate,
    url_for_name,
)

log = logging.getLogger("p2p.peer")

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
LOG_MAX_BYTES = 256 * 1024  # one log file per peer name, rotated at this size...
LOG_BACKUPS = 1  # ...keeping this many older ones
MAX_NAME_CHARS = 64  # a peer's --name
STATUS_OTHER_COLUMNS = 60  # option 3: the columns around the file names...
STATUS_NAMES_MIN = 20  # ...which get the rest of the terminal's width, at least this
JOBS_STOP_WAIT_S = 3.0  # on the way out, wait this long for running downloads to stop
PROGRESS_LINES = 4  # plain progress lines when output is not a terminal (25 %, 50 %, ...)
GET_WAIT_S = 300  # get --wait: give up after this long with nothing arriving (0: at once)


class Terminate(BaseException):
    """SIGTERM: leave whatever we are doing and shut down cleanly."""


class Cancelled(Exception):
    """Ctrl-C at a question of the menu: back to the menu."""


# ---------------------------------------------------------------------------
# Showing things to a person


def shown_path(path):
    """A folder as a person finds it: relative to here when it is below here."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def describe_sharing(peer):
    """'3 files from shared/' (and 'and 2 downloaded' when there are some)."""
    mine = sum(1 for f in peer.index.files() if f.root == peer.shared)
    fetched = len(peer.index) - mine
    text = f"{plural(mine, 'file')} from {shown_path(peer.shared)}/"
    return text + (f" and {fetched} downloaded" if fetched else "")


def describe_openness(peer):
    """To whom this peer's files are open, and whether its downloads are among them."""
    reach = open_to(peer.bind[0], peer.port)
    kept = ("downloads are shared too (--no-reshare keeps them private)" if peer.reshare
            else "downloads stay private (--no-reshare)")
    if peer.members.secret or peer.members.tls:
        reach = f"{reach}, but only to members ({peer.members.describe()})"
    return f"Open to {reach}; {kept}."


def upload_line(u):
    """'pieces 17-18 of song.mp3 to 127.0.0.1:4242: 1.5 MiB / 2.0 MiB (bytes ...)' for an
    upload of a range (pieces counted from 1), 'song.mp3 to ...: ...' for a whole file."""
    what, where = u.name, ""
    if u.total != u.size:
        first, last = (i + 1 for i in u.pieces)
        pieces = f"piece {first}" if first == last else f"pieces {first}-{last}"
        what = f"{pieces} of {u.name}"
        where = (f" (bytes {human_size(u.start)} to {human_size(u.start + u.total)} of "
                 f"{human_size(u.size)})")
    return f"{what} to {u.client}: {human_size(u.sent)} / {human_size(u.total)}{where}"


def plural(count, noun):
    return f"{count} {noun}{'' if count == 1 else 's'}"


def human_duration(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def text_width(text):
    """Columns ``text`` takes on a terminal: wide (East Asian) characters 2, combining 0."""
    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in str(text))


def pad(text, width):
    text = str(text)
    return text + " " * (width - text_width(text))


def table(rows, headers):
    widths = [max(text_width(x) for x in column) for column in zip(headers, *rows)]
    lines = ["  ".join(pad(h, w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(pad(c, w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def cut(text, width):
    """``text`` in at most ``width`` columns, ending in '…' when it had to be cut."""
    if text_width(text) <= width:
        return text
    while text and text_width(text) > width - 1:
        text = text[:-1]
    return text.rstrip() + "…"


def fit_names(names, width):
    """As many of ``names`` as fit in ``width`` columns (the first one cut if need be),
    then how many more there are."""
    shown, used = [], 0
    for i, name in enumerate(names):
        more = f", … +{len(names) - i}"
        cost = text_width(name) + (2 if shown else 0)
        last = i == len(names) - 1
        if used + cost + (0 if last else text_width(more)) > width:
            if not shown:
                return cut(name, width - (0 if last else text_width(more))) + \
                    ("" if last else f", … +{len(names) - 1}")
            return ", ".join(shown) + more
        shown.append(name)
        used += cost
    return ", ".join(shown)


class ProgressPrinter:
    """One updating line on a terminal; a few plain lines otherwise."""

    def __init__(self, stream, tty=None):
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.source = None
        self.next_mark = 1
        self.drawn = False

    def __call__(self, p):
        percent = 100 * p.done / p.total if p.total else 100.0
        eta = human_duration((p.total - p.done) / p.rate) if p.rate > 0 else "--:--"
        if p.waiting:
            waiting = p.waiting + (" (Ctrl-C to stop)" if p.stalled else "")
            line = (f"{percent:5.1f}%  {human_size(p.done)} / {human_size(p.total)}  "
                    f"{waiting}" if p.total else f"{p.name}: {waiting}")
        else:
            line = (f"{percent:5.1f}%  {human_size(p.done)} / {human_size(p.total)}  "
                    f"{human_size(p.rate)}/s  ETA {eta}  {sent_by(p)}")
        if self.tty:  # one line that fits, or the terminal would scroll instead of redraw
            line = line[:shutil.get_terminal_size().columns - 1]
            self.stream.write("\r\x1b[K" + line)
            self.drawn = True
            if p.finished:
                self.stream.write("\n")
                self.drawn = False
        else:
            changed = self.source is not None and p.source != self.source
            if changed or percent >= 100 * self.next_mark / PROGRESS_LINES:
                self.stream.write(line + "\n")
                while percent >= 100 * self.next_mark / PROGRESS_LINES:
                    self.next_mark += 1
        self.source = p.source
        self.stream.flush()

    def end(self):
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def sent_by(p):
    """'from 10.0.0.7:41237', or 'from 5 peers' when several send at once."""
    return f"from {p.sources} peers" if p.sources > 1 else f"from {p.source}"


def job_line(job):
    """'song.mp3 52 % 5.0 MiB/s from 5 peers', 'big.bin waiting for its turn', or
    'big.bin 10 % waiting for a free upload slot, 3 holders busy'."""
    p = job.progress
    if job.state == "waiting" or p is None:
        return f"{job.name} {'waiting for its turn' if job.state == 'waiting' else 'starting'}"
    percent = 100 * p.done / p.total if p.total else 0.0
    if p.waiting:
        return f"{job.name} {percent:.0f} % {p.waiting}"
    return f"{job.name} {percent:.0f} % {human_size(p.rate)}/s {sent_by(p)}"


def jobs_line(jobs):
    return "Downloading: " + " · ".join(job_line(job) for job in jobs)


def describe_job(job):
    """How a background download ended, in a sentence."""
    if job.state == "done":
        return describe_result(job.result)
    if job.state == "cancelled":
        return f"Stopped {job.name!r}; the partial file is kept: download it again to resume."
    message = job.error.message
    if isinstance(job.error, Ambiguous) and job.error.versions:
        message += " Option 1 numbers each version; option 2 takes the number."
    return message


def describe_result(result):
    if result.already:
        return f"Already have it: {result.path} has the same content; nothing to download."
    resumed = f", resumed at {human_size(result.resumed_from)}" if result.resumed_from else ""
    sources = ", ".join(dict.fromkeys(result.sources))
    return (f"Saved {result.path} ({human_size(result.size)}, SHA-256 verified{resumed}) "
            f"from {sources}." + describe_others(result))


def describe_others(result):
    """' Other files are shared under that name too: ... --sha256 HEX.', or ''."""
    if not result.others:
        return ""
    listed = ", ".join(f"{v['sha256'][:12]} ({human_size(v['size'])}, "
                       f"{plural(v['holders'], 'holder')})" for v in result.others)
    return (f" It is the version most hosts share ({result.sha256[:12]}); other files are "
            f"shared under that name too: {listed}. Get one with --sha256 HEX.")


def suggest_names(name, names, most=3):
    """Names a person may have meant: same letters in another case, containing, then alike."""
    names = list(dict.fromkeys(names))  # two versions of one name: suggest it once
    if name in names:
        return []
    folded = name.casefold()
    by_case = [n for n in names if n.casefold() == folded]
    containing = [n for n in names if folded in n.casefold() and n not in by_case]
    alike = difflib.get_close_matches(folded, [n.casefold() for n in names], n=most, cutoff=0.6)
    alike = [n for n in names if n.casefold() in alike and n not in by_case + containing]
    return (by_case + containing + alike)[:most]


def did_you_mean(lb, name):
    """' Did you mean: a, b?' for a name nobody shares, or '' when nothing looks like it."""
    try:
        close = suggest_names(name, [f["name"] for f in lb.files()["files"]])
    except LBClientError:
        return ""
    return f" Did you mean: {', '.join(close)}?" if close else ""


def resolve_peer_address(text):
    """What a person typed as a peer -> "ip[:port]" as the load balancer knows peers.

    Raises ValueError with a sentence for text that is not an address or a known host.
    """
    host, port = parse_address(text)
    try:  # IPv4 first: "localhost" is 127.0.0.1 to the load balancer, seldom ::1
        infos = sorted(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM),
                       key=lambda info: info[0] != socket.AF_INET)
        ip = infos[0][4][0]
    except socket.gaierror:
        raise ValueError(f"There is no host called {host!r}; give an address like "
                         "192.168.1.5:41237 (the list of peers shows them).") from None
    return ip if port is None else format_address(ip, port)


def resolve_sha256(lb, name, text):
    """A full SHA-256 from what a person typed: the whole hash, or its first characters."""
    text = text.strip().lower()
    if re.fullmatch(r"[0-9a-f]{64}", text):
        return text
    if not re.fullmatch(r"[0-9a-f]+", text):
        raise DownloadError(f"{text!r} is not a SHA-256 or the start of one (hex digits).")
    if len(text) < 4:
        raise DownloadError(f"Give at least 4 hex digits of the SHA-256, not {len(text)}.")
    matches = {f["sha256"] for f in lb.files(name)["files"]
               if f["name"] == name and f["sha256"].startswith(text)}
    if not matches:
        raise DownloadError(f"No version of {name!r} has a SHA-256 starting with {text}; "
                            f"'peer.py list {name}' shows them.")
    if len(matches) > 1:
        raise DownloadError(f"{len(matches)} versions of {name!r} start with {text}; give "
                            "more of the SHA-256.")
    return matches.pop()


def unfinished_downloads(lb, root):
    """[(Unfinished, the file on the network or None)] for the partial files in ``root``."""
    unfinished = find_unfinished(root)
    found = []
    for u in unfinished:
        try:
            versions = [f for f in lb.files(u.name)["files"]
                        if f["name"] == u.name and f["sha256"].startswith(u.sha_prefix)]
        except LBClientError:
            versions = []
        found.append((u, versions[0] if versions else None))
    return found


def describe_unfinished(u, file):
    """'song.mp3  45.2 %  (5.4 MiB of 12.0 MiB)', or its bytes when nobody shares it now."""
    if file is None:
        return f"{u.name}  {human_size(u.done)} so far (nobody shares it right now)"
    percent = 100 * u.done / file["size"] if file["size"] else 100.0
    return f"{u.name}  {percent:.1f} %  ({human_size(u.done)} of {human_size(file['size'])})"


def unfinished_lines(title, found):
    """``title`` and a line per (Unfinished, file) in ``found``; none when nothing is."""
    return [title] + [f"  {describe_unfinished(u, file)}" for u, file in found] if found else []


def print_unfinished(out, lb, root):
    title = f"Unfinished downloads in {shown_path(root)}/ ('peer.py clean' deletes them):"
    for line in unfinished_lines(title, unfinished_downloads(lb, root)):
        out.write(line + "\n")


def clean_unfinished(root):
    """Delete the partial downloads in ``root`` that are not running; says what it did."""
    unfinished = find_unfinished(root)
    removed = [u for u in unfinished if remove_unfinished(u)]
    freed = sum(u.done for u in removed)
    kept = len(unfinished) - len(removed)
    text = (f"Deleted {plural(len(removed), 'unfinished download')} ({human_size(freed)}) "
            f"from {shown_path(root)}/.")
    return text + (f" {kept} still running, kept." if kept else "")


def print_files(out, lb, query, choices=None):
    """The files on the network whose names contain ``query``; numbered into ``choices``."""
    answer = lb.files(query)
    files = answer["files"]
    if not files:
        out.write("No shared file matches.\n" if query else "Nobody shares anything yet.\n")
        return
    rows = [(f["name"], human_size(f["size"]), f["holders"], f["sha256"][:12]) for f in files]
    headers = ("name", "size", "holders", "sha256")
    if choices is not None:
        numbers = choices.show((f["name"], f["sha256"]) for f in files)
        rows = [(f"{n})", *row) for n, row in zip(numbers, rows)]
        headers = ("#", *headers)
    out.write(table(rows, headers) + "\n")
    if answer.get("truncated"):
        out.write(f"(only the first {len(files)} shown; add text to narrow the list)\n")


def print_status(out, lb, me=None):
    status = lb.status()
    peers = status["peers"]
    out.write(f"Load balancer {lb.address} · policy {status['policy']} · "
              f"{len(peers)} peer(s)\n")
    if hasattr(lb, "describe"):  # a standby list
        out.write(f"Load balancers of the list: {lb.describe()}\n")
    if not peers:
        return
    rows = []
    names_width = max(STATUS_NAMES_MIN, shutil.get_terminal_size().columns - STATUS_OTHER_COLUMNS)
    for p in peers:
        who = " ".join(x for x in (p.get("name"), format_address(p["host"], p["port"])) if x)
        files = f"{len(p['files'])}  {fit_names(p['files'], names_width)}".rstrip()
        downloading = ", ".join(f"{d['name']} {percent(d['done'], d['size'])} %"
                                for d in p.get("partial", []))
        if downloading:  # a partial holder: shares the pieces it has verified
            files += f" · downloading {downloading}"
        rows.append((who + (" (me)" if p["id"] == me else ""), files,
                     p["active"], p["served"], f"{p['last_seen_s']:.0f} s ago"))
    out.write(table(rows, ("peer", "files", "active", "served", "last seen")) + "\n")


# ---------------------------------------------------------------------------
# The menu


MENU = """ 1) List files on the network
 2) Download a file
 3) Show load balancer info
 4) Show my shared files and transfers
 0) Quit"""


class Menu:
    """The numbered menu over a started Peer, reading lines from ``read``."""

    def __init__(self, peer, out=sys.stdout, read=None, log_path=None,
                 parallel=DEFAULT_PARALLEL):
        self.peer, self.out, self.log_path = peer, out, log_path
        self.read = read or LineReader(self.network_names).read
        self.choices = Choices()  # the files numbered last: option 2 takes their numbers
        self.queue = DownloadQueue(self.run_job, parallel)

    def network_names(self):
        """Every name on the network (for Tab), or none when the load balancer is away."""
        try:
            return list(dict.fromkeys(f["name"] for f in self.peer.lb.files()["files"]))
        except LBClientError:
            return []

    def say(self, text=""):
        self.out.write(text + "\n")
        self.out.flush()

    def banner(self):
        peer = self.peer
        lbs = "load balancers" if len(peer.memberships) > 1 else "load balancer"
        self.say(f"Peer {peer.title} · sharing {describe_sharing(peer)} · {lbs} "
                 f"{peer.describe_lb()}")
        self.say(describe_openness(peer))
        if peer.lb_problem:
            self.say(f"Note: {peer.lb_problem}")
        if self.log_path:
            self.say(f"Log: {self.log_path}")
        if peer.shares_folder_with_another:
            self.say(f"Note: another peer on this machine shares {peer.shared} too; give each "
                     "peer its own --shared and --downloads folders.")

    def run(self):
        """The menu until the person quits; running downloads are stopped on the way out
        (their partial files stay, to resume)."""
        try:
            self.loop()
        finally:
            self.queue.cancel_all()
            self.queue.wait(JOBS_STOP_WAIT_S)

    def loop(self):
        self.banner()
        self.offer_resume()
        actions = {"1": self.list_files, "2": self.download, "3": self.show_status,
                   "4": self.show_mine}
        while True:
            self.say()
            self.report()
            self.say(MENU)
            try:
                choice = self.read("Choose 0-4: ").strip()
            except EOFError:
                self.say()
                self.finish_downloads()
                return
            except KeyboardInterrupt:
                self.say()
                choice = "0"
            if choice.casefold() in ("0", "q", "quit", "exit"):
                if self.may_quit():
                    return
                continue
            action = actions.get(choice)
            if action is None:
                self.say("Type a number from 0 to 4 and press Enter." if choice
                         else "Nothing typed: type a number from 0 to 4 and press Enter.")
                continue
            try:
                if choice in ("1", "3") and self.peer.lb_problem:
                    raise Unreachable(self.peer.lb_problem)
                action()
            except Unreachable as e:
                self.say(f"{e.message} Options 2 (naming a peer), 4 and 0 still work; this peer "
                         "registers again by itself as soon as the load balancer is back (to "
                         f"start one: python load_balancer.py --port {self.peer.lb.port}).")
            except LBClientError as e:
                self.say(e.message)
            except Cancelled:
                self.say("Cancelled.")

    def offer_resume(self):
        """At start: offer to resume the unfinished downloads that someone shares now."""
        found = [(u, f) for u, f in unfinished_downloads(self.peer.lb, self.peer.downloads)
                 if f is not None]
        if not found:
            return
        self.say(f"{plural(len(found), 'unfinished download')} from before:")
        for u, file in found:
            self.say(f"  {describe_unfinished(u, file)}")
        try:
            answer = self.ask("Resume now? [Y/n] ")
        except Cancelled:
            return
        if answer.casefold() in ("", "y", "yes"):
            for _, file in found:
                self.fetch(file["name"], file["sha256"], None)

    def may_quit(self):
        """Quit at once, or, while downloads run or others download from us, when the
        person confirms."""
        downloads, uploads = len(self.queue.active()), len(self.peer.server.uploads)
        running = []
        if downloads:
            running.append(f"{plural(downloads, 'download')} running (stopped now, they "
                           "resume next time)")
        if uploads:
            running.append(f"{plural(uploads, 'upload')} to other peers in progress (they "
                           "will continue from another holder, if any)")
        if not running:
            return True
        try:
            answer = self.ask(f"{' and '.join(running)}. Quit anyway? [y/N] ")
        except Cancelled:
            return True
        return answer.casefold() in ("y", "yes")

    def ask(self, prompt, name=False):
        """A line from the person; Ctrl-C or Ctrl-D (end of input) cancels the option.

        A ``name`` question completes names on the network with Tab and is kept in the
        history (Up arrow); other answers are not.
        """
        try:
            return self.read(prompt, complete=name, remember=name).strip()
        except (KeyboardInterrupt, EOFError):
            self.say()
            raise Cancelled from None

    def list_files(self):
        query = self.ask("Filter (blank for all): ", name=True)
        print_files(self.out, self.peer.lb, query, self.choices)
        if len(self.choices):
            self.say("Option 2 takes a number from this list.")
        self.out.flush()

    def show_status(self):
        print_status(self.out, self.peer.lb, self.peer.peer_id)
        self.out.flush()

    def show_mine(self):
        peer = self.peer
        peer.refresh_now()
        files = peer.index.files()
        self.say(f"Sharing {describe_sharing(peer)}:")
        if files:
            self.say(table([(f.name, human_size(f.size), f.sha256[:12]) for f in files],
                           ("name", "size", "sha256")))
        pending = peer.index.pending()
        if pending:
            self.say(f"({pending} more being hashed)")
        uploads = peer.server.uploads.active()
        self.say(f"Uploads in progress: {len(uploads)}")
        for u in uploads:
            self.say(f"  {upload_line(u)}")
        jobs = self.queue.active()
        if jobs:
            self.say(f"Downloads running or waiting: {len(jobs)}")
            for job in jobs:
                self.say(f"  {job_line(job)}")
        self.say(f"Downloads this session: {len(peer.downloads_done)}")
        for line in peer.downloads_done:
            self.say(f"  {line}")
        running = {job.name for job in jobs}
        unfinished = [(u, file) for u, file in unfinished_downloads(peer.lb, peer.downloads)
                      if u.name not in running]
        title = (f"Unfinished downloads: {len(unfinished)} (option 2 resumes one; "
                 "'peer.py clean' deletes them)")
        for line in unfinished_lines(title, unfinished):
            self.say(line)

    def download(self):
        numbers = f" or number (1-{len(self.choices)})" if len(self.choices) else ""
        typed = self.ask(f"File name{numbers}, Tab completes: ", name=True)
        name, sha256 = self.choices.pick(typed) or (typed, None)
        if not name:
            self.say("No name given; option 1 lists the files on the network.")
            return
        if is_folder(name):
            self.fetch(name, None, None)
            return
        try:
            check_name(name)
        except BadName as e:
            self.say(f"{e} Option 1 lists the files on the network.")
            return
        if self.peer.lb_problem:
            self.download_directly(name)
            return
        versions = self.on_network(name)
        if versions is None:
            name, sha256 = self.meant(name)
            if name is None:
                return
            versions = self.on_network(name)
            if versions is None:
                return
        if sha256 is not None:
            versions = [v for v in versions if v["sha256"] == sha256]
        mine = (self.peer.index.find_on_disk(versions[0]["sha256"]) if len(versions) == 1
                else None)
        if mine is not None:
            self.say(f"Already have it: {mine.path} has the same content; nothing to download.")
            return
        where = self.ask("Peer address (blank: the least-loaded holder): ")
        if where:
            try:
                where = resolve_peer_address(where)
            except ValueError as e:
                self.say(str(e))
                return
        if sha256 is None and len(versions) > 1 and not where:
            self.choose_version(name, versions, None)
        else:
            self.fetch(name, sha256, where or None)

    def download_directly(self, name):
        """No load balancer: the person names the peer, which is asked directly."""
        where = self.ask("No load balancer answers, so name the peer to download from "
                         "(HOST:PORT): ")
        try:
            where = resolve_peer_address(where)
            direct_source(where, self.peer.members)
        except ValueError as e:
            self.say(str(e))
            return
        self.fetch(name, None, where)

    def fetch(self, name, sha256, where):
        """Queue the download and come back to the menu at once."""
        _, again = self.queue.submit(name, sha256, where)
        if again:
            self.say(f"{name!r} is being downloaded already; option 4 shows how far it is.")
        else:
            self.say(f"Downloading {name!r} in the background; option 4 shows how far it is.")

    def run_job(self, job, on_progress):
        """One queued download (in its own thread)."""
        if is_folder(job.name):
            return self.run_folder(job, on_progress)
        direct = (direct_source(job.peer, self.peer.members)
                  if job.peer and self.peer.lb_problem else None)
        result = self.peer.downloader(on_progress, direct).get(job.name, job.sha256, job.peer)
        if not result.already:
            self.peer.downloads_done.append(describe_result(result))
        return result

    def run_folder(self, job, on_progress):
        """A queued folder: every file under it (``folder.py``), one progress."""
        try:
            results, failures = get_folder(self.peer.lb, job.name, self.peer.downloader,
                                           on_progress)
        except FolderError as e:
            raise DownloadError(str(e)) from None
        self.peer.downloads_done.extend(describe_result(r) for r in results if not r.already)
        if failures:
            raise DownloadError(f"{len(failures)} of the files under {job.name!r} failed: "
                                + "; ".join(f"{n}: {m}" for n, m in failures[:3]))
        return folder_result(job.name, self.peer.downloads, results)

    def report(self):
        """What ended since the menu was last shown, and a line of what is still running."""
        for job in self.queue.take_ended():
            self.say(describe_job(job))
        active = self.queue.active()
        if active:
            self.say(cut(jobs_line(active), shutil.get_terminal_size().columns - 1))

    def finish_downloads(self):
        """End of input: let the running downloads finish (Ctrl-C stops them)."""
        active = self.queue.active()
        if active:
            self.say(f"Waiting for {plural(len(active), 'download')} to finish (Ctrl-C stops "
                     "them; they resume next time).")
            try:
                self.queue.wait()
            except KeyboardInterrupt:
                self.say()
                return
            self.report()

    def on_network(self, name):
        """The versions of ``name`` on the network (a truncated listing may miss them: []),
        or None when nobody shares it."""
        answer = self.peer.lb.files(name)
        versions = [f for f in answer["files"] if f["name"] == name]
        return versions if versions or answer.get("truncated") else None

    def meant(self, name):
        """Nobody shares ``name``: offer the names that look like it, numbered.

        Returns (name, None) for the one chosen, or (None, None).
        """
        close = suggest_names(name, self.network_names())
        if not close:
            self.say(f"Nobody shares {name!r} right now. Option 1 lists the files on the "
                     "network.")
            return None, None
        self.say(f"Nobody shares {name!r} right now. Did you mean:")
        for n in self.choices.show((c, None) for c in close):
            self.say(f" {n}) {close[n - 1]}")
        picked = self.choices.pick(self.ask(f"Which one (1-{len(close)}, blank for none): "))
        if picked is None:
            self.say("Nothing downloaded.")
            return None, None
        return picked

    def choose_version(self, name, versions, where):
        self.say(f"Several different files are shared as {name!r}:")
        for i, v in enumerate(versions, 1):
            self.say(f" {i}) {human_size(v['size'])}, SHA-256 {v['sha256'][:16]}…, "
                     f"{v['holders']} holder(s)")
        choice = self.ask(f"Which one (1-{len(versions)}, blank to cancel): ")
        if choice.isdigit() and choice.isascii() and 1 <= int(choice) <= len(versions):
            self.fetch(name, versions[int(choice) - 1]["sha256"], where)
        else:
            self.say("Nothing downloaded." if not choice else
                     f"There is no choice {choice!r}; nothing downloaded.")


# ---------------------------------------------------------------------------
# Command line


COMMANDS = ("menu", "serve", "get", "list", "status", "clean", "secret", "url")
VALUE_OPTIONS = ("--lb", "--network", "--downloads", "--host", "--port", "--advertise",
                 "--shared", "--upload-slots", "--upload-limit", "--sha256", "--from", "--name",
                 "--parallel", "--secret-file", "--tls-cert", "--tls-key", "--tls-ca",
                 "--expires")
LISTENING_OPTIONS = ("--host", "--port", "--advertise", "--upload-slots", "--upload-limit")
SERVING_OPTIONS = ("--shared", "--name", "--parallel", "--no-lb-start", "--no-reshare")


def option_groups():
    """(--lb and --verbose, --downloads, where the file server listens, the serving peer's
    options): each command takes only the groups that mean something to it."""
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--lb", default=os.environ.get("P2P_LB") or None,
                        metavar="HOST:PORT[,HOST:PORT...]",
                        help="the load balancer, or several of one network as standbys (env "
                             "P2P_LB; default: the one announced on the local network, else "
                             f"{DEFAULT_LB})")
    client.add_argument("--network", type=network_arg,
                        default=os.environ.get("P2P_NETWORK", discovery.DEFAULT_NETWORK),
                        metavar="NAME", help="which load balancer to look for on the local "
                        f"network (env P2P_NETWORK, default {discovery.DEFAULT_NETWORK})")
    client.add_argument("--verbose", action="store_true", help="log to standard error")
    add_member_options(client)
    downloads = argparse.ArgumentParser(add_help=False)
    downloads.add_argument("--downloads", metavar="DIR",
                           help="folder to download into, its verified files shared too "
                                "(default: downloads/ beside peer.py; created if missing)")
    listening = argparse.ArgumentParser(add_help=False)
    listening.add_argument("--host", default="0.0.0.0",
                           help="address the file server listens on")
    listening.add_argument("--port", type=port_number, default=0,
                           help="file server port (0: any free one)")
    listening.add_argument("--advertise", metavar="HOST",
                           help="the address other peers should use to reach this one "
                                "(default: what the load balancer sees)")
    listening.add_argument("--upload-slots", type=int, default=DEFAULT_UPLOAD_SLOTS,
                           metavar="N", help=f"uploads served at once (default "
                                             f"{DEFAULT_UPLOAD_SLOTS})")
    listening.add_argument("--upload-limit", type=rate_arg, default=0, metavar="RATE",
                           help="upload speed limit of this peer (all uploads together) in "
                                "bytes/s, like 500K or 2M")
    serving = argparse.ArgumentParser(add_help=False)
    serving.add_argument("--no-reshare", dest="reshare", action="store_false",
                         help="keep downloads private (by default a verified download is "
                              "shared too)")
    serving.add_argument("--no-lb-start", dest="lb_start", action="store_false",
                         help="never start a load balancer (by default one is started, now or "
                              "when it is gone, if none answers at a --lb on this machine)")
    serving.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, metavar="N",
                         help=f"downloads the menu runs at once (default {DEFAULT_PARALLEL}; "
                              "the others wait their turn)")
    serving.add_argument("--name", help="this peer's name, shown beside its address "
                                        "(default: the host name)")
    serving.add_argument("--shared", metavar="DIR",
                         help="folder to share (default: shared/ beside peer.py)")
    return client, downloads, listening, serving


def duration_arg(text):
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def wait_arg(text):
    """--wait: a duration, or 0 to give up at once."""
    return 0 if text.strip().lower() in ("0", "0s") else duration_arg(text)


def network_arg(text):
    try:
        return discovery.check_network(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def rate_arg(text):
    try:
        return parse_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def command_first(argv):
    """``--lb X status`` -> ``status --lb X``; ``help [COMMAND]`` -> its --help; no command
    at all -> the menu."""
    if argv and argv[0] == "help":
        return [*argv[1:2], "--help"]
    if argv and argv[0] in ("-h", "--help", "--version"):
        return argv
    position, skip = None, False
    for i, word in enumerate(argv):
        if skip:  # the value of the option before
            skip = False
        elif word in VALUE_OPTIONS:
            skip = True
        elif word in COMMANDS:
            position = i
            break
    if position is None:
        return ["menu", *argv]
    return [argv[position], *argv[:position], *argv[position + 1:]]


def parse_args(argv):
    client, downloads, listening, serving = option_groups()
    parser = argparse.ArgumentParser(
        prog="peer.py", description="A peer of the P2P file sharing network.",
        epilog="With no command, runs the interactive menu; 'peer.py COMMAND -h' lists the "
               "options of each.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    peer = [client, downloads, listening, serving]
    commands.add_parser("menu", parents=peer, help="the interactive peer (default)")
    commands.add_parser("serve", parents=peer, help="share and serve until Ctrl-C or SIGTERM")
    get = commands.add_parser("get", parents=[client, downloads, listening],
                              help="download files, serving their verified pieces to other "
                                   "peers meanwhile, then exit")
    get.add_argument("names", nargs="+", metavar="NAME",
                     help="the file's name on the network (see 'list'); several download "
                          "one after another")
    get.add_argument("--sha256", metavar="HEX",
                     help="which version, when several files share the name (4 or more of "
                          "its first hex digits do)")
    get.add_argument("--from", dest="source", metavar="HOST[:PORT]",
                     help="ask this peer instead of the least-loaded holder")
    get.add_argument("--wait", type=wait_arg, default=GET_WAIT_S, metavar="DURATION",
                     help="give up after waiting this long (like 90s or 10m) with nothing "
                          "arriving, every holder busy or none online; the partial file is "
                          f"kept (default: {GET_WAIT_S // 60}m; 0: at once)")
    listing = commands.add_parser("list", parents=[client], help="the files on the network")
    listing.add_argument("text", nargs="?", default="", help="only names containing this")
    commands.add_parser("status", parents=[client, downloads],
                        help="the load balancer's view of the peers, and my unfinished downloads")
    commands.add_parser("clean", parents=[client, downloads],
                        help="delete my unfinished downloads (not those running)")
    commands.add_parser("secret", help="print a new network secret (save it to a file and "
                                       "give it to every member with --secret-file)")
    url = commands.add_parser("url", parents=[client],
                              help="print a signed, time-limited URL of a holder of a file, "
                                   "for curl, wget or a browser")
    url.add_argument("name", help="the file's name on the network ('/': the load balancer's "
                                  "page, for a browser)")
    url.add_argument("--expires", type=duration_arg, default=DEFAULT_URL_LIFETIME_S,
                     metavar="DURATION", help="how long the URL works, like 90s, 10m, 2h or "
                                              "7d (default 1h, at most 7d)")
    url.add_argument("--sha256", metavar="HEX", help="which version, as for 'get'")
    url.add_argument("--from", dest="source", metavar="HOST[:PORT]",
                     help="a URL of this peer instead of the least-loaded holder")
    argv = command_first(list(sys.argv[1:] if argv is None else argv))
    if argv[0] in ("get", "list", "status", "clean", "url"):
        others = SERVING_OPTIONS if argv[0] == "get" else SERVING_OPTIONS + LISTENING_OPTIONS
        misplaced = [w.split("=")[0] for w in argv if w.split("=")[0] in others]
        if misplaced:
            owners = "'menu', 'serve' and 'get'" if misplaced[0] in LISTENING_OPTIONS \
                else "'menu' and 'serve'"
            parser.error(f"{misplaced[0]} is an option of {owners}, not of '{argv[0]}'")
        if argv[0] == "list" and any(w.split("=")[0] == "--downloads" for w in argv):
            parser.error(f"--downloads is not an option of '{argv[0]}'")
    args = parser.parse_args(argv)
    if args.command == "get" and args.sha256 and len(args.names) > 1:
        parser.error("--sha256 chooses the version of one file; give one NAME with it")
    if args.command == "secret":
        return args
    args.members = members_from_args(parser, args)
    args.discover = args.lb is None  # neither --lb nor P2P_LB: look on the local network
    try:
        args.lbs = parse_lb_list(args.lb or DEFAULT_LB)
    except ValueError as e:
        parser.error(f"--lb: {e}")
    args.lb_host, args.lb_port = args.lbs[0]
    if getattr(args, "downloads", "") is None:
        args.downloads = os.path.join(TOP, "downloads")
    elif getattr(args, "downloads", None) and os.path.exists(args.downloads) \
            and not os.path.isdir(args.downloads):
        parser.error(f"--downloads {args.downloads}: that is a file, not a folder")
    if args.command in ("menu", "serve"):
        if args.name is None:
            args.name = socket.gethostname()
        if not 0 < len(args.name) <= MAX_NAME_CHARS or not args.name.isprintable():
            parser.error(f"--name must be 1 to {MAX_NAME_CHARS} printable characters")
        if args.upload_slots < 1:
            parser.error("--upload-slots must be at least 1")
        if args.parallel < 1:
            parser.error("--parallel must be at least 1")
        if args.shared is None:
            args.shared = os.path.join(TOP, "shared")
        elif os.path.exists(args.shared) and not os.path.isdir(args.shared):
            parser.error(f"--shared {args.shared}: that is a file, not a folder")
        elif not os.path.isdir(args.shared):
            parser.error(f"--shared {args.shared}: there is no such folder")
    return args


def log_path_for(name):
    """One log file per peer name (and user), so restarts do not pile files up."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return os.path.join(tempfile.gettempdir(), f"p2p-peer-{user_tag()}-{safe}.log")


def configure_logging(args, log_path=None):
    """The menu logs to a small rotated file (never over the menu) unless --verbose; serve
    to stderr."""
    if log_path and not args.verbose:
        handler = logging.handlers.RotatingFileHandler(
            log_path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
        logging.basicConfig(handlers=[handler], level=logging.WARNING, format=LOG_FORMAT)
    else:
        logging.basicConfig(stream=sys.stderr, format=LOG_FORMAT,
                            level=logging.INFO if args.verbose else logging.WARNING)


def say_on_stderr(text):
    print(text, file=sys.stderr, flush=True)


def fail(message):
    print(f"peer.py: {message}", file=sys.stderr)
    return 1


def hold_signals():
    """From now on Ctrl-C, SIGTERM and SIGHUP (a closed window sends several) cannot cut
    the clean-up short."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def raise_terminate(signum, frame):
    hold_signals()
    raise Terminate()


def goodbye(peer, unregistered):
    """One line on the way out; the terminal may be gone already (a closed window)."""
    if unregistered:
        text = f"Bye: {peer.title} left the network; the load balancer has forgotten it."
    else:
        text = (f"Bye: {peer.title} stopped; the load balancer did not hear it leave and "
                "forgets it after three missed heartbeats.")
    try:
        print(text, flush=True)
    except OSError:
        pass


def run_peer(args, interactive):
    log_path = log_path_for(args.name)
    configure_logging(args, log_path if interactive else None)
    signal.signal(signal.SIGTERM, raise_terminate)
    if hasattr(signal, "SIGHUP"):  # the terminal window was closed: leave as cleanly
        signal.signal(signal.SIGHUP, raise_terminate)
    find_or_start_load_balancer(args, say_on_stderr)
    peer = Peer(lb_client_for(args), args.shared,
                args.downloads, args.host, args.port, args.advertise, args.upload_slots,
                args.upload_limit, args.name, reshare=args.reshare, members=args.members,
                **membership_hooks(args))
    try:
        peer.start()
        if interactive:
            Menu(peer, log_path=log_path, parallel=args.parallel).run()
        else:
            print(f"listening on {format_address(args.host, peer.port)}", flush=True)
            print(f"sharing {describe_sharing(peer)} as {peer.title} · load balancer "
                  f"{peer.describe_lb()}", flush=True)
            print(describe_openness(peer), flush=True)
            if peer.lb_problem:
                print(f"peer.py: {peer.lb_problem} Retrying every {RECONNECT_S:g} s.",
                      file=sys.stderr, flush=True)
            if peer.shares_folder_with_another:
                print(f"peer.py: another peer shares {peer.shared} too.", file=sys.stderr)
            threading.Event().wait()
    except (KeyboardInterrupt, Terminate):
        pass
    finally:
        hold_signals()
        unregistered = peer.stop()
        if peer.server is not None:  # it did start
            goodbye(peer, unregistered)
        if interactive and os.path.exists(log_path) and os.path.getsize(log_path) == 0:
            os.unlink(log_path)  # nothing went wrong: no log to keep
    return 0


def run_get(args):
    """Download each name in turn, a peer serving their verified pieces meanwhile (when
    there is a load balancer to register with); exit 1 if any failed, 130 on Ctrl-C."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO if args.verbose else logging.ERROR,
                        format=LOG_FORMAT)
    lb = lb_client_for(args)
    try:
        source = resolve_peer_address(args.source) if args.source else None
        via = direct_source(source, args.members) if source and not any(
            lb_answers(host, port) for host, port in args.lbs) else lb
    except ValueError as e:
        return fail(str(e))
    peer = None
    try:
        if via is lb:
            peer = Peer(lb_client_for(args), None,
                        args.downloads, args.host, args.port, args.advertise,
                        upload_slots=args.upload_slots, upload_limit=args.upload_limit,
                        reshare=False, members=args.members).start()
            log.info("serving verified pieces on %s", format_address(args.host, peer.port))
        return get_each(args, lb, via, source, peer)
    except (KeyboardInterrupt, Terminate):
        print("peer.py: interrupted; the partial file is kept: run the same command to "
              "resume.", file=sys.stderr)
        return 130
    finally:
        if peer is not None:
            hold_signals()
            peer.stop()


def get_each(args, lb, via, source, peer):
    """Download each name of ``args.names`` in turn, ``peer`` (if any) sharing their
    verified pieces meanwhile; the exit status."""
    failed = 0
    for name in args.names:
        if is_folder(name):
            failed += get_folder_files(args, lb, via, source, peer, name)
            continue
        progress = ProgressPrinter(sys.stderr) if sys.stderr.isatty() else None
        try:
            try:
                sha256 = resolve_sha256(lb, name, args.sha256) if args.sha256 else None
                downloader = peer.downloader(progress, wait_s=args.wait) if peer is not None \
                    else Downloader(via, args.downloads, on_progress=progress,
                                    members=args.members, wait_s=args.wait)
                result = downloader.get(name, sha256, source)
            finally:
                if progress:
                    progress.end()
        except (DownloadError, LBClientError) as e:
            failed += 1
            message = e.message
            if isinstance(e, NotFound) and via is lb and not args.source:
                message += did_you_mean(lb, name)  # names on the network get no suggestion
            if isinstance(e, Ambiguous):
                message += " Versions: " + ", ".join(
                    f"{v['sha256']} ({human_size(v['size'])})" for v in e.versions)
            fail(message)
            continue
        print(describe_result(result), flush=True)
    return 1 if failed else 0


def get_folder_files(args, lb, via, source, peer, folder):
    """``get FOLDER/``: every file under it (``folder.py``), one progress; 1 if any failed."""
    if via is not lb:
        return fail(f"Downloading the folder {folder!r} needs the load balancer's list of "
                    "files; none answers.")
    progress = ProgressPrinter(sys.stderr) if sys.stderr.isatty() else None

    def make_downloader(on_progress):
        if peer is not None:
            return peer.downloader(on_progress, wait_s=args.wait)
        return Downloader(via, args.downloads, on_progress=on_progress, members=args.members,
                          wait_s=args.wait)
    try:
        results, failures = get_folder(lb, folder, make_downloader, progress, source)
    except (FolderError, LBClientError) as e:
        return fail(str(e) if isinstance(e, FolderError) else e.message)
    finally:
        if progress:
            progress.end()
    for result in results:
        print(describe_result(result), flush=True)
    for name, message in failures:
        fail(f"{name}: {message}")
    return 1 if failures else 0


def direct_source(source, members):
    """The named peer, asked directly: there is no load balancer to ask."""
    host, port = parse_address(source)
    if port is None:
        raise ValueError(f"No load balancer answers, so give the peer's port too: "
                         f"--from {host}:PORT.")
    return DirectSource(host, port, members=members)


def run_url(args, lb):
    """Print a URL of a holder of the file: signed and time-limited on a network with a secret.
    ``url /``: a link to the load balancer's page, for a browser."""
    if args.name == "/":
        return print_page_url(args, lb)
    sha256 = resolve_sha256(lb, args.name, args.sha256) if args.sha256 else None
    source = resolve_peer_address(args.source) if args.source else None
    try:
        pick = lb.pick(args.name, sha256=sha256, peer=source)
    except NotFound as e:
        raise DownloadError(e.message + did_you_mean(lb, args.name)) from None
    # Only the address is wanted: the holder counts the download itself while it runs.
    holder = pick.leases[0]
    lb.end(holder, "cancelled")
    members = args.members
    url = f"{members.scheme}://{holder.address}{url_for_name(pick.file.name)}"
    if members.secret is not None:
        url += "?" + members.secret.url_query(pick.file.name, args.expires)
    else:
        print("peer.py: this network has no secret: the URL needs no signature and does not "
              "expire.", file=sys.stderr)
    if members.tls is not None:
        tls = members.tls
        print(f"peer.py: the network uses TLS: curl --cert {tls.cert} --key {tls.key} "
              f"--cacert {tls.ca or tls.cert} --resolve {NETWORK_CERT_NAME}:{holder.port}:"
              f"{holder.host} -O 'https://{NETWORK_CERT_NAME}:{holder.port}"
              f"{url[url.index('/files/'):]}' (with a certificate made as the README says)",
              file=sys.stderr)
    print(url)
    return 0


def print_page_url(args, lb):
    """The load balancer's page, signed on a network with a secret (a browser cannot sign)."""
    lb.status()  # it answers, and proves it is a member
    url = f"{args.members.scheme}://{lb.address}/"
    if args.members.secret is not None:
        url += "?" + args.members.secret.url_query("/", args.expires)
    print(url)
    return 0


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_terminate)
    if args.command == "secret":
        print(new_secret())
        return 0
    try:
        if args.command in ("menu", "serve"):
            return run_peer(args, interactive=args.command == "menu")
        if args.command == "clean":
            print(clean_unfinished(args.downloads))
            return 0
        if args.discover and not find_on_lan(args, say_on_stderr):
            fallback = format_address(args.lb_host, args.lb_port)
            say_on_stderr(f"No load balancer of network {args.network!r} announced itself on "
                          f"the local network; asking {fallback}.")
        if args.command == "get":
            return run_get(args)
        lb = lb_client_for(args)
        if args.command == "url":
            return run_url(args, lb)
        if args.command == "list":
            print_files(sys.stdout, lb, args.text)
        else:
            print_unfinished(sys.stdout, lb, args.downloads)
            print_status(sys.stdout, lb)
        return 0
    except (PeerError, LBClientError, DownloadError) as e:
        return fail(str(e))
    except ValueError as e:
        return fail(str(e))
    except (KeyboardInterrupt, Terminate):
        print("peer.py: interrupted", file=sys.stderr)
        return 130

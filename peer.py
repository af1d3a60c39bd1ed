"""A peer: shares its ``shared/`` folder, downloads into ``downloads/``, and has a menu.

``python peer.py`` starts the interactive peer: a threaded file server over
``shared/`` (and, once verified, what it downloaded; see ``sharing.py``), a
member of the load balancer's registry (register, heartbeat carrying its
current uploads and, when they changed, its files; register again when the
load balancer forgot it; unregister on exit), a downloader (``download.py``)
and the numbered menu. When nothing answers at the load balancer address and
that address is on this machine, the peer starts ``load_balancer.py`` as a
background process of its own, which exits by itself once no peer has been
registered for a minute.

Subcommands, for scripts and tests (``--help`` on each)::

    python peer.py [menu]        the interactive peer (default)
    python peer.py serve         the same peer without the menu, until Ctrl-C / SIGTERM
    python peer.py get NAME      download one file, then exit
    python peer.py list [TEXT]   the files on the network
    python peer.py status        the load balancer's view of every peer
    python peer.py secret        print a new network secret
    python peer.py url NAME      a signed, time-limited URL of a holder, for curl

A server's first line on standard output is ``listening on HOST:PORT``. Exit
status is 0 on success, 1 with a one-line reason on standard error otherwise,
130 after Ctrl-C.
"""

import argparse
import difflib
import errno
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from download import DownloadError, Downloader
from httpkit import BadName, check_name, format_address, parse_address
from load_balancer import (DEFAULT_PORT, LBClient, LBClientError, LBUnauthorized, LBUnreachable,
                           add_member_options, members_from_args, port_number)
from members import (DEFAULT_URL_LIFETIME_S, NETWORK_CERT_NAME, OPEN, new_secret,
                     parse_duration)
from sharing import DEFAULT_UPLOAD_SLOTS, FileServer, ShareIndex, parse_rate, url_for_name

try:
    import fcntl
    import termios
except ImportError:  # Windows: no folder lock warning, no flushing of keys typed ahead
    fcntl = termios = None

log = logging.getLogger("p2p.peer")

HERE = os.path.dirname(os.path.abspath(__file__))
LB_SCRIPT = os.path.join(HERE, "load_balancer.py")
DEFAULT_LB = f"127.0.0.1:{DEFAULT_PORT}"
AUTO_LB_IDLE_EXIT_S = 60  # an auto-started load balancer exits after this long without peers
LB_START_TIMEOUT_S = 10.0  # wait this long for an auto-started load balancer to answer
LB_PROBE_TIMEOUT_S = 1.0
RECONNECT_S = 3.0  # retry a load balancer that does not answer this often
INITIAL_HASH_WAIT_S = 3.0  # hash this long before the first registration; the rest follows
UNREGISTER_TIMEOUT_S = 2.0
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
PROGRESS_LINES = 4  # plain progress lines when output is not a terminal (25 %, 50 %, ...)
FOLDER_LOCK_NAME = ".p2p-peer.lock"  # held by the peer sharing the folder (a dotfile: unshared)


class PeerError(Exception):
    """Something the person has to fix (a port in use, a folder that is not one)."""


class Terminate(BaseException):
    """SIGTERM: leave whatever we are doing and shut down cleanly."""


class Cancelled(Exception):
    """Ctrl-C at a question of the menu: back to the menu."""


# ---------------------------------------------------------------------------
# Finding or starting the load balancer


def lb_answers(host, port, timeout=LB_PROBE_TIMEOUT_S):
    try:
        with socket.create_connection((host, port), timeout):
            return True
    except OSError:
        return False


def is_local_address(host):
    """True if ``host`` names this machine (we could listen on it)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.bind((sockaddr[0], 0))
                return True
        except OSError:
            continue
    return False


def user_tag():
    return str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")


def auto_lb_log_path(port):
    return os.path.join(tempfile.gettempdir(), f"p2p-load-balancer-{port}-{user_tag()}.log")


def ensure_load_balancer(host, port, say=print, members=OPEN, member_options=()):
    """Start ``load_balancer.py`` in the background if none answers at a local address.

    Returns the started process, or None when one was already there (or the
    address is not on this machine). Two peers starting at once end up with
    one load balancer: the second one's port is taken and it exits. The new
    load balancer gets ``member_options`` (the network secret and certificate).
    """
    if lb_answers(host, port) or not is_local_address(host):
        return None
    log_path = auto_lb_log_path(port)
    command = [sys.executable, LB_SCRIPT, "--host", "::" if ":" in host else "0.0.0.0",
               "--port", str(port), "--idle-exit", str(AUTO_LB_IDLE_EXIT_S), *member_options]
    detach = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt"
              else {"start_new_session": True})
    try:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                         | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        log_path, log_fd = os.devnull, os.open(os.devnull, os.O_WRONLY)
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_fd,
                                   stderr=subprocess.STDOUT, close_fds=True, **detach)
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + LB_START_TIMEOUT_S
    client = LBClient(host, port, timeout=LB_PROBE_TIMEOUT_S, members=members)
    while True:
        try:
            pid = client.status().get("pid")
            break
        except LBUnauthorized as e:  # another one, of another network, won the race
            raise PeerError(e.message) from None
        except LBClientError:
            exited = process.poll() is not None  # lost a race (then another answers) or failed
            if time.monotonic() > deadline or (exited and not lb_answers(host, port)):
                raise PeerError(f"Could not start a load balancer on port {port}; see "
                                f"{log_path}, or start one with: python load_balancer.py "
                                f"--port {port}") from None
            time.sleep(0.05)
        finally:
            client.close()
    if pid == process.pid:
        say(f"No load balancer was running at {format_address(host, port)}: started one in "
            f"the background (pid {process.pid}, log {log_path}); it exits "
            f"{AUTO_LB_IDLE_EXIT_S} s after the last peer leaves.")
        return process
    try:  # another peer's won the race: ours finds the port taken and exits
        process.wait(LB_START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("a second load balancer (pid %d) did not exit", process.pid)
    return None


# ---------------------------------------------------------------------------
# The peer: file server + membership


class Peer:
    """A running peer. ``start()`` serves and registers; ``stop()`` unregisters and closes."""

    def __init__(self, lb, shared="shared", downloads="downloads", host="0.0.0.0", port=0,
                 advertise=None, upload_slots=DEFAULT_UPLOAD_SLOTS, upload_limit=0,
                 members=OPEN):
        self.lb = lb
        self.members = members
        self.shared = os.path.abspath(shared)
        self.downloads = os.path.abspath(downloads)
        self.bind = (host, port)
        self.advertise = advertise
        self.upload_slots, self.upload_limit = upload_slots, upload_limit
        self.index = ShareIndex([self.shared, self.downloads], on_change=self._wake_now)
        self.server = None
        self.peer_id = self.token = None
        self.seen_as = None  # the host the load balancer sees us as
        self.heartbeat_s = RECONNECT_S
        self.lb_problem = None  # why the load balancer is not reachable, when it is not
        self.downloads_done = []
        self._announced = -1
        self._folder_lock = None
        self.shares_folder_with_another = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    # -- life cycle ---------------------------------------------------------

    def start(self):
        for folder in (self.shared, self.downloads):
            if os.path.exists(folder) and not os.path.isdir(folder):
                raise PeerError(f"{folder} is not a folder.")
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as e:
                raise PeerError(f"Cannot create the folder {folder}: {e.strerror}.") from None
        self.shares_folder_with_another = not self._lock_folder()
        try:
            self.server = FileServer(self.bind, self.index, self.upload_slots, self.upload_limit,
                                     members=self.members)
        except OSError as e:
            hint = " (choose another --port)" if e.errno == errno.EADDRINUSE else ""
            raise PeerError(f"Cannot listen on {format_address(*self.bind)}: "
                            f"{e.strerror}{hint}.") from None
        threading.Thread(target=self.server.serve_forever, daemon=True,
                         name="file-server").start()
        self.index.refresh()
        self.index.wait_hashed(INITIAL_HASH_WAIT_S)
        try:
            self._register()
        except LBUnauthorized as e:
            self.stop()
            raise PeerError(f"{e.message} Give every member the same --secret-file (or "
                            "P2P_SECRET).") from None
        self._thread = threading.Thread(target=self._membership, daemon=True, name="membership")
        self._thread.start()
        return self

    def _lock_folder(self):
        """Hold a lock in the shared folder; False if another peer already shares it."""
        if fcntl is None:
            return True
        try:
            self._folder_lock = os.open(os.path.join(self.shared, FOLDER_LOCK_NAME),
                                        os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                                        0o644)
        except OSError:
            return True  # a read-only folder, say: nothing to tell
        try:
            fcntl.flock(self._folder_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def stop(self):
        self._stop.set()
        self._wake.set()
        # Cut short a heartbeat in flight; a vanished load balancer must not hold us up.
        self.lb.interrupt(UNREGISTER_TIMEOUT_S)
        if self._thread is not None:
            self._thread.join(UNREGISTER_TIMEOUT_S + 1)
        if self.peer_id is not None:
            try:
                self.lb.unregister(self.peer_id, self.token)
            except LBClientError as e:
                log.info("could not unregister: %s", e)
            self.peer_id = None
        self.lb.close()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.index.close()
        if self._folder_lock is not None:
            os.close(self._folder_lock)

    @property
    def port(self):
        return self.server.port

    @property
    def address(self):
        host = self.advertise or self.seen_as or self.bind[0]
        return format_address(host, self.port)

    # -- membership ---------------------------------------------------------

    def _wake_now(self):
        self._wake.set()

    def _files(self):
        version = self.index.version
        return version, [f.as_dict() for f in self.index.files()]

    def _register(self):
        version, files = self._files()
        try:
            answer = self.lb.register(self.port, files, host=self.advertise)
        except LBUnauthorized as e:
            if self._thread is None:  # starting: the person must fix it, not wait for it
                raise
            self.lb_problem = e.message
            log.warning("cannot register with the load balancer: %s", e.message)
            return False
        except LBClientError as e:
            self.lb_problem = e.message
            log.warning("cannot register with the load balancer: %s", e.message)
            return False
        self.peer_id, self.token = answer["peer_id"], answer["token"]
        self.seen_as = answer.get("host")
        self.heartbeat_s = float(answer.get("heartbeat_s", RECONNECT_S))
        self._announced = version
        self.lb_problem = None
        log.info("registered as %s at %s with %d files", self.peer_id, self.address, len(files))
        return True

    def _heartbeat(self):
        files = None
        version = self.index.version
        if version != self._announced:
            version, files = self._files()
        try:
            self.lb.heartbeat(self.peer_id, self.token, files=files,
                              uploads=len(self.server.uploads))
        except LBClientError as e:
            if e.status == 404 and not self._stop.is_set():  # it restarted and forgot us
                log.warning("the load balancer forgot this peer; registering again")
                self.peer_id = None
                return self._register()
            self.lb_problem = e.message
            log.warning("heartbeat failed: %s", e.message)
            return False
        self._announced = version
        self.lb_problem = None
        return True

    def _membership(self):
        while not self._stop.is_set():
            healthy = self.lb_problem is None
            self._wake.wait(self.heartbeat_s if healthy else min(self.heartbeat_s, RECONNECT_S))
            self._wake.clear()
            if self._stop.is_set():
                return
            self.index.refresh()
            if self.peer_id is None:
                self._register()
            else:
                self._heartbeat()

    def describe_sharing(self):
        """'3 files from shared/' (and 'and 2 downloaded' when there are some)."""
        mine = sum(1 for f in self.index.files() if f.root == self.shared)
        fetched = len(self.index) - mine
        text = f"{plural(mine, 'file')} from {shown_path(self.shared)}/"
        return text + (f" and {fetched} downloaded" if fetched else "")

    def refresh_now(self):
        """Rescan the shared folder and announce at once (the menu does this)."""
        self.index.refresh()
        self._wake.set()

    # -- downloads ----------------------------------------------------------

    def downloader(self, on_progress=None):
        return Downloader(self.lb, self.downloads, requester=self.peer_id,
                          on_progress=on_progress, on_verified=self._verified,
                          have=self.index.find_by_hash, identity=self.address,
                          members=self.members)

    def _verified(self, root, path, sha256):
        self.index.add_verified(root, path, sha256)


# ---------------------------------------------------------------------------
# Showing things to a person


def shown_path(path):
    """A folder as a person finds it: relative to here when it is below here."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def plural(count, noun):
    return f"{count} {noun}{'' if count == 1 else 's'}"


def human_size(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def human_duration(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def table(rows, headers):
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


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
        line = (f"{percent:5.1f}%  {human_size(p.done)} / {human_size(p.total)}  "
                f"{human_size(p.rate)}/s  ETA {eta}  from {p.source}")
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


def forget_typed_ahead():
    """Drop keys pressed during a download, so they do not answer the next question."""
    if termios is not None and sys.stdin.isatty():
        termios.tcflush(sys.stdin, termios.TCIFLUSH)


def describe_result(result):
    if result.already:
        return f"Already have it: {result.path} has the same content; nothing to download."
    resumed = f", resumed at {human_size(result.resumed_from)}" if result.resumed_from else ""
    sources = " then ".join(dict.fromkeys(result.sources))
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


def print_files(out, lb, query):
    answer = lb.files(query)
    files = answer["files"]
    if not files:
        out.write("No shared file matches.\n" if query else "Nobody shares anything yet.\n")
        return
    rows = [(f["name"], human_size(f["size"]), f["holders"], f["sha256"][:12]) for f in files]
    out.write(table(rows, ("name", "size", "holders", "sha256")) + "\n")
    if answer.get("truncated"):
        out.write(f"(only the first {len(files)} shown; add text to narrow the list)\n")


def print_status(out, lb, me=None):
    status = lb.status()
    peers = status["peers"]
    out.write(f"Load balancer {lb.address} · policy {status['policy']} · "
              f"{len(peers)} peer(s)\n")
    if not peers:
        return
    rows = []
    for p in peers:
        names = ", ".join(p["files"][:3]) + (", …" if len(p["files"]) > 3 else "")
        rows.append((format_address(p["host"], p["port"]) + (" (me)" if p["id"] == me else ""),
                     f"{len(p['files'])}  {names}".rstrip(), p["active"], p["served"],
                     f"{p['last_seen_s']:.0f} s ago"))
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

    def __init__(self, peer, out=sys.stdout, read=input, log_path=None):
        self.peer, self.out, self.read, self.log_path = peer, out, read, log_path

    def say(self, text=""):
        self.out.write(text + "\n")
        self.out.flush()

    def banner(self):
        peer = self.peer
        lb = peer.lb.address + ("" if peer.lb_problem is None else " (not answering; retrying)")
        self.say(f"Peer {peer.address} · sharing {peer.describe_sharing()} · load balancer {lb}")
        if peer.members is not OPEN and (peer.members.secret or peer.members.tls):
            self.say(f"Members only: {peer.members.describe()}")
        if self.log_path:
            self.say(f"Log: {self.log_path}")
        if peer.shares_folder_with_another:
            self.say(f"Note: another peer on this machine shares {peer.shared} too; give each "
                     "peer its own --shared and --downloads folders.")

    def run(self):
        self.banner()
        actions = {"1": self.list_files, "2": self.download, "3": self.show_status,
                   "4": self.show_mine}
        while True:
            self.say()
            self.say(MENU)
            try:
                choice = self.read("Choose 0-4: ").strip()
            except (EOFError, KeyboardInterrupt):
                self.say()
                return
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
                if choice != "4" and self.peer.lb_problem:
                    raise LBUnreachable(self.peer.lb_problem)
                action()
            except LBUnreachable as e:
                self.say(f"{e.message} Options 4 and 0 still work; this peer registers again "
                         "by itself as soon as the load balancer is back (to start one: "
                         f"python load_balancer.py --port {self.peer.lb.port}).")
            except LBClientError as e:
                self.say(e.message)
            except Cancelled:
                self.say("Cancelled.")
            except EOFError:
                self.say()
                return

    def may_quit(self):
        """Quit at once, or, while others download from us, when the person confirms."""
        uploads = len(self.peer.server.uploads)
        if not uploads:
            return True
        try:
            answer = self.ask(f"{plural(uploads, 'upload')} to other peers in progress (they "
                              "will continue from another holder, if any). Quit anyway? [y/N] ")
        except (Cancelled, EOFError):
            return True
        return answer.casefold() in ("y", "yes")

    def ask(self, prompt):
        """A line from the person; Ctrl-C cancels the option, end of input quits."""
        try:
            return self.read(prompt).strip()
        except KeyboardInterrupt:
            self.say()
            raise Cancelled from None

    def list_files(self):
        query = self.ask("Filter (blank for all): ")
        print_files(self.out, self.peer.lb, query)
        self.out.flush()

    def show_status(self):
        print_status(self.out, self.peer.lb, self.peer.peer_id)
        self.out.flush()

    def show_mine(self):
        peer = self.peer
        peer.refresh_now()
        files = peer.index.files()
        self.say(f"Sharing {peer.describe_sharing()}:")
        if files:
            self.say(table([(f.name, human_size(f.size), f.sha256[:12]) for f in files],
                           ("name", "size", "sha256")))
        pending = peer.index.pending()
        if pending:
            self.say(f"({pending} more being hashed)")
        uploads = peer.server.uploads.active()
        self.say(f"Uploads in progress: {len(uploads)}")
        for u in uploads:
            where = (f" (bytes {human_size(u.start)} to {human_size(u.start + u.total)} of "
                     f"{human_size(u.size)})" if u.total != u.size else "")
            self.say(f"  {u.name} to {u.client}: {human_size(u.sent)} / "
                     f"{human_size(u.total)}{where}")
        self.say(f"Downloads this session: {len(peer.downloads_done)}")
        for line in peer.downloads_done:
            self.say(f"  {line}")

    def download(self):
        name = self.ask("File name: ")
        if not name:
            self.say("No name given; option 1 lists the files on the network.")
            return
        try:
            check_name(name)
        except BadName as e:
            self.say(f"{e} Option 1 lists the files on the network.")
            return
        if not self.on_network(name):
            return
        where = self.ask("Peer address (blank: the least-loaded holder): ")
        if where:
            try:
                where = resolve_peer_address(where)
            except ValueError as e:
                self.say(str(e))
                return
        self.fetch(name, None, where or None)

    def fetch(self, name, sha256, where):
        progress = ProgressPrinter(self.out)
        try:
            try:
                result = self.peer.downloader(progress).get(name, sha256, where)
            finally:
                progress.end()
                forget_typed_ahead()
        except KeyboardInterrupt:
            self.say("Cancelled. The partial file is kept; download it again to resume.")
            return
        except DownloadError as e:
            if e.status == 409 and e.versions:
                self.choose_version(name, e.versions, where)
            else:
                self.say(e.message)
            return
        text = describe_result(result)
        self.say(text)
        if not result.already:
            self.peer.downloads_done.append(text)

    def on_network(self, name):
        """Is ``name`` shared by anyone? Else say so, with the names that look like it."""
        answer = self.peer.lb.files(name)
        if answer.get("truncated") or name in [f["name"] for f in answer["files"]]:
            return True
        hint = did_you_mean(self.peer.lb, name) or " Option 1 lists the files on the network."
        self.say(f"Nobody shares {name!r} right now.{hint}")
        return False

    def choose_version(self, name, versions, where):
        self.say(f"Several different files are shared as {name!r}:")
        for i, v in enumerate(versions, 1):
            self.say(f" {i}) {human_size(v['size'])}, SHA-256 {v['sha256'][:16]}…, "
                     f"{v['holders']} holder(s)")
        choice = self.ask(f"Which one (1-{len(versions)}, blank to cancel): ")
        if choice.isdigit() and 1 <= int(choice) <= len(versions):
            self.fetch(name, versions[int(choice) - 1]["sha256"], where)
        else:
            self.say("Nothing downloaded." if not choice else
                     f"There is no choice {choice!r}; nothing downloaded.")


# ---------------------------------------------------------------------------
# Command line


COMMANDS = ("menu", "serve", "get", "list", "status", "secret", "url")
VALUE_OPTIONS = ("--lb", "--downloads", "--host", "--port", "--advertise", "--shared",
                 "--upload-slots", "--upload-limit", "--sha256", "--from", "--secret-file",
                 "--tls-cert", "--tls-key", "--tls-ca", "--expires")
SERVING_OPTIONS = ("--host", "--port", "--advertise", "--shared", "--upload-slots",
                   "--upload-limit")


def option_groups():
    """(--lb and --verbose, --downloads, the serving peer's options): each command takes
    only the groups that mean something to it."""
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--lb", default=os.environ.get("P2P_LB", DEFAULT_LB), metavar="HOST:PORT",
                        help=f"the load balancer (env P2P_LB, default {DEFAULT_LB})")
    client.add_argument("--verbose", action="store_true", help="log to standard error")
    add_member_options(client)
    downloads = argparse.ArgumentParser(add_help=False)
    downloads.add_argument("--downloads", metavar="DIR",
                           help="folder to download into, its verified files shared too "
                                "(default: downloads/ beside peer.py; created if missing)")
    serving = argparse.ArgumentParser(add_help=False)
    serving.add_argument("--host", default="0.0.0.0", help="address the file server listens on")
    serving.add_argument("--port", type=port_number, default=0,
                         help="file server port (0: any free one)")
    serving.add_argument("--advertise", metavar="HOST",
                         help="the address other peers should use to reach this one "
                              "(default: what the load balancer sees)")
    serving.add_argument("--shared", metavar="DIR",
                         help="folder to share (default: shared/ beside peer.py)")
    serving.add_argument("--upload-slots", type=int, default=DEFAULT_UPLOAD_SLOTS, metavar="N",
                         help=f"uploads served at once (default {DEFAULT_UPLOAD_SLOTS})")
    serving.add_argument("--upload-limit", type=rate_arg, default=0, metavar="RATE",
                         help="upload speed limit of this peer (all uploads together) in "
                              "bytes/s, like 500K or 2M")
    return client, downloads, serving


def duration_arg(text):
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def rate_arg(text):
    try:
        return parse_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def command_first(argv):
    """``--lb X status`` -> ``status --lb X``; no command at all -> the menu."""
    if argv and argv[0] in ("-h", "--help"):
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
    client, downloads, serving = option_groups()
    parser = argparse.ArgumentParser(
        prog="peer.py", description="A peer of the P2P file sharing network.",
        epilog="With no command, runs the interactive menu; 'peer.py COMMAND -h' lists the "
               "options of each.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    peer = [client, downloads, serving]
    commands.add_parser("menu", parents=peer, help="the interactive peer (default)")
    commands.add_parser("serve", parents=peer, help="share and serve until Ctrl-C or SIGTERM")
    get = commands.add_parser("get", parents=[client, downloads],
                              help="download one file, then exit")
    get.add_argument("name", help="the file's name on the network (see 'list')")
    get.add_argument("--sha256", metavar="HEX",
                     help="which version, when several files share the name (4 or more of "
                          "its first hex digits do)")
    get.add_argument("--from", dest="source", metavar="HOST[:PORT]",
                     help="ask this peer instead of the least-loaded holder")
    listing = commands.add_parser("list", parents=[client], help="the files on the network")
    listing.add_argument("text", nargs="?", default="", help="only names containing this")
    commands.add_parser("status", parents=[client], help="the load balancer's view of the peers")
    commands.add_parser("secret", help="print a new network secret (save it to a file and "
                                       "give it to every member with --secret-file)")
    url = commands.add_parser("url", parents=[client],
                              help="print a signed, time-limited URL of a holder of a file, "
                                   "for curl, wget or a browser")
    url.add_argument("name", help="the file's name on the network")
    url.add_argument("--expires", type=duration_arg, default=DEFAULT_URL_LIFETIME_S,
                     metavar="DURATION", help="how long the URL works, like 90s, 10m, 2h or "
                                              "7d (default 1h, at most 7d)")
    url.add_argument("--sha256", metavar="HEX", help="which version, as for 'get'")
    url.add_argument("--from", dest="source", metavar="HOST[:PORT]",
                     help="a URL of this peer instead of the least-loaded holder")
    argv = command_first(list(sys.argv[1:] if argv is None else argv))
    if argv[0] in ("get", "list", "status", "url"):
        misplaced = [w.split("=")[0] for w in argv if w.split("=")[0] in SERVING_OPTIONS]
        if misplaced:
            parser.error(f"{misplaced[0]} is an option of 'menu' and 'serve', not of "
                         f"'{argv[0]}'")
        if argv[0] != "get" and any(w.split("=")[0] == "--downloads" for w in argv):
            parser.error(f"--downloads is not an option of '{argv[0]}'")
    args = parser.parse_args(argv)
    if args.command == "secret":
        return args
    args.members = members_from_args(parser, args)
    try:
        args.lb_host, args.lb_port = parse_address(args.lb, DEFAULT_PORT)
    except ValueError as e:
        parser.error(f"--lb: {e}")
    if getattr(args, "downloads", "") is None:
        args.downloads = os.path.join(HERE, "downloads")
    if args.command in ("menu", "serve"):
        if args.upload_slots < 1:
            parser.error("--upload-slots must be at least 1")
        if args.shared is None:
            args.shared = os.path.join(HERE, "shared")
        elif os.path.exists(args.shared) and not os.path.isdir(args.shared):
            parser.error(f"--shared {args.shared}: that is a file, not a folder")
        elif not os.path.isdir(args.shared):
            parser.error(f"--shared {args.shared}: there is no such folder")
    return args


def configure_logging(args, log_path=None):
    """The menu logs to a file (never over the menu) unless --verbose; serve to stderr."""
    if log_path and not args.verbose:
        logging.basicConfig(filename=log_path, level=logging.WARNING, format=LOG_FORMAT)
    else:
        logging.basicConfig(stream=sys.stderr, format=LOG_FORMAT,
                            level=logging.INFO if args.verbose else logging.WARNING)


def fail(message):
    print(f"peer.py: {message}", file=sys.stderr)
    return 1


def raise_terminate(signum, frame):
    raise Terminate()


def run_peer(args, interactive):
    log_path = os.path.join(tempfile.gettempdir(), f"p2p-peer-{user_tag()}-{os.getpid()}.log")
    configure_logging(args, log_path if interactive else None)
    signal.signal(signal.SIGTERM, raise_terminate)
    if hasattr(signal, "SIGHUP"):  # the terminal window was closed: leave as cleanly
        signal.signal(signal.SIGHUP, raise_terminate)
    ensure_load_balancer(args.lb_host, args.lb_port,
                         say=lambda text: print(text, file=sys.stderr, flush=True),
                         members=args.members,
                         member_options=args.members.options(args.secret_file))
    peer = Peer(LBClient(args.lb_host, args.lb_port, members=args.members), args.shared,
                args.downloads, args.host, args.port, args.advertise, args.upload_slots,
                args.upload_limit, members=args.members)
    try:
        peer.start()
        if interactive:
            Menu(peer, log_path=log_path).run()
        else:
            print(f"listening on {format_address(args.host, peer.port)}", flush=True)
            print(f"sharing {peer.describe_sharing()} as {peer.address} · load balancer "
                  f"{peer.lb.address} · {args.members.describe()}", flush=True)
            if peer.lb_problem:
                print(f"peer.py: {peer.lb_problem} Retrying every {RECONNECT_S:g} s.",
                      file=sys.stderr, flush=True)
            if peer.shares_folder_with_another:
                print(f"peer.py: another peer shares {peer.shared} too.", file=sys.stderr)
            threading.Event().wait()
    except (KeyboardInterrupt, Terminate):
        pass
    finally:
        peer.stop()
        if interactive and os.path.exists(log_path) and os.path.getsize(log_path) == 0:
            os.unlink(log_path)  # nothing went wrong: no log to keep
    return 0


def run_get(args):
    logging.basicConfig(stream=sys.stderr, level=logging.INFO if args.verbose else logging.ERROR,
                        format=LOG_FORMAT)
    lb = LBClient(args.lb_host, args.lb_port, members=args.members)
    progress = ProgressPrinter(sys.stderr) if sys.stderr.isatty() else None
    try:
        try:
            sha256 = resolve_sha256(lb, args.name, args.sha256) if args.sha256 else None
            source = resolve_peer_address(args.source) if args.source else None
            result = Downloader(lb, args.downloads, on_progress=progress,
                                members=args.members).get(args.name, sha256, source)
        finally:
            if progress:
                progress.end()
    except ValueError as e:
        return fail(str(e))
    except (KeyboardInterrupt, Terminate):
        print("peer.py: interrupted; the partial file is kept: run the same command to "
              "resume.", file=sys.stderr)
        return 130
    except DownloadError as e:
        message = e.message
        if e.status == 404 and not args.source:  # names on the network get no suggestion
            message += did_you_mean(lb, args.name)
        if e.status == 409:
            message += " Versions: " + ", ".join(
                f"{v['sha256']} ({human_size(v['size'])})" for v in e.versions)
        return fail(message)
    print(describe_result(result))
    return 0


def run_url(args, lb):
    """Print a URL of a holder of the file: signed and time-limited on a network with a secret."""
    sha256 = resolve_sha256(lb, args.name, args.sha256) if args.sha256 else None
    source = resolve_peer_address(args.source) if args.source else None
    try:
        transfer = lb.start_transfer(args.name, sha256=sha256, peer=source)
    except LBClientError as e:
        raise DownloadError(e.message + (did_you_mean(lb, args.name) if e.status == 404 else ""),
                            e.status, e.body.get("versions")) from None
    # Only the address is wanted: the holder counts the download itself while it runs.
    lb.end_transfer(transfer["transfer_id"], "cancelled")
    holder = transfer["peer"]
    members = args.members
    url = (f"{members.scheme}://{format_address(holder['host'], holder['port'])}"
           f"{url_for_name(transfer['file']['name'])}")
    if members.secret is not None:
        url += "?" + members.secret.url_query(transfer["file"]["name"], args.expires)
    else:
        print("peer.py: this network has no secret: the URL needs no signature and does not "
              "expire.", file=sys.stderr)
    if members.tls is not None:
        tls = members.tls
        print(f"peer.py: the network uses TLS: curl --cert {tls.cert} --key {tls.key} "
              f"--cacert {tls.ca or tls.cert} --resolve {NETWORK_CERT_NAME}:{holder['port']}:"
              f"{holder['host']} -O 'https://{NETWORK_CERT_NAME}:{holder['port']}"
              f"{url[url.index('/files/'):]}' (with a certificate made as the README says)",
              file=sys.stderr)
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
        if args.command == "get":
            return run_get(args)
        lb = LBClient(args.lb_host, args.lb_port, members=args.members)
        if args.command == "url":
            return run_url(args, lb)
        if args.command == "list":
            print_files(sys.stdout, lb, args.text)
        else:
            print_status(sys.stdout, lb)
        return 0
    except (PeerError, LBClientError, DownloadError) as e:
        return fail(str(e))
    except ValueError as e:
        return fail(str(e))
    except (KeyboardInterrupt, Terminate):
        print("peer.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

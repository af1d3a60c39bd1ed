"""The ``run_*`` commands of ``peer.py`` but ``get``: the peer (menu or serve), list, status,
clean and url; and how a command stops (signals, exit status, one line on the way out).

Each ``run_*`` takes the parsed arguments (``args.py``) and returns the exit
status: 0 on success, 1 with a one-line reason on standard error (``fail``).
SIGTERM and SIGHUP raise ``Terminate`` in the main thread, so a peer unregisters
however it is asked to stop.
"""

import contextlib
import logging
import logging.handlers
import os
import re
import signal
import sys
import tempfile
import threading

from p2p.cli.autostart import find_or_start_load_balancer, lb_client_for, membership_hooks, user_tag
from p2p.cli.lookup import did_you_mean, resolve_peer_address, resolve_sha256, unfinished_downloads
from p2p.cli.menu import Menu, status_text
from p2p.cli.text import human_size, limit_line, plural, shown_path, table, unfinished_lines
from p2p.cli.view import PeerView
from p2p.core.members import NETWORK_CERT_NAME
from p2p.core.wire import format_address
from p2p.net.download import DownloadError
from p2p.net.partial import find_unfinished, remove_unfinished
from p2p.net.lb_client import NotKnown
from p2p.net.membership import RECONNECT_S
from p2p.net.node import Peer
from p2p.net.sharing import url_for_name

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
LOG_MAX_BYTES = 256 * 1024  # one log file per peer name, rotated at this size...
LOG_BACKUPS = 1  # ...keeping this many older ones
SIGNAL_TICK_S = 0.25  # the menu's line reading is interrupted this often (see signal_ticks)


class Terminate(BaseException):
    """SIGTERM or SIGHUP: leave whatever we are doing and shut down cleanly."""


def fail(message):
    print(f"peer.py: {message}", file=sys.stderr)
    return 1


def say_on_stderr(text):
    print(text, file=sys.stderr, flush=True)


def hold_signals():
    """From now on Ctrl-C, SIGTERM and SIGHUP (a closed window sends several) cannot cut
    the clean-up short."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


@contextlib.contextmanager
def signal_ticks():
    """A stop signal that comes just before the menu blocks reading a line (after its
    prompt) would wait for the next Enter: ``input`` looks at signals only when its read
    is interrupted. A timer interrupts it every SIGNAL_TICK_S, so the handler runs."""
    if not hasattr(signal, "setitimer"):
        yield
        return
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: None)
    signal.setitimer(signal.ITIMER_REAL, SIGNAL_TICK_S, SIGNAL_TICK_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def raise_terminate(signum, frame):
    hold_signals()
    raise Terminate()


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
    """The sharing peer: the menu, or (serve) its address and what it shares, until stopped."""
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
        view = PeerView(peer, args.parallel)
        if interactive:
            with signal_ticks():
                Menu(view, log_path=log_path).run()
        else:
            serve(args, peer, view)
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


def serve(args, peer, view):
    """``serve``: say where it listens and what it shares, then serve until stopped."""
    print(f"listening on {format_address(args.host, peer.port)}", flush=True)
    print(f"sharing {view.sharing()} as {peer.title} · load balancer {peer.describe_lb()}",
          flush=True)
    print(view.openness(), flush=True)
    if view.upload_limit:
        print(limit_line(view.upload_limit), flush=True)
    if peer.lb_problem:
        print(f"peer.py: {peer.lb_problem} Retrying every {RECONNECT_S:g} s.",
              file=sys.stderr, flush=True)
    threading.Event().wait()


def run_list(args, lb):
    """The files on the network whose names contain ``args.text``."""
    answer = lb.files(args.text)
    files = answer["files"]
    if not files:
        print("No shared file matches." if args.text else "Nobody shares anything yet.")
        return 0
    rows = [(f["name"], human_size(f["size"]), f["holders"], f["sha256"][:12]) for f in files]
    print(table(rows, ("name", "size", "holders", "sha256")))
    if answer.get("truncated"):
        print(f"(only the first {len(files)} shown; add text to narrow the list)")
    return 0


def run_status(args, lb):
    """My unfinished downloads, then the load balancer's view of every peer."""
    title = (f"Unfinished downloads in {shown_path(args.downloads)}/ ('peer.py clean' deletes "
             "them):")
    for line in unfinished_lines(title, unfinished_downloads(lb, args.downloads)):
        print(line)
    print(status_text(lb.status(), lb.address, standbys=standbys_of(lb)))
    return 0


def run_clean(args):
    """Delete the partial downloads that are not running; say what it did."""
    root = args.downloads
    unfinished = find_unfinished(root)
    removed = [u for u in unfinished if remove_unfinished(u)]
    freed = sum(u.done for u in removed)
    kept = len(unfinished) - len(removed)
    text = (f"Deleted {plural(len(removed), 'unfinished download')} ({human_size(freed)}) "
            f"from {shown_path(root)}/.")
    print(text + (f" {kept} still running, kept." if kept else ""))
    return 0


def standbys_of(lb):
    """'A (up), B (down)' of a standby list's client, None of one load balancer's."""
    return lb.describe() if hasattr(lb, "describe") else None


def run_url(args, lb):
    """Print a URL of a holder of the file: signed and time-limited on a network with a secret.
    ``url /``: a link to the load balancer's page, for a browser."""
    if args.name == "/":
        return print_page_url(args, lb)
    sha256 = resolve_sha256(lb, args.name, args.sha256) if args.sha256 else None
    source = resolve_peer_address(args.source) if args.source else None
    try:
        pick = lb.pick(args.name, sha256=sha256, peer=source)
    except NotKnown as e:
        raise DownloadError(e.message + did_you_mean(lb, args.name)) from None
    # Only the address is wanted: the holder counts the download itself while it runs.
    holder = pick.leases[0]
    lb.end(holder, "cancelled")
    members = args.members
    url = f"{members.scheme}://{holder.address}{url_for_name(pick.file.name)}"
    if members.secret is not None:
        url += "?" + members.secret.url_query(pick.file.name, args.expires)
    else:
        say_on_stderr("peer.py: this network has no secret: the URL needs no signature and "
                      "does not expire.")
    if members.tls is not None:
        tls = members.tls
        say_on_stderr(f"peer.py: the network uses TLS: curl --cert {tls.cert} --key {tls.key} "
                      f"--cacert {tls.ca or tls.cert} --resolve {NETWORK_CERT_NAME}:"
                      f"{holder.port}:{holder.host} -O 'https://{NETWORK_CERT_NAME}:"
                      f"{holder.port}{url[url.index('/files/'):]}' (with a certificate made "
                      "as the README says)")
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

"""``python peer.py``: a peer that shares ``shared/``, downloads into ``downloads/``, has a menu.

``python peer.py`` starts the interactive peer: the running peer of
``p2p/net/node.py`` (a file server over ``shared/``, a member of the load
balancer's registry; unregistered on exit, however it is asked to), downloads in
the background and the numbered menu (``menu.py`` over ``view.py``; line editing
and Tab completion in ``console.py``). Without ``--lb`` (or ``P2P_LB``) every
command first looks for the load balancer of its ``--network`` on the local
network, and a peer that found it that way follows the network; finding or
starting one is ``autostart.py``.

Subcommands, for scripts and tests (``--help`` on each, or ``help COMMAND``;
``args.py`` parses them, ``run.py`` and ``get.py`` run them)::

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

import signal
import sys

from p2p.cli.args import parse_args
from p2p.cli.autostart import check_fallback, find_on_lan, lb_client_for
from p2p.cli.get import run_get
from p2p.cli.run import (Terminate, fail, raise_terminate, run_clean, run_list, run_peer,
                         run_status, run_url, say_on_stderr)
from p2p.core.members import new_secret
from p2p.core.wire import format_address
from p2p.net.download import DownloadError
from p2p.net.lb_client import LBClientError
from p2p.net.node import PeerError


def say_nothing(text):
    """-q: what would have been said on standard error is not."""


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
            return run_clean(args)
        say = say_nothing if getattr(args, "quiet", False) else say_on_stderr
        if args.discover and not find_on_lan(args, say):
            check_fallback(args)
            fallback = format_address(args.lb_host, args.lb_port)
            say(f"No load balancer of network {args.network!r} announced itself on "
                f"the local network; asking {fallback}.")
        if args.command == "get":
            return run_get(args)
        lb = lb_client_for(args)
        commands = {"url": run_url, "list": run_list, "status": run_status}
        return commands[args.command](args, lb)
    except (PeerError, LBClientError, DownloadError, ValueError) as e:
        return fail(str(e))
    except (KeyboardInterrupt, Terminate):
        print("peer.py: interrupted", file=sys.stderr)
        return 130

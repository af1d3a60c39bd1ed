"""``peer.py``'s command line: the commands, their options, and what is checked before a run.

``parse_args(argv)`` turns the words after ``peer.py`` into an ``argparse.Namespace``
with the command (``menu`` when none is given), the membership options made into
``args.members``, the load balancer's address split (``lb_host``, ``lb_port``;
``discover`` when neither ``--lb`` nor ``P2P_LB`` named one) and the folders
defaulted. Options may come before the command (``command_first``). A wrong
option is a usage error of the command it was given to (exit 2).
"""

import argparse
import os
import socket
import sys

from p2p import VERSION
from p2p.cli.autostart import DEFAULT_LB, TOP, parse_lb_list
from p2p.cli.lb_main import add_member_options, members_from_args, port_number
from p2p.core import discovery
from p2p.core.folder import is_folder
from p2p.core.members import DEFAULT_URL_LIFETIME_S, parse_duration
from p2p.net.download import DEFAULT_PARALLEL
from p2p.net.sharing import DEFAULT_UPLOAD_SLOTS, parse_rate

MAX_NAME_CHARS = 64  # a peer's --name

COMMANDS = ("menu", "serve", "get", "list", "status", "clean", "secret", "url", "help")
VALUE_OPTIONS = ("--lb", "--network", "--downloads", "--host", "--port", "--advertise",
                 "--shared", "--upload-slots", "--upload-limit", "--sha256", "--from", "--name",
                 "--parallel", "--secret-file", "--tls-cert", "--tls-key", "--tls-ca",
                 "--expires", "--wait", "-o", "--output")
LISTENING_OPTIONS = ("--host", "--port", "--advertise", "--upload-slots", "--upload-limit")
SERVING_OPTIONS = ("--shared", "--name", "--parallel", "--no-lb-start", "--no-reshare")
GET_WAIT_S = 300  # get --wait: give up after this long with nothing arriving (0: at once)


def client_options():
    """--lb, --network, --verbose and the members' options: every command but 'secret'."""
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--lb", default=os.environ.get("P2P_LB") or None,
                        metavar="HOST:PORT[,HOST:PORT...]",
                        help="the load balancer, or several of one network as standbys (env "
                             "P2P_LB; default: the one announced on the local network, else "
                             f"{DEFAULT_LB})")
    client.add_argument("--network", type=typed(discovery.check_network),
                        default=os.environ.get("P2P_NETWORK", discovery.DEFAULT_NETWORK),
                        metavar="NAME", help="which load balancer to look for on the local "
                        f"network (env P2P_NETWORK, default {discovery.DEFAULT_NETWORK})")
    client.add_argument("--verbose", action="store_true", help="log to standard error")
    add_member_options(client)
    return client


def downloads_options():
    downloads = argparse.ArgumentParser(add_help=False)
    downloads.add_argument("--downloads", metavar="DIR",
                           help="folder to download into, its verified files shared too "
                                "(default: downloads/ beside peer.py; created if missing)")
    return downloads


def listening_options():
    """Where the file server listens and how much it serves: menu, serve and get."""
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
    listening.add_argument("--upload-limit", type=typed(parse_rate), default=0, metavar="RATE",
                           help="upload speed limit of this peer (all uploads together) in "
                                "bytes/s, like 500K or 2M")
    return listening


def serving_options():
    """The sharing peer's own options: menu and serve."""
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
    return serving


def wait_duration(text):
    """--wait: a duration, or 0 to give up at once."""
    return 0 if text.strip().lower() in ("0", "0s") else parse_duration(text)


def typed(parse):
    """An argparse type of ``parse``, whose ValueError becomes a usage error."""
    def convert(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = parse.__name__
    return convert


def command_first(argv):
    """``--lb X status`` -> ``status --lb X``; ``help [COMMAND]`` -> its --help; no command
    at all -> the menu."""
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
    if argv[position] == "help":
        return [*argv[position + 1:position + 2], "--help"]
    return [argv[position], *argv[:position], *argv[position + 1:]]


def build_parser():
    """The top-level parser and {command: its parser}."""
    client, downloads = client_options(), downloads_options()
    listening, serving = listening_options(), serving_options()
    parser = argparse.ArgumentParser(
        prog="peer.py", description="A peer of the P2P file sharing network.",
        epilog="With no command, runs the interactive menu; 'peer.py COMMAND -h' lists the "
               "options of each.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    peer = [client, downloads, listening, serving]
    commands.add_parser("menu", parents=peer, help="the interactive peer (default)")
    commands.add_parser("serve", parents=peer, help="share and serve until Ctrl-C or SIGTERM")
    add_get(commands, [client, downloads, listening])
    listing = commands.add_parser("list", parents=[client], help="the files on the network")
    listing.add_argument("text", nargs="?", default="", help="only names containing this")
    commands.add_parser("status", parents=[client, downloads],
                        help="the load balancer's view of the peers, and my unfinished downloads")
    commands.add_parser("clean", parents=[client, downloads],
                        help="delete my unfinished downloads (not those running)")
    commands.add_parser("secret", help="print a new network secret (save it to a file and "
                                       "give it to every member with --secret-file)")
    add_url(commands, [client])
    topic = commands.add_parser("help", help="the options of a command (help COMMAND), or "
                                             "these commands")  # command_first turns it to -h
    topic.add_argument("topic", nargs="?", metavar="COMMAND")
    return parser, commands.choices


def add_get(commands, parents):
    get = commands.add_parser("get", parents=parents,
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
    get.add_argument("--wait", type=typed(wait_duration), default=GET_WAIT_S, metavar="DURATION",
                     help="give up after waiting this long (like 90s or 10m) with nothing "
                          "arriving, every holder busy or none online; the partial file is "
                          f"kept (default: {GET_WAIT_S // 60}m; 0: at once)")
    get.add_argument("-o", "--output", metavar="FILE",
                     help="save the file under this name (or in this folder) instead of "
                          "--downloads; a different file already there is not overwritten")
    get.add_argument("-q", "--quiet", action="store_true",
                     help="print nothing but errors (no progress, no 'Saved' line)")


def add_url(commands, parents):
    url = commands.add_parser("url", parents=parents,
                              help="print a signed, time-limited URL of a holder of a file, "
                                   "for curl, wget or a browser")
    url.add_argument("name", help="the file's name on the network ('/': the load balancer's "
                                  "page, for a browser)")
    url.add_argument("--expires", type=typed(parse_duration), default=DEFAULT_URL_LIFETIME_S,
                     metavar="DURATION", help="how long the URL works, like 90s, 10m, 2h or "
                                              "7d (default 1h, at most 7d)")
    url.add_argument("--sha256", metavar="HEX", help="which version, as for 'get'")
    url.add_argument("--from", dest="source", metavar="HOST[:PORT]",
                     help="a URL of this peer instead of the least-loaded holder")


def check_misplaced(parser, argv):
    """An option of a serving peer given to a command that does not serve: a usage error."""
    if argv[0] not in ("get", "list", "status", "clean", "url"):
        return
    others = SERVING_OPTIONS if argv[0] == "get" else SERVING_OPTIONS + LISTENING_OPTIONS
    misplaced = [w.split("=")[0] for w in argv if w.split("=")[0] in others]
    if misplaced:
        owners = "'menu', 'serve' and 'get'" if misplaced[0] in LISTENING_OPTIONS \
            else "'menu' and 'serve'"
        parser.error(f"{misplaced[0]} is an option of {owners}, not of '{argv[0]}'")
    if argv[0] == "list" and any(w.split("=")[0] == "--downloads" for w in argv):
        parser.error(f"--downloads is not an option of '{argv[0]}'")


def parse_args(argv):
    parser, subparsers = build_parser()
    argv = command_first(list(sys.argv[1:] if argv is None else argv))
    check_misplaced(subparsers.get(argv[0], parser), argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser, with its own usage
        subparsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "get":
        check_get(subparsers["get"], args)
    if args.command == "secret":
        return args
    args.members = members_from_args(parser, args)
    args.discover = args.lb is None  # neither --lb nor P2P_LB: look on the local network
    try:
        args.lbs = parse_lb_list(args.lb or DEFAULT_LB)
    except ValueError as e:
        parser.error(f"--lb: {e}")
    args.lb_host, args.lb_port = args.lbs[0]
    check_folders(parser, args)
    if args.command in ("menu", "serve"):
        check_serving(parser, args)
    return args


def check_get(parser, args):
    """--sha256 and -o each name one file."""
    if args.sha256 and len(args.names) > 1:
        parser.error("--sha256 chooses the version of one file; give one NAME with it")
    if args.output is None:
        return
    if len(args.names) > 1 or is_folder(args.names[0]):
        parser.error("-o names one file: give one NAME with it (a folder keeps its own "
                     "names; --downloads chooses where)")
    if args.output == "-":
        parser.error("-o -: standard output is not supported; give a file name")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        parser.error(f"-o {args.output}: there is no folder {folder}")


def check_folders(parser, args):
    if getattr(args, "downloads", "") is None:
        args.downloads = os.path.join(TOP, "downloads")
    elif getattr(args, "downloads", None) and os.path.exists(args.downloads) \
            and not os.path.isdir(args.downloads):
        parser.error(f"--downloads {args.downloads}: that is a file, not a folder")


def check_serving(parser, args):
    """The serving peer's options: a printable name, positive counts, a shared folder."""
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

"""Questions the command line asks the network on a person's behalf.

What a person typed (a peer's address, the start of a SHA-256, a name with a typo)
becomes what the load balancer understands, with a sentence the person can act on
when it cannot: ``resolve_peer_address``, ``resolve_sha256``, ``did_you_mean``.
``unfinished_downloads`` pairs the partial files on disk with the files on the
network; ``direct_source`` stands in for a load balancer that does not answer.
"""

import re
import socket

from p2p.cli.text import suggest_names
from p2p.core.wire import format_address, parse_address
from p2p.net.download import DirectSource, DownloadError
from p2p.net.partial import find_unfinished
from p2p.net.lb_client import LBClientError, describe_socket_error

PROBE_TIMEOUT_S = 3.0  # a named peer that does not accept a connection in this long is away


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
    found = []
    for u in find_unfinished(root):
        try:
            versions = [f for f in lb.files(u.name)["files"]
                        if f["name"] == u.name and f["sha256"].startswith(u.sha_prefix)]
        except LBClientError:
            versions = []
        found.append((u, versions[0] if versions else None))
    return found


def nothing_answers(address, timeout=PROBE_TIMEOUT_S):
    """'Nothing answers at 127.0.0.1:1 (connection refused).' when no server accepts a
    connection at ``address`` ("host:port"); None when one does, or without a port."""
    host, port = parse_address(address)
    if port is None:
        return None
    try:
        socket.create_connection((host, port), timeout).close()
        return None
    except ConnectionRefusedError:
        why = "connection refused"
    except TimeoutError:
        why = f"no answer in {timeout:g} s"
    except OSError as e:
        why = describe_socket_error(e)
    return (f"Nothing answers at {format_address(host, port)} ({why}): is that peer "
            "running? 'peer.py status' lists the peers and their addresses.")


def direct_source(source, members):
    """The named peer, asked directly: there is no load balancer to ask."""
    host, port = parse_address(source)
    if port is None:
        raise ValueError(f"No load balancer answers, so give the peer's port too: "
                         f"--from {host}:PORT.")
    return DirectSource(host, port, members=members)

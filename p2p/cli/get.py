"""``peer.py get NAME...``: download files one after another, then exit.

While it runs, a peer without a shared folder serves the verified pieces of what
it downloads to other peers (when a load balancer answers to register with). A
named peer (``--from``) without a load balancer is asked directly. Progress goes
to standard error (``progress.py``), a sentence per saved file to standard output,
one line per failure to standard error (``-q``: only those); the exit status is 1
if any failed, 130 after Ctrl-C (the partial file is kept, to resume). ``-o FILE``
saves the one file asked for under that name (``output.py``). A named peer that
does not accept a connection is said to be away before anything else is tried.
"""

import dataclasses
import logging
import sys

from p2p.cli.autostart import lb_answers, lb_client_for
from p2p.cli.lookup import (did_you_mean, direct_source, nothing_answers, resolve_peer_address,
                            resolve_sha256)
from p2p.cli.output import AlreadyThere, check_target, place, target_path
from p2p.cli.progress import ProgressPrinter
from p2p.cli.run import LOG_FORMAT, Terminate, fail, hold_signals
from p2p.cli.text import describe_result, human_size
from p2p.core.folder import FolderError, is_folder
from p2p.core.wire import format_address
from p2p.net.download import Downloader, DownloadError
from p2p.net.folder import get_folder
from p2p.net.lb_client import Ambiguous, LBClientError, NotKnown
from p2p.net.node import Peer

log = logging.getLogger("p2p.peer")


def run_get(args):
    """Download each name in turn, a peer serving their verified pieces meanwhile (when
    there is a load balancer to register with); exit 1 if any failed, 130 on Ctrl-C."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO if args.verbose else logging.ERROR,
                        format=LOG_FORMAT)
    lb = lb_client_for(args)
    try:
        source = resolve_peer_address(args.source) if args.source else None
        away = nothing_answers(source) if source else None
        if away:
            return fail(away)
        via = (direct_source(source, args.members)
               if source and not any(lb_answers(host, port) for host, port in args.lbs)
               else lb)
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
        return Getter(args, lb, via, source, peer).get_each()
    except (KeyboardInterrupt, Terminate):
        print("peer.py: interrupted; the partial file is kept: run the same command to "
              "resume.", file=sys.stderr)
        return 130
    finally:
        if peer is not None:
            hold_signals()
            peer.stop()


class Getter:
    """The downloads of one ``get``: through ``via`` (the load balancer's client or a
    DirectSource), from ``source`` if named, ``peer`` (if any) sharing their pieces."""

    def __init__(self, args, lb, via, source, peer):
        self.args, self.lb, self.via, self.source, self.peer = args, lb, via, source, peer

    def downloader(self, on_progress):
        if self.peer is not None:
            return self.peer.downloader(on_progress, wait_s=self.args.wait)
        return Downloader(self.via, self.args.downloads, on_progress=on_progress,
                          members=self.args.members, wait_s=self.args.wait)

    def progress(self):
        return None if self.args.quiet else ProgressPrinter(sys.stderr)

    def say(self, text):
        if not self.args.quiet:
            print(text, flush=True)

    def versions(self, name, sha256):
        """The versions of ``name`` on the network that this download may fetch."""
        if self.via is not self.lb:
            return []
        return [f for f in self.lb.files(name)["files"]
                if f["name"] == name and sha256 in (None, f["sha256"])]

    def get_each(self):
        """Download each name of ``args.names`` in turn; the exit status."""
        failed = 0
        for name in self.args.names:
            if is_folder(name):
                failed += self.get_folder(name)
            else:
                failed += self.get_one(name)
        return 1 if failed else 0

    def get_one(self, name):
        """One file; 1 if it failed (said on standard error), else 0."""
        progress = self.progress()
        target = target_path(self.args.output, name) if self.args.output else None
        try:
            try:
                sha256 = (resolve_sha256(self.lb, name, self.args.sha256) if self.args.sha256
                          else None)
                if target:
                    check_target(target, self.versions(name, sha256))
                result = self.downloader(progress).get(name, sha256, self.source)
                if target:
                    result = dataclasses.replace(result, path=place(result, target))
            finally:
                if progress:
                    progress.end()
        except AlreadyThere:
            self.say(f"Already have it: {target} has the same content; nothing to download.")
            return 0
        except (DownloadError, LBClientError) as e:
            return fail(self.explain(e, name))
        self.say(describe_result(result))
        return 0

    def explain(self, error, name):
        """The error's sentence, with the names meant or the versions to choose from."""
        message = error.message
        if isinstance(error, NotKnown) and self.via is self.lb and not self.args.source:
            message += did_you_mean(self.lb, name)  # names on the network get no suggestion
        if isinstance(error, Ambiguous):
            message += " Versions: " + ", ".join(
                f"{v['sha256']} ({human_size(v['size'])})" for v in error.versions)
        return message

    def get_folder(self, folder):
        """``get FOLDER/``: every file under it (``folder.py``), one progress; 1 if any
        failed."""
        if self.via is not self.lb:
            return fail(f"Downloading the folder {folder!r} needs the load balancer's list of "
                        "files; none answers.")
        progress = self.progress()
        try:
            results, failures = get_folder(self.lb, folder, self.downloader, progress,
                                           self.source)
        except (FolderError, LBClientError) as e:
            return fail(str(e) if isinstance(e, FolderError) else e.message)
        finally:
            if progress:
                progress.end()
        for result in results:
            self.say(describe_result(result))
        for name, message in failures:
            fail(f"{name}: {message}")
        return 1 if failures else 0

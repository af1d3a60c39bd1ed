"""``peer.py get NAME...``: download files one after another, then exit.

While it runs, a peer without a shared folder serves the verified pieces of what
it downloads to other peers (when a load balancer answers to register with). A
named peer (``--from``) without a load balancer is asked directly. Progress goes
to standard error (``progress.py``), a sentence per saved file to standard output,
one line per failure to standard error; the exit status is 1 if any failed, 130
after Ctrl-C (the partial file is kept, to resume).
"""

import logging
import sys

from p2p.cli.autostart import lb_answers
from p2p.cli.lookup import did_you_mean, direct_source, resolve_peer_address, resolve_sha256
from p2p.cli.progress import ProgressPrinter
from p2p.cli.run import LOG_FORMAT, Terminate, fail, hold_signals
from p2p.cli.text import describe_result, human_size
from p2p.core.folder import FolderError, is_folder
from p2p.core.wire import format_address
from p2p.net.download import Downloader, DownloadError
from p2p.net.folder import get_folder
from p2p.net.lb_client import Ambiguous, LBClient, LBClientError, NotFound
from p2p.net.node import Peer

log = logging.getLogger("p2p.peer")


def run_get(args):
    """Download each name in turn, a peer serving their verified pieces meanwhile (when
    there is a load balancer to register with); exit 1 if any failed, 130 on Ctrl-C."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO if args.verbose else logging.ERROR,
                        format=LOG_FORMAT)
    lb = LBClient(args.lb_host, args.lb_port, members=args.members)
    try:
        source = resolve_peer_address(args.source) if args.source else None
        via = (direct_source(source, args.members)
               if source and not lb_answers(args.lb_host, args.lb_port) else lb)
    except ValueError as e:
        return fail(str(e))
    peer = None
    try:
        if via is lb:
            peer = Peer(LBClient(args.lb_host, args.lb_port, members=args.members), None,
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
        return ProgressPrinter(sys.stderr) if sys.stderr.isatty() else None

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
        try:
            try:
                sha256 = (resolve_sha256(self.lb, name, self.args.sha256) if self.args.sha256
                          else None)
                result = self.downloader(progress).get(name, sha256, self.source)
            finally:
                if progress:
                    progress.end()
        except (DownloadError, LBClientError) as e:
            return fail(self.explain(e, name))
        print(describe_result(result), flush=True)
        return 0

    def explain(self, error, name):
        """The error's sentence, with the names meant or the versions to choose from."""
        message = error.message
        if isinstance(error, NotFound) and self.via is self.lb and not self.args.source:
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
            print(describe_result(result), flush=True)
        for name, message in failures:
            fail(f"{name}: {message}")
        return 1 if failures else 0

"""The numbered menu of ``python peer.py``, over a ``PeerView`` (``view.py``).

``Menu`` shows the banner, offers to resume unfinished downloads, then reads a
choice per line until the person quits: 1 lists the files on the network
(numbered, so that option 2 takes a number), 2 downloads (``DownloadDialog``:
a name, a number, a folder, a suggestion or a version to choose; the download
runs in the background), 3 shows the load balancer's view (with how fast each
peer downloads and what limits it), 4 this peer's shares and transfers (each
download's holders and their rates), 0 quits (asking first while transfers run). What ended in the
background is said when the menu is shown again. Lines are read with ``read``
(``console.LineReader`` on a terminal) and written to ``out``.
"""

import shutil
import sys

from p2p.cli.console import Choices, LineReader
from p2p.cli.text import (cut, describe_job, describe_unfinished, download_speed_line,
                          downloading_line, fit_names, human_size, job_line, job_lines,
                          jobs_line, limit_line, plural, quit_question, session_line,
                          suggest_names, table, unfinished_lines, upload_line, versions_line)
from p2p.core.folder import is_folder
from p2p.core.wire import BadName, check_name, format_address
from p2p.cli.lookup import resolve_peer_address
from p2p.net.lb_client import LBClientError, Unreachable

JOBS_STOP_WAIT_S = 3.0  # on the way out, wait this long for running downloads to stop
STATUS_OTHER_COLUMNS = 60  # option 3: the columns around the file names...
STATUS_NAMES_MIN = 20  # ...which get the rest of the terminal's width, at least this

NO_SUCH_NUMBER = ("", "no such number")  # option 2: a number past the end of the list

MENU = """ 1) List files on the network
 2) Download a file
 3) Show load balancer info
 4) Show my shared files and transfers
{stop} 0) Quit"""
STOP_ITEM = " 5) Stop a download\n"  # shown while downloads run or wait


class Cancelled(Exception):
    """Ctrl-C or end of input at a question of the menu: back to the menu."""


class Dialog:
    """Saying lines to ``out`` and asking ``read`` for answers."""

    def __init__(self, view, out, read, choices):
        self.view, self.out, self.read, self.choices = view, out, read, choices

    def say(self, text=""):
        self.out.write(text + "\n")
        self.out.flush()

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

    def fetch(self, name, sha256, where):
        """Start the download and come back to the menu at once."""
        if self.view.download(name, sha256, where):
            self.say(f"{name!r} is being downloaded already; option 4 shows how far it is.")
        else:
            self.say(f"Downloading {name!r} in the background; option 4 shows how far it is.")


class Menu(Dialog):
    """The numbered menu over a ``PeerView``."""

    def __init__(self, view, out=sys.stdout, read=None, log_path=None):
        super().__init__(view, out, read or LineReader(view.names).read, Choices())
        self.log_path = log_path
        self.actions = {"1": self.list_files, "2": DownloadDialog(self).run,
                        "3": self.show_status, "4": self.show_mine, "5": self.stop_download}

    def banner(self):
        view = self.view
        lbs = "load balancers" if view.standbys else "load balancer"
        self.say(f"Peer {view.title} · sharing {view.sharing()} · {lbs} {view.describe_lb()}")
        self.say(view.openness())
        if view.upload_limit:
            self.say(limit_line(view.upload_limit))
        if view.lb_problem:
            self.say(f"Note: {view.lb_problem}")
        if self.log_path:
            self.say(f"Log: {self.log_path}")

    def run(self):
        """The menu until the person quits; running downloads are stopped on the way out
        (their partial files stay, to resume)."""
        try:
            self.loop()
        finally:
            self.view.stop_downloads(JOBS_STOP_WAIT_S)

    def loop(self):
        self.banner()
        self.offer_resume()
        while True:
            self.say()
            self.report()
            last = 5 if self.view.active() else 4
            self.say(MENU.format(stop=STOP_ITEM if last == 5 else ""))
            try:
                choice = self.read(f"Choose 0-{last}: ").strip()
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
            self.choose(choice)

    def choose(self, choice):
        """Run the option ``choice``, or say how to choose one."""
        action = self.actions.get(choice)
        last = 5 if self.view.active() else 4
        if action is None or (choice == "5" and last == 4):
            self.say(f"Type a number from 0 to {last} and press Enter." if choice
                     else f"Nothing typed: type a number from 0 to {last} and press Enter.")
            return
        try:
            if choice in ("1", "3") and self.view.lb_problem:
                raise Unreachable(self.view.lb_problem)
            action()
        except Unreachable as e:
            self.say(f"{e.message} Options 2 (naming a peer), 4 and 0 still work; this peer "
                     "registers again by itself as soon as the load balancer is back (to "
                     f"start one: python load_balancer.py --port {self.view.lb_port}).")
        except LBClientError as e:
            self.say(e.message)
        except Cancelled:
            self.say("Cancelled.")

    def offer_resume(self):
        """At start: offer to resume the unfinished downloads that someone shares now."""
        found = [(u, f) for u, f in self.view.unfinished() if f is not None]
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
        question = quit_question(len(self.view.active()), self.view.uploading())
        if not question:
            return True
        try:
            answer = self.ask(question)
        except Cancelled:
            return True
        return answer.casefold() in ("y", "yes")

    def list_files(self):
        query = self.ask("Filter (blank for all): ", name=True)
        answer = self.view.files(query)
        files = answer["files"]
        if not files:
            self.say("No shared file matches." if query else "Nobody shares anything yet.")
            return
        numbers = self.choices.show((f["name"], f["sha256"]) for f in files)
        rows = [(f"{n})", f["name"], human_size(f["size"]), f["holders"], f["sha256"][:12])
                for n, f in zip(numbers, files)]
        self.say(table(rows, ("#", "name", "size", "holders", "sha256")))
        if answer.get("truncated"):
            self.say(f"(only the first {len(files)} shown; add text to narrow the list)")
        self.say("Option 2 takes a number from this list.")

    def show_status(self):
        self.say(status_text(self.view.status(), self.view.lb_address, self.view.peer_id,
                             self.view.standbys))

    def show_mine(self):
        view = self.view
        files, pending = view.shares()
        self.say(f"Sharing {view.sharing()}:")
        if files:
            self.say(table([(f.name, human_size(f.size), f.sha256[:12]) for f in files],
                           ("name", "size", "sha256")))
        if pending:
            self.say(f"({pending} more being hashed)")
        uploads = view.uploads()
        self.say(f"Uploads in progress: {len(uploads)}")
        for u, who in uploads:
            self.say(f"  {upload_line(u, who)}")
        jobs = view.active()
        if jobs:
            self.say(f"Downloads running or waiting: {len(jobs)}")
            for job in jobs:
                for line in job_lines(job):
                    self.say(f"  {line}")
        ended = view.history()
        self.say(f"Downloads ended this session: {len(ended)}")
        for job, present in ended:
            self.say(f"  {session_line(job, present)}")
        running = {job.name for job in jobs}
        unfinished = [(u, file) for u, file in view.unfinished() if u.name not in running]
        title = (f"Unfinished downloads: {len(unfinished)} (option 2 resumes one; "
                 "'peer.py clean' deletes them)")
        for line in unfinished_lines(title, unfinished):
            self.say(line)

    def stop_download(self):
        """Option 5: stop one running or waiting download (a stalled one waits until then);
        its partial file stays, to resume."""
        jobs = self.view.active()
        for n, job in enumerate(jobs, 1):
            self.say(f" {n}) {job_line(job)}")
        choice = self.ask(f"Stop which one (1-{len(jobs)}, blank: none): ")
        if not (choice.isdigit() and choice.isascii() and 1 <= int(choice) <= len(jobs)):
            self.say("Nothing stopped." if not choice else
                     f"There is no download {choice!r} here; nothing stopped.")
            return
        job = jobs[int(choice) - 1]
        self.view.stop(job)
        self.say(f"Stopping {job.name!r}; its partial file is kept (option 2 resumes it).")

    def report(self):
        """What ended since the menu was last shown, and a line of what is still running."""
        for job in self.view.take_ended():
            self.say(describe_job(job))
        active = self.view.active()
        if active:
            self.say(cut(jobs_line(active), shutil.get_terminal_size().columns - 1))

    def finish_downloads(self):
        """End of input: let the running downloads finish (Ctrl-C stops them)."""
        active = self.view.active()
        if active:
            self.say(f"Waiting for {plural(len(active), 'download')} to finish (Ctrl-C stops "
                     "them; they resume next time).")
            try:
                self.view.wait_downloads()
            except KeyboardInterrupt:
                self.say()
                return
            self.report()


class DownloadDialog(Dialog):
    """Option 2: which file (a name, a number, a folder), which version, from whom."""

    def __init__(self, menu):
        super().__init__(menu.view, menu.out, menu.read, menu.choices)

    def run(self):
        numbers = (f" or number (1-{len(self.choices)})" if len(self.choices)
                   else " or a number of option 1's list")
        typed = self.ask(f"File name{numbers}, Tab completes: ", name=True)
        picked = self.choices.pick(typed) or self.numbered(typed)
        if picked == NO_SUCH_NUMBER:
            return
        name, sha256 = picked or (typed, None)
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
        if self.view.lb_problem:
            self.directly(name)
            return
        self.through_lb(name, sha256)

    def numbered(self, typed):
        """A number typed before any list was shown: (name, sha256) of that line of option
        1's whole list, fetched now; NO_SUCH_NUMBER (said) when there is no such line;
        None when ``typed`` is no number, or the name of a shared file."""
        if len(self.choices) or not (typed.isdigit() and typed.isascii()) \
                or self.on_network(typed) is not None:
            return None
        files = self.view.files()["files"]
        self.choices.show((f["name"], f["sha256"]) for f in files)
        picked = self.choices.pick(typed)
        if picked is None:
            self.say(f"There is no file {typed} in option 1's list ({plural(len(files), 'file')} "
                     "on the network); nothing downloaded.")
            return NO_SUCH_NUMBER
        self.say(f"File {typed} of option 1's list: {picked[0]}")
        return picked

    def through_lb(self, name, sha256):
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
        mine = self.view.have(versions[0]["sha256"]) if len(versions) == 1 else None
        if mine is not None:
            self.say(f"Already have it: {mine} has the same content; nothing to download.")
            return
        where = self.ask("Peer address (blank: the least-loaded holder): ")
        if where:
            where = self.named_peer(where)
            if where is None:
                return
        if sha256 is None and len(versions) > 1 and not where:
            self.choose_version(name, versions)
        else:
            self.fetch(name, sha256, where or None)

    def directly(self, name):
        """No load balancer: the person names the peer, which is asked directly."""
        where = self.named_peer(self.ask("No load balancer answers, so name the peer to "
                                         "download from (HOST:PORT): "), direct=True)
        if where is not None:
            self.fetch(name, None, where)

    def named_peer(self, typed, direct=False):
        """The address of the peer the person typed, or None (having said why) when it is not
        an address or nothing answers there; ``direct``: asked without a load balancer."""
        try:
            where = resolve_peer_address(typed)
            if direct:
                self.view.check_direct(where)
        except ValueError as e:
            self.say(str(e))
            return None
        away = self.view.unreachable(where)
        if away:
            self.say(away)
            return None
        return where

    def on_network(self, name):
        """The versions of ``name`` on the network (a truncated listing may miss them: []),
        or None when nobody shares it."""
        answer = self.view.files(name)
        versions = [f for f in answer["files"] if f["name"] == name]
        return versions if versions or answer.get("truncated") else None

    def meant(self, name):
        """Nobody shares ``name``: offer the names that look like it, numbered.

        Returns (name, None) for the one chosen, or (None, None).
        """
        close = suggest_names(name, self.view.names())
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

    def choose_version(self, name, versions):
        self.say(f"Several different files are shared as {name!r}:")
        for i, v in enumerate(versions, 1):
            self.say(f" {i}) {versions_line(v)}")
        choice = self.ask(f"Which one (1-{len(versions)}, blank to cancel): ")
        if choice.isdigit() and choice.isascii() and 1 <= int(choice) <= len(versions):
            self.fetch(name, versions[int(choice) - 1]["sha256"], None)
        else:
            self.say("Nothing downloaded." if not choice else
                     f"There is no choice {choice!r}; nothing downloaded.")


def status_text(status, lb_address, me=None, standbys=None):
    """Option 3 and 'peer.py status': the load balancer's peers, one row each; ``standbys``:
    each load balancer of a standby list with whether it is up."""
    peers = status["peers"]
    head = (f"Load balancer {lb_address} · policy {status['policy']} · "
            f"{len(peers)} peer(s)")
    if standbys:
        head += f"\nLoad balancers of the list: {standbys}"
    if not peers:
        return head
    rows = []
    names_width = max(STATUS_NAMES_MIN, shutil.get_terminal_size().columns - STATUS_OTHER_COLUMNS)
    for p in peers:
        who = " ".join(x for x in (p.get("name"), format_address(p["host"], p["port"])) if x)
        files = f"{len(p['files'])}  {fit_names(p['files'], names_width)}".rstrip()
        downloading = ", ".join(downloading_line(d) for d in p.get("partial", []))
        if downloading:  # a partial holder: shares the pieces it has verified
            files += f" · downloading {downloading}"
        rows.append((who + (" (me)" if p["id"] == me else ""), files,
                     p["active"], p["served"], f"{p['last_seen_s']:.0f} s ago"))
    return head + "\n" + table(rows, ("peer", "files", "active", "served", "last seen")) \
        + "".join(f"\n{line}" for line in speed_lines(peers))


def speed_lines(peers):
    """Under option 3's table: how fast each peer downloads, from each holder, and what
    limits it (for peers that say so in their heartbeat)."""
    lines = []
    for p in peers:
        who = " ".join(x for x in (p.get("name"), format_address(p["host"], p["port"])) if x)
        lines += [f"  {who}: {line}" for d in p.get("partial", [])
                  if (line := download_speed_line(d)) is not None]
    return ["Downloads in progress:"] + lines if lines else []

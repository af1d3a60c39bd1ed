"""Text for a person: sizes, durations, tables in screen cells, and the sentences of the menu.

Pure functions over plain values (counts, records, jobs, results): no I/O, no peer.
Widths are counted in terminal cells (``text_width``): an East Asian wide or
full-width character takes 2, a combining mark or a format character 0, so tables
line up with names in any script.
"""

import difflib
import os
import unicodedata

from p2p.core.units import human_size
from p2p.core.wire import percent
from p2p.net.lb_client import Ambiguous

SOURCES_SHOWN = 4  # holders named with their rates on one line; the rest are counted


def shown_path(path):
    """A folder as a person finds it: relative to here when it is below here."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def plural(count, noun):
    return f"{count} {noun}{'' if count == 1 else 's'}"


def human_duration(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def char_width(c):
    """Cells one character takes: 0 for a mark or a format character, 2 if wide, else 1."""
    if unicodedata.category(c) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(c) in "WF" else 1


def text_width(text):
    """Cells ``text`` takes on a terminal."""
    return sum(char_width(c) for c in str(text))


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
    """``text`` in at most ``width`` cells, ending in '…' when it had to be cut."""
    if text_width(text) <= width:
        return text
    while text and text_width(text) > width - 1:
        text = text[:-1]
    return text.rstrip() + "…"


def fit_names(names, width):
    """As many of ``names`` as fit in ``width`` cells (the first one cut if need be),
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


def describe_sharing(mine, fetched, shared):
    """'3 files from shared/' (and 'and 2 downloaded' when there are some)."""
    text = f"{plural(mine, 'file')} from {shown_path(shared)}/"
    return text + (f" and {fetched} downloaded" if fetched else "")


def describe_openness(reach, reshare, members):
    """To whom this peer's files are open, and whether its downloads are among them."""
    kept = ("downloads are shared too (--no-reshare keeps them private)" if reshare
            else "downloads stay private (--no-reshare)")
    if members.secret or members.tls:
        reach = f"{reach}, but only to members ({members.describe()})"
    return f"Open to {reach}; {kept}."


def upload_line(u, who=None):
    """'pieces 17-18 of song.mp3 to bob 127.0.0.1:4242: 1.5 MiB / 2.0 MiB (bytes ...)' for
    an upload of a range (pieces counted from 1), 'song.mp3 to ...: ...' for a whole file.
    ``who`` names the downloading peer (its name and address), else its address."""
    what, where = u.name, ""
    if u.total != u.size:
        first, last = (i + 1 for i in u.pieces)
        pieces = f"piece {first}" if first == last else f"pieces {first}-{last}"
        what = f"{pieces} of {u.name}"
        where = (f" (bytes {human_size(u.start)} to {human_size(u.start + u.total)} of "
                 f"{human_size(u.size)})")
    return (f"{what} to {who or u.client}: {human_size(u.sent)} / {human_size(u.total)}"
            f"{where}")


def sent_by(p):
    """'from 10.0.0.7:41237', 'from 5 peers' when several send at once, or 'connecting'
    before any holder has sent a byte (after a stall, say)."""
    if p.sources > 1:
        return f"from {p.sources} peers"
    return f"from {p.source}" if p.source else "connecting"


def rates_text(pairs, most=SOURCES_SHOWN):
    """'10.0.0.7:41237 4.0 MiB/s, 10.0.0.8:41237 3.9 MiB/s' for (address, bytes/s)
    pairs, the first ``most`` of them and then how many more."""
    shown = ", ".join(f"{address} {human_size(rate)}/s" for address, rate in pairs[:most])
    return shown + (f", +{len(pairs) - most} more" if len(pairs) > most else "")


def sent_by_each(p):
    """``sent_by``, with each holder's rate when several send: 'from 2 peers
    (10.0.0.7:41237 4.0 MiB/s, 10.0.0.8:41237 3.9 MiB/s)'."""
    if len(p.each) < 2:
        return sent_by(p)
    return f"{sent_by(p)} ({rates_text([(s.address, s.rate) for s in p.each])})"


def job_line(job):
    """'song.mp3 52 % 5.0 MiB/s from 5 peers, limited by this machine's link',
    'big.bin waiting for its turn', or 'big.bin 10 % waiting for a free upload slot,
    3 holders busy'."""
    p = job.progress
    if job.state == "waiting" or p is None:
        return f"{job.name} {'waiting for its turn' if job.state == 'waiting' else 'starting'}"
    done = 100 * p.done / p.total if p.total else 0.0
    if p.waiting:
        return f"{job.name} {done:.0f} % {p.waiting}"
    limit = f", {p.limit}" if p.limit else ""
    return f"{job.name} {done:.0f} % {human_size(p.rate)}/s {sent_by(p)}{limit}"


def job_lines(job):
    """Option 4's lines for a running download: ``job_line``, then each holder sending
    and its rate, when several send."""
    p = job.progress
    each = p.each if p is not None and not p.waiting and len(p.each) > 1 else ()
    width = max((text_width(s.address) for s in each), default=0)
    return [job_line(job)] + [f"  {pad(s.address, width)}  {human_size(s.rate)}/s"
                              for s in each]


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


def session_line(job, present=True):
    """Option 4's line for a download that ended this session (the sentence above the
    menu said the rest); ``present``: its saved file is still there."""
    if job.state == "failed":
        return f"{job.name}: failed: {job.error.message}"
    if job.state == "cancelled":
        return f"{job.name}: stopped; the partial file is kept (option 2 resumes it)"
    result = job.result
    if result.already:
        return f"{job.name}: already here as {result.path}"
    if not present:
        return f"{job.name}: saved as {result.path}, since deleted"
    return f"{job.name}: saved as {result.path} ({human_size(result.size)})"


def quit_question(downloads, uploads):
    """What quitting now stops, then 'Quit now? [y/N] '; '' when it stops nothing."""
    said = []
    if downloads:
        one = downloads == 1
        said.append(f"{plural(downloads, 'download')} {'is' if one else 'are'} running: "
                    f"quitting stops {'it' if one else 'them'}, and "
                    f"{'it resumes' if one else 'they resume'} where "
                    f"{'it' if one else 'they'} stopped when you start this peer again.")
    if uploads:
        one = uploads == 1
        said.append(f"{plural(uploads, 'upload')} to other peers {'is' if one else 'are'} "
                    f"running: quitting cuts {'it' if one else 'them'} off, and those peers "
                    "carry on from another holder if there is one.")
    return " ".join(said) + " Quit now? [y/N] " if said else ""


def limit_line(limit):
    """The banner's line about --upload-limit (bytes/s; 0: none)."""
    return f"Uploads limited to {human_size(limit)}/s in all (--upload-limit)." if limit else ""


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


def describe_unfinished(u, file):
    """'song.mp3  45.2 %  (5.4 MiB of 12.0 MiB)', or its bytes when nobody shares it now."""
    if file is None:
        return f"{u.name}  {human_size(u.done)} so far (nobody shares it right now)"
    done = 100 * u.done / file["size"] if file["size"] else 100.0
    return f"{u.name}  {done:.1f} %  ({human_size(u.done)} of {human_size(file['size'])})"


def unfinished_lines(title, found):
    """``title`` and a line per (Unfinished, file) in ``found``; none when nothing is."""
    return [title] + [f"  {describe_unfinished(u, file)}" for u, file in found] if found else []


def versions_line(v):
    """' 2) 14 B, SHA-256 0123456789abcdef…, 1 holder(s)' without the number."""
    return f"{human_size(v['size'])}, SHA-256 {v['sha256'][:16]}…, {v['holders']} holder(s)"


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


def download_speed_line(p):
    """Option 3's line on how fast a peer downloads a file, from its partial record:
    'song.mp3 52 %, 8.0 MiB/s from 10.0.0.7:41237 4.0 MiB/s, 10.0.0.8:41237 4.0 MiB/s,
    limited by ...'; None when its peer did not say (an older peer)."""
    if not p.get("rate") and not p.get("limit"):
        return None
    line = f"{p['name']} {percent(p['done'], p['size'])} %"
    if p.get("rate"):
        line += f", {human_size(p['rate'])}/s"
    if p.get("sources"):
        line += " from " + rates_text([(s["address"], s["rate"]) for s in p["sources"]])
    return line + (f", {p['limit']}" if p.get("limit") else "")


def downloading_line(p):
    """A partial holder's files in option 3: 'song.mp3 45 %', or 'song.mp3 45 % (stalled)'
    while it waits for a holder to come back."""
    return f"{p['name']} {percent(p['done'], p['size'])} %" + (" (stalled)" if p.get(
        "stalled") else "")

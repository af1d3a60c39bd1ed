"""The load balancer's page (``GET /``): its peers and its files as HTML, refreshing itself.

Built from ``Registry.status()`` and ``Registry.find_files()``; everything that came from a
peer is escaped. The figures agree with one another and with the menu: a peer's load is
the upload slots in use as far as the load balancer knows (the uploads it reported, plus
the transfers handed out since its report), drawn against its slots; sizes are written as
the menu writes them (``core/units.py``), the exact bytes in a tooltip; a peer that shares
nothing and downloads is shown as a downloader, with what it downloads and how far.
"""

import html
from urllib.parse import quote

from p2p.core.units import human_size
from p2p.core.wire import format_address, percent

STATUS_REFRESH_S = 2
PAGE_FILES = 200  # files listed on the page, with links
PAGE_PARTIAL = 8  # files being downloaded listed per peer on the page
PAGE_NAMES = 8  # names of a peer's files shown in its row

STYLE = """body{font-family:sans-serif;margin:2em} table{border-collapse:collapse}
td,th{border-bottom:1px solid #ddd;padding:.4em .8em;text-align:left;vertical-align:top}
.bar{display:inline-block;width:8em;height:.8em;background:#eee;margin-right:.5em}
.bar span{display:block;height:100%;background:#4a8}"""


def file_link(name, base="", sha256=None):
    """An HTML link to ``name`` under ``base`` (a peer's URL; blank: this redirector)."""
    url = f"{base}/files/{quote(name, safe='/')}" + (f"?sha256={sha256}" if sha256 else "")
    return f"<a href=\"{html.escape(url)}\">{html.escape(name)}</a>"


def size_text(size):
    """A size as the menu writes it, with the exact bytes in a tooltip."""
    return f"<span title=\"{size} bytes\">{human_size(size)}</span>"


def plural(count, noun):
    return f"{count} {noun}{'' if count == 1 else 's'}"


def downloading_lines(partial):
    return "".join(f"<br><small>downloading {html.escape(d['name'])}: "
                   f"{percent(d['done'], d['size'])} % of {size_text(d['size'])}"
                   f"{' (stalled: waiting for a holder)' if d.get('stalled') else ''}</small>"
                   for d in partial[:PAGE_PARTIAL])


def shares_cell(peer, base):
    """What a peer shares (a few names linked to it), and what it downloads."""
    files, partial = peer["files"], peer["partial"]
    if not files:
        what = "<b>downloader</b>" if partial else "shares nothing yet"
        return what + downloading_lines(partial)
    names = ", ".join(file_link(n, base) for n in files[:PAGE_NAMES])
    if len(files) > PAGE_NAMES:
        names += f", … ({len(files) - PAGE_NAMES} more)"
    return f"{plural(len(files), 'file')}<br><small>{names}</small>" + downloading_lines(partial)


def load_cell(peer, most):
    """Its slots in use as a bar (against its slots, or the busiest peer's load when it did
    not say), and what they are: uploads it reported, transfers handed out since."""
    active, slots, uploads = peer["active"], peer["slots"], peer["uploads"]
    width = int(100 * min(active, slots) / slots) if slots else int(100 * active / most)
    count = f"{active} of {plural(slots, 'slot')}" if slots else plural(active, "transfer")
    handed = active - uploads
    detail = f"uploading {uploads}" + (f", {handed} handed out since its last report"
                                       if handed else "")
    return (f"<div class=bar><span style='width:{width}%'></span></div>{count}"
            f"<br><small>{detail}</small>")


def peer_row(peer, most):
    address = format_address(peer["host"], peer["port"])
    base = f"http://{address}"
    who = html.escape(peer.get("name") or "")
    return (f"<tr><td><a href=\"{html.escape(base)}/\">{html.escape(address)}</a> {who}<br>"
            f"<small>{html.escape(peer['id'])}</small></td>"
            f"<td>{shares_cell(peer, base)}</td><td>{load_cell(peer, most)}</td>"
            f"<td>{peer['served']}</td><td>{peer['failed']}</td>"
            f"<td>{peer['last_seen_s']:.0f} s ago</td></tr>")


def file_row(f):
    return (f"<tr><td>{file_link(f['name'], sha256=f['sha256'])}</td><td>{size_text(f['size'])}"
            f"</td><td>{f['holders']}</td><td>{f['partial']}</td>"
            f"<td><code>{f['sha256'][:16]}</code></td></tr>")


def render_status_page(status, files=(), truncated=False):
    """The status and ``files`` as an HTML page."""
    peers = status["peers"]
    most = max([p["active"] for p in peers] + [1])
    table = "".join(peer_row(p, most) for p in peers) \
        or "<tr><td colspan=6>No peer is registered.</td></tr>"
    more = f"<p>Only the first {len(files)} files are listed.</p>" if truncated else ""
    return f"""<!doctype html>
<html><head><meta charset=utf-8><meta http-equiv=refresh content={STATUS_REFRESH_S}>
<title>P2P load balancer</title><style>
{STYLE}</style></head><body>
<h1>P2P load balancer</h1>
<p>Policy: <b>{html.escape(status['policy'])}</b> · {plural(len(peers), 'peer')} ·
refreshes every {STATUS_REFRESH_S} s · <a href="/status">JSON</a></p>
<table><tr><th>Peer</th><th>Shares</th><th>Upload slots in use</th><th>Served</th>
<th>Failed</th><th>Last seen</th></tr>{table}</table>
<h2>Files</h2><p>A name downloads from its least-loaded holder.</p>
<table><tr><th>Name</th><th>Size</th><th>Holders</th><th>Downloading</th><th>SHA-256</th></tr>
{"".join(file_row(f) for f in files)}</table>
{more}</body></html>
"""

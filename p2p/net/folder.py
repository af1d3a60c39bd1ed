"""Downloading a folder: every file under ``NAME/`` on the network, one after another.

The load balancer's ``GET /files?q=NAME/`` says what is under the folder
(``core/folder.py`` decides which files, and adds up the progress); each file
is an ordinary download (``download.py``: verified, resumable from its partial
file, kept at its path under ``downloads/``), so running the same command
again resumes the folder: the files already there are found complete, the
interrupted one carries on from its partial file.
"""

import os

from p2p.core.folder import FolderProgress, folder_files
from p2p.net.download import DownloadError, Result
from p2p.net.lb_client import LBClientError


def get_folder(lb, folder, make_downloader, on_progress=None, source=None):
    """Download every file under ``folder``; ([Result], [(name, error message)]).

    ``make_downloader(on_progress)`` gives a downloader (``.get(name, sha256, source)``);
    FolderError (from ``folder_files``) and LBClientError when the listing fails."""
    answer = lb.files(folder)
    files = folder_files(folder, answer.get("files", []), answer.get("truncated", False))
    progress = FolderProgress(folder, files, on_progress)
    results, failures = [], []
    for name, size in files:
        try:
            results.append(make_downloader(progress).get(name, None, source))
        except (DownloadError, LBClientError) as e:
            failures.append((name, e.message))
        progress.file_done(size)
    return results, failures


def folder_result(folder, root, results):
    """One Result for a folder downloaded into ``root``: its path, bytes and sources."""
    sources = [s for r in results for s in r.sources]
    return Result(os.path.join(root, *folder.strip("/").split("/")), folder,
                  sum(r.size for r in results), "", all(r.already for r in results),
                  sum(r.received for r in results), sources=sources)

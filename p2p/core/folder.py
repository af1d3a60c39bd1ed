"""Folders on the network: which files a folder name means, and one progress for all of them.
Pure; no sockets.

A name ending in ``/`` (``Photos/``) is a folder: every file shared under it,
at any depth, in name order, each downloaded and verified on its own and kept
at its path under ``downloads/`` (``downloads/Photos/2024/a.jpg``). A name
shared as several versions is left to the load balancer to choose, as for
one file. ``FolderProgress`` turns each file's progress into one for the
whole folder: bytes of the files finished plus the current file's, over the
folder's total; finished only with the last file.
"""

import dataclasses

MAX_FOLDER_FILES = 1000  # a folder download takes at most this many files


class FolderError(ValueError):
    """A folder that cannot be downloaded (the message says why)."""


def is_folder(name):
    return name.endswith("/") and name.strip("/") != ""


def folder_files(folder, listing, truncated=False):
    """[(name, size)] of the files under ``folder`` in ``listing`` (the load balancer's
    ``GET /files`` entries), by name; FolderError when there is none or too many."""
    sizes = {}
    for entry in listing:
        name = entry.get("name", "")
        if name.startswith(folder) and name != folder:
            sizes[name] = max(sizes.get(name, 0), int(entry.get("size", 0)))
    if truncated or len(sizes) > MAX_FOLDER_FILES:
        raise FolderError(f"{folder!r} holds more than {MAX_FOLDER_FILES} files; download one "
                          "of its folders at a time.")
    if not sizes:
        raise FolderError(f"Nobody shares a file under {folder!r}; list the files on the "
                          "network to see what there is.")
    return sorted(sizes.items())


class FolderProgress:
    """Wraps a progress callback: each file's Progress becomes the folder's."""

    def __init__(self, folder, files, on_progress):
        self.folder = folder
        self.total = sum(size for _, size in files)
        self.count = len(files)
        self.on_progress = on_progress
        self.before = 0  # bytes of the files already finished
        self.index = 0  # the file being downloaded (0-based)

    def __call__(self, p):
        last = self.index == self.count - 1
        whole = dataclasses.replace(
            p, name=f"{self.folder} ({self.index + 1}/{self.count})",
            done=self.before + p.done, total=self.total, finished=p.finished and last)
        if self.on_progress is not None:
            self.on_progress(whole)

    def file_done(self, size):
        """The current file is finished (downloaded, already had, or failed)."""
        self.before += size
        self.index += 1

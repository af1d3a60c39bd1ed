"""``peer.py get NAME -o FILE``: the downloaded file under the name the person chose.

The download itself happens in ``--downloads`` as always (its partial file stays
there, so the same command resumes); once verified, the file is moved to
``FILE`` (or into ``FILE`` when that is a folder), never over a different file:
a hard link where the folder allows one (atomic, never replacing), otherwise a
copy under a hidden name first. ``check_target`` refuses before anything is
downloaded when a different file is already there.
"""

import logging
import os
import shutil
import tempfile

from p2p.net.download import DownloadError
from p2p.net.partial import same_content

log = logging.getLogger("p2p.peer")


class AlreadyThere(Exception):
    """The file at -o already has the content asked for: nothing to download."""


def target_path(out, name):
    """Where ``-o out`` puts the file called ``name`` on the network."""
    return os.path.join(out, os.path.basename(name)) if os.path.isdir(out) else out


def different(target):
    return DownloadError(f"{target} exists and is a different file; it is not overwritten. "
                         "Give -o another name, or move that file away.")


def check_target(target, versions):
    """Before downloading: AlreadyThere when ``target`` holds one of ``versions`` (records
    with size and sha256), DownloadError when it holds something else."""
    if not os.path.lexists(target):
        return
    if not os.path.isfile(target):
        raise DownloadError(f"{target} exists and is not a file; it is not overwritten.")
    for v in versions:
        if same_content(target, v["size"], v["sha256"]):
            raise AlreadyThere(target)
    if versions:
        raise different(target)


def place(result, target):
    """Put the verified download of ``result`` at ``target``; the path it is at now."""
    if os.path.abspath(target) == os.path.abspath(result.path):
        return target
    if os.path.lexists(target):
        if not same_content(target, result.size, result.sha256):
            raise DownloadError(f"{target} exists and is a different file; it is not "
                                f"overwritten. The download is kept at {result.path}.")
    else:
        link_or_copy(result.path, target)
    if not result.already:  # downloaded now, for this place only; else it was there before
        os.unlink(result.path)
    return target


def link_or_copy(source, target):
    """``source`` also at ``target``, which must not exist: never a half-written ``target``."""
    try:
        os.link(source, target)
        return
    except FileExistsError:
        raise DownloadError(f"{target} appeared meanwhile; it is not overwritten.") from None
    except OSError as e:  # another file system, or none that links: copy
        log.debug("cannot link %s to %s (%s): copying", source, target, e)
    folder, name = os.path.split(os.path.abspath(target))
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(source, temporary)
        try:
            os.link(temporary, target)
        except FileExistsError:
            raise DownloadError(f"{target} appeared meanwhile; it is not overwritten.") from None
        except OSError:
            if os.path.lexists(target):
                raise DownloadError(f"{target} appeared meanwhile; it is not overwritten.") \
                    from None
            os.replace(temporary, target)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)

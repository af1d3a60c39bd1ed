"""Benchmark: what one look at the shared folders costs (the peer does it every second).

    python bench/scan.py [--files 10000] [--folders 100] [--runs 20]

Makes ``--files`` small files spread over ``--folders`` folders in a temporary folder,
hashes them once (so the hash cache holds them all, as on a peer that has been running),
then times ``ShareIndex.refresh()`` — a walk and a ``stat`` of every file, nothing read —
``--runs`` times with nothing changed, and once after adding and once after removing a
file. Prints the best and median times in milliseconds.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from p2p.net.sharing import ShareIndex  # noqa: E402

HASH_TIMEOUT_S = 600.0


def timed(index):
    start = time.perf_counter()
    changed = index.refresh()
    return (time.perf_counter() - start) * 1000, changed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--folders", type=int, default=100)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="p2p-scan-")
    try:
        for i in range(args.files):
            folder = os.path.join(root, f"folder{i % args.folders}")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"file{i}.txt"), "w") as f:
                f.write(str(i))
        index = ShareIndex([root])
        index.refresh()
        if not index.wait_hashed(HASH_TIMEOUT_S):
            raise SystemExit("hashing did not finish")
        times = [timed(ShareIndex([root]))[0]]  # a restart: every hash from the cache
        print(f"{args.files} files: first scan after a restart {times[0]:.0f} ms")
        quiet = [timed(index)[0] for _ in range(args.runs)]
        print(f"rescan, nothing changed: best {min(quiet):.0f} ms, "
              f"median {statistics.median(quiet):.0f} ms ({args.runs} runs)")
        added = os.path.join(root, "new.txt")
        with open(added, "w") as f:
            f.write("new")
        ms, _ = timed(index)
        print(f"rescan finding a new file: {ms:.0f} ms (hashed and announced after it)")
        index.wait_hashed(HASH_TIMEOUT_S)
        os.unlink(added)
        ms, changed = timed(index)
        print(f"rescan finding a removed file: {ms:.0f} ms (changed: {changed})")
        index.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

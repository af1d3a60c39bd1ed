"""Benchmark: what a listed file costs the load balancer, in memory and in time.

    python bench/lb_files.py [--files 100000] [--peers 1]

Builds the JSON body of ``--peers`` peers each sharing ``--files`` files (names like
``folder12/file012345.bin``, two hashes each, as ``peer.py`` announces them), then, in this
process, does what the load balancer does with them: parses each body (``json.loads``,
``parse_register``) and registers it (``Registry.register``). It reports:

* the memory the registry holds per listed file, traced (``tracemalloc``, the parsed
  records and the index, once the bodies are dropped) and resident (``VmRSS`` from /proc,
  in a second pass without tracing), against the size of a file's record on the wire;
* the time to parse and register one peer's body, and to take a heartbeat that resends
  its whole list unchanged (what a peer sends after any change to its folder), against the
  default heartbeat interval;
* the body's size against the load balancer's limit for it (``MAX_PEER_BODY_BYTES``).

The second and later peers share the first one's files (the same names and hashes), so
``--peers`` above 1 shows what a file held by several peers costs.
"""

import argparse
import gc
import json
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from p2p.core.lb_limits import DEFAULT_HEARTBEAT_S, MAX_PEER_BODY_BYTES  # noqa: E402
from p2p.core.lb_requests import parse_heartbeat, parse_register  # noqa: E402
from p2p.core.registry import Registry  # noqa: E402


def body(files, port):
    records = [{"name": f"folder{i % 100}/file{i:06d}.bin", "size": 1000 + i,
                "sha256": f"{i:064x}", "pieces": f"{i + 1:064x}"} for i in range(files)]
    return json.dumps({"port": port, "files": records}).encode()


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def register_all(registry, bodies):
    """Register each body as the server would; returns the seconds each took, and the
    first peer's record."""
    times, first = [], None
    for i, raw in enumerate(bodies):
        start = time.perf_counter()
        request = parse_register(json.loads(raw), f"10.0.0.{i + 1}")
        peer = registry.register(**request, source=request["host"])
        times.append(time.perf_counter() - start)
        first = first or peer
    return times, first


def traced(bodies, listed):
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    registry = Registry(heartbeat_s=3600.0)
    register_all(registry, bodies)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / listed, registry


def resident(bodies, listed):
    gc.collect()
    before = rss_bytes()
    registry = Registry(heartbeat_s=3600.0)
    times = register_all(registry, bodies)
    gc.collect()
    return (rss_bytes() - before) / listed, times, registry


def heartbeat_s(registry, peer, raw):
    start = time.perf_counter()
    registry.heartbeat(peer.id, peer.token, **parse_heartbeat(json.loads(raw)))
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--peers", type=int, default=1)
    args = parser.parse_args(argv)
    bodies = [body(args.files, 7000 + p) for p in range(args.peers)]
    listed = args.files * args.peers
    wire = len(bodies[0]) / args.files
    print(f"{args.peers} peer(s) x {args.files:,} files: body {len(bodies[0]):,} bytes "
          f"({wire:.0f} a file), limit {MAX_PEER_BODY_BYTES:,} "
          f"({len(bodies[0]) / MAX_PEER_BODY_BYTES:.0%} of it)")
    per_file, registry = traced(bodies, listed)
    print(f"traced: {per_file:.0f} bytes a listed file ({per_file / wire:.1f}x its record "
          f"on the wire), {per_file * listed / 2**20:.0f} MiB in all")
    del registry
    per_file, (times, first), registry = resident(bodies, listed)
    print(f"resident: {per_file:.0f} bytes a listed file, {per_file * listed / 2**20:.0f} "
          "MiB in all")
    print(f"parse + register a body: {min(times) * 1000:.0f} ms (best of {len(times)})")
    beat = heartbeat_s(registry, first, bodies[0].replace(b'"port": 7000, ', b""))
    print(f"heartbeat resending the whole list unchanged: {beat * 1000:.0f} ms "
          f"({beat / DEFAULT_HEARTBEAT_S:.1%} of the {DEFAULT_HEARTBEAT_S:g} s interval)")


if __name__ == "__main__":
    main()

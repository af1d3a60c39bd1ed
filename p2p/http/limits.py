"""The HTTP servers' settings, each with its unit in its name, in one frozen record.

``LIMITS`` holds the defaults; a server takes its own values for a few of them as arguments
(``max_connections``, ``timeout``, ``request_deadline``, ``workers``).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Timeouts in seconds (``_s``) or milliseconds (``_ms``), sizes in bytes, counts bare."""

    socket_timeout_s: float = 30.0  # idle keep-alive connection; each read or write of a request
    max_connections: int = 1000  # connections held at once, idle ones included
    source_share: int = 4  # one address may hold at most 1/source_share of the connections
    workers: int = 32  # threads serving whole requests at once
    head_deadline_s: float = 10.0  # from a request's first byte (or the accept) to its head
    max_head_bytes: int = 64 * 1024  # a request head larger than this is refused (431)
    max_buffered_body_bytes: int = 64 * 1024  # bodies up to this arrive before a worker is used
    read_chunk_bytes: int = 64 * 1024
    accept_batch: int = 64  # connections accepted per wake-up of the selector
    select_tick_s: float = 0.25  # how often the selector looks at deadlines
    keepalive_linger_s: float = 0.5  # a worker waits this long for a keep-alive client's next
    linger_slice_ms: int = 10  # request, looking this often whether another request needs it more
    linger_read_bytes: int = 4096  # read at a time while lingering: requests are small
    refuse_linger_s: float = 1.0  # a refused connection is drained this long, so the answer arrives
    reserved_fds: int = 64  # file descriptors kept for files, logs and the load balancer client
    max_body_bytes: int = 8 * 1024 * 1024  # JSON request bodies
    reply_buffer_bytes: int = 64 * 1024  # one write per small reply
    max_header_line_bytes: int = 64 * 1024
    max_headers: int = 100
    parsed_heads_kept: int = 64  # blocks of header lines remembered parsed (clients repeat theirs)
    parsed_head_max_bytes: int = 2048  # ... each at most this long
    busy_retry_after_s: int = 1
    request_deadline_s: float = 60.0  # to send a whole request (line, headers, body), however slow
    reap_interval_s: float = 1.0
    quiet_log_interval_s: float = 10.0  # a warning about refused input at most this often a kind

    @property
    def max_request_buffer_bytes(self):
        """What the selector holds of one request at most: its head and a small body."""
        return self.max_head_bytes + self.max_buffered_body_bytes


LIMITS = Limits()

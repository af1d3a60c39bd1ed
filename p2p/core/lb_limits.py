"""The load balancer's settings and limits, in one place, each with its unit.

Times are in seconds (``_S``), sizes in bytes (``_BYTES``), counts bare. A limit that
follows from others is derived from them here, so that the two ends agree: a peer may
share ``MAX_FILES_PER_PEER`` files, so the body of its registration or heartbeat may be
as long as that many file records take (``MAX_PEER_BODY_BYTES``).
"""

DEFAULT_PORT = 6969

# -- peers --------------------------------------------------------------------
DEFAULT_HEARTBEAT_S = 10.0
MISSED_BEATS = 3  # heartbeats or renewals missed before a peer or transfer is dropped
MAX_PEERS = 100_000
MAX_PEERS_PER_HOST = 32  # live registrations from one host (a Sybil flood stops here)
MAX_PEER_NAME_CHARS = 64
MAX_FILES_PER_PEER = 100_000
MAX_PARTIAL_PER_PEER = 1000  # files one peer may announce it is downloading
MAX_SLOTS = 1000  # upload slots a peer may announce

# -- the body of POST /peers and PUT /peers/ID, derived from the counts above -----------
# A file record is {"name", "size", "sha256", "pieces"}: two 64-digit hashes, the keys, a
# size and the comma between records take about 200 bytes, so 300 leaves an average name
# of 100 bytes (JSON-escaped: 100 ASCII characters, or 16 written as \uXXXX).
FILE_RECORD_BUDGET_BYTES = 300
PARTIAL_RECORD_BUDGET_BYTES = FILE_RECORD_BUDGET_BYTES + 20  # and its "done"
BODY_ROOM_BYTES = 64 * 1024  # the port, host, name, slots and uploads around the lists
MAX_PEER_BODY_BYTES = (MAX_FILES_PER_PEER * FILE_RECORD_BUDGET_BYTES
                       + MAX_PARTIAL_PER_PEER * PARTIAL_RECORD_BUDGET_BYTES + BODY_ROOM_BYTES)

# -- transfers ------------------------------------------------------------------
FAIL_COOLDOWN_S = 10.0  # a holder whose transfer failed is skipped this long (nginx fail_timeout)
FAIL_QUORUM = 2  # distinct requester hosts whose failures sideline a holder for everyone
MAX_FAILURE_SOURCES = 64  # requester hosts remembered per holder for its cool-down
TRANSFER_ID_BYTES = 12  # random bytes of a transfer id: not guessable from another one
TRANSFER_SECRET_BYTES = 18  # random bytes of the secret that renews or ends a transfer
TOKEN_BATCH = 64  # transfers whose ids and secrets are drawn from the random source at once
PEER_TOKEN_BYTES = 18  # random bytes of the token a peer heartbeats with
PEER_ID_BYTES = 6
MAX_SOURCES = 8  # holders one POST /transfers may ask for ("count")
BUSY_RETRY_S = 1  # Retry-After of "every holder is busy": a slot frees in about this long
MAX_EXCLUDE = 1000
CHECKED_NAMES_KEPT = 4096  # file names of picks remembered as checked (each at most 1,024 chars)
OUTCOMES = ("done", "failed", "cancelled")

# -- listings -------------------------------------------------------------------
MAX_LISTED_FILES = 1000  # GET /files answers at most this many entries

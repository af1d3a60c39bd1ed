"""The load balancer's refusals: one class per meaning, each with the HTTP status it is
answered with. ``message`` is the sentence a person reads, ``extra`` more fields of the
JSON answer (``p2p.core.errors.Problem``)."""

from p2p.core.errors import Problem
from p2p.core.lb_limits import BUSY_RETRY_S


class LBError(Problem):
    """A decision of the registry against a request: ``message`` and ``extra`` are its answer."""

    status = 500


class Invalid(LBError):
    """The request is malformed or out of bounds."""

    status = 400


class Forbidden(LBError):
    """A wrong or missing token or secret."""

    status = 403


class NotFound(LBError):
    """No such peer, transfer or file (or no holder other than the requester)."""

    status = 404


class Conflict(LBError):
    """Another peer owns that address, or several versions of a name and none leads."""

    status = 409


class HostFull(LBError):
    """The host already has as many live registrations as one host may have."""

    status = 429


class Unavailable(LBError):
    """Nobody left to hand out: every holder was tried, or the load balancer is full."""

    status = 503


class Busy(Unavailable):
    """Every holder left has all its upload slots taken: ask again after ``retry_after``."""

    def __init__(self, message, busy, retry_after=BUSY_RETRY_S):
        super().__init__(message, busy=busy, retry_after=retry_after)
        self.headers = {"Retry-After": str(retry_after)}

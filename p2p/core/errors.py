"""The one base of every error a person reads: a status and a sentence."""


class Problem(Exception):
    """A status and a sentence: the base of every module's errors that a person reads.

    ``message`` is the sentence, one a person can act on; ``status`` the HTTP status it is
    answered with, or came in as (None when no HTTP answer is involved, as for a download
    that failed on disk); ``extra`` more fields of its JSON answer and ``headers`` more
    headers. An edge turns any of them into a message (``message``) or an answer
    (``JSONRequestHandler.send_problem``) the same way.
    """

    status = None

    def __init__(self, message, status=None, **extra):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = int(status)
        self.extra = extra
        self.headers = {}


class IllegalTransition(Problem):
    """A state machine was asked for a move its transition table does not have: a bug of
    the program, never the doing of a peer or a client."""

    status = 500

"""The load balancer's answer to a pick (``POST /transfers``' 201), as JSON bytes. Pure.

``transfer_answer`` writes the very bytes ``json.dumps(..., separators=(",", ":"),
ensure_ascii=False)`` makes of the answer's object (``transfer_answer_object``), key for
key, without the json module: through it, the small object cost as much as the pick itself
(an encoder made per call, a float written by ``float.__repr__`` through Python). Strings go
through the json module's own C escaping (``encode_basestring``), numbers as it writes them
(``int``'s ``str``, ``float``'s ``repr``), each holder as the JSON its record keeps
(``PeerRecord.public_json``); an answer that cannot be UTF-8 (a lone surrogate in a name
someone registered) is written with ASCII escapes, as ``encode_json`` does.
"""

import json
from json.encoder import encode_basestring as quoted

COMPACT = {"separators": (",", ":")}


def transfer_answer_object(handout, renew_s):
    """The answer to a pick of ``handout`` (a ``Registry.pick``) as a JSON object."""
    first = handout.first
    answer = {"transfer_id": first.id, "secret": first.secret, "peer": first.holder.public(),
              "file": first.file.as_dict(), "renew_s": renew_s,
              "sources": [{"transfer_id": t.id, "secret": t.secret, "peer": t.holder.public(),
                           "done": t.done} for t in handout.transfers],
              "pieces": handout.pieces, "downloading": handout.downloading}
    if handout.others:
        answer["versions"] = handout.others
    return answer


def transfer_answer(handout, renew_s):
    """The body of ``POST /transfers``' 201 for ``handout``: ``transfer_answer_object``
    as compact JSON, UTF-8."""
    first = handout.first
    file = first.file
    pieces = "" if file.pieces is None else f',"pieces":{quoted(file.pieces)}'
    sources = ",".join(
        f'{{"transfer_id":{quoted(t.id)},"secret":{quoted(t.secret)},'
        f'"peer":{t.holder.public_json()},"done":{"null" if t.done is None else int(t.done)}}}'
        for t in handout.transfers)
    versions = "" if not handout.others else \
        f',"versions":{json.dumps(handout.others, ensure_ascii=False, **COMPACT)}'
    text = (f'{{"transfer_id":{quoted(first.id)},"secret":{quoted(first.secret)},'
            f'"peer":{first.holder.public_json()},"file":{{"name":{quoted(file.name)},'
            f'"size":{int(file.size)},"sha256":{quoted(file.sha256)}{pieces}}},'
            f'"renew_s":{float(renew_s)!r},"sources":[{sources}],'
            f'"pieces":{"null" if handout.pieces is None else quoted(handout.pieces)},'
            f'"downloading":{int(handout.downloading)}{versions}}}')
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from someone's input: escape, don't fail
        return json.dumps(transfer_answer_object(handout, renew_s), **COMPACT).encode("ascii")

"""Tests of the load balancer's hot path, pure parts: the pick's answer written without the
json module (``p2p/core/lb_answers.py``), the ids and secrets drawn in batches
(``lb_leases.Tokens``) and the file names remembered as checked (``lb_requests``)."""

import base64
import json
import re
import unittest

from p2p.core import lb_requests
from p2p.core import registry as lb_core
from p2p.core.lb_answers import transfer_answer, transfer_answer_object
from p2p.core.lb_leases import Tokens
from p2p.core.lb_limits import TRANSFER_ID_BYTES, TRANSFER_SECRET_BYTES
from p2p.core.clock import FakeClock
from p2p.core.wire import BadRecord, FileRecord, PartialRecord

SHA_A, SHA_B, PIECES = "a" * 64, "b" * 64, "c" * 64


def json_module_bytes(handout, renew_s):
    """What ``encode_json`` made of the answer's object before: the bytes to match."""
    obj = transfer_answer_object(handout, renew_s)
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


class TransferAnswerTests(unittest.TestCase):
    def registry(self, name, peer_name="", renew_s=30.0):
        registry = lb_core.Registry(heartbeat_s=10.0, renew_s=renew_s, clock=FakeClock())
        for i in range(3):
            pieces = PIECES if i else None
            registry.register(f"10.0.0.{i + 1}", 7000 + i, [FileRecord(name, 10 ** 9, SHA_A,
                                                                      pieces)],
                              name=peer_name)
        registry.register("10.0.1.1", 7000, [],
                          partial=[PartialRecord(FileRecord(name, 10 ** 9, SHA_A), 12345)])
        return registry

    def test_the_bytes_are_the_json_modules_for_every_shape_of_answer(self):
        names = ["plain.bin", "dossier/été \u2603.txt", 'quote"and\\back\tslash.txt',
                 "lone \udc80 surrogate.txt"]
        for name in names:
            for peer_name, renew_s, count in [("", 30.0, None), ("Zoë's \u00e9", 0.5, 4),
                                              ("x", 1e-7, 2)]:
                with self.subTest(name=name, peer_name=peer_name, count=count):
                    registry = self.registry(name, peer_name, renew_s)
                    handout = registry.pick(name, count=count)
                    self.assertEqual(transfer_answer(handout, registry.renew_s),
                                     json_module_bytes(handout, registry.renew_s))

    def test_other_versions_and_the_agreed_piece_list_are_written_too(self):
        registry = self.registry("f")
        registry.register("10.0.0.9", 7000, [FileRecord("f", 5, SHA_B)])
        handout = registry.pick("f")
        self.assertTrue(handout.others)
        answer = transfer_answer(handout, registry.renew_s)
        self.assertEqual(answer, json_module_bytes(handout, registry.renew_s))
        self.assertEqual(json.loads(answer)["versions"][0]["sha256"], SHA_B)


class TokensTests(unittest.TestCase):
    def test_each_token_is_the_url_safe_base64_of_its_own_random_bytes(self):
        tokens = Tokens(batch=5)
        pairs = [tokens.pair() for _ in range(12)]  # three batches
        self.assertEqual(len(set(pairs)), 12)
        for transfer_id, secret in pairs:
            self.assertEqual(len(base64.urlsafe_b64decode(transfer_id)), TRANSFER_ID_BYTES)
            self.assertEqual(len(base64.urlsafe_b64decode(secret)), TRANSFER_SECRET_BYTES)
            self.assertRegex(transfer_id + secret, re.compile(r"[A-Za-z0-9_-]+\Z"))

    def test_sizes_that_would_cut_a_base64_quantum_are_refused(self):
        with self.assertRaises(ValueError):
            Tokens(id_bytes=16)

    def test_transfers_get_distinct_ids_and_secrets(self):
        registry = TransferAnswerTests().registry("f")
        transfers = [registry.pick("f").first for _ in range(200)]
        self.assertEqual(len({t.id for t in transfers}), 200)
        self.assertEqual(len({t.secret for t in transfers}), 200)


class CheckedNameTests(unittest.TestCase):
    def test_a_name_alone_gives_the_defaults_and_a_bad_name_is_refused_every_time(self):
        self.assertEqual(lb_requests.parse_transfer_request({"name": "a/b.txt"}),
                         {"name": "a/b.txt", "sha256": None, "peer": None, "exclude": [],
                          "requester": None, "count": None})
        for _ in range(2):
            with self.assertRaises(BadRecord):
                lb_requests.parse_transfer_request({"name": "../etc/passwd"})

    def test_the_other_fields_are_still_checked(self):
        with self.assertRaises(lb_core.Invalid):
            lb_requests.parse_transfer_request({"name": "f", "count": 0})
        self.assertEqual(lb_requests.parse_transfer_request({"name": "f", "count": 2})["count"],
                         2)


if __name__ == "__main__":
    unittest.main()

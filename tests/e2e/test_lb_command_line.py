"""Tests of ``python load_balancer.py`` as a subprocess: its options, output and exit.

Every process wait has a deadline.
"""

import re
import signal
import subprocess
import sys
import time
import unittest

from p2p.net import lb_client
from tests.support import ROOT, read_line

DEADLINE_S = 5.0  # every socket or process wait here is bounded by this or a stated deadline


STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"  # every line of the log starts with one
LISTENING_RE = re.compile(r"listening on (\S+):(\d+)$")


class TestCommandLine(unittest.TestCase):
    def start(self, *args):
        """Start ``load_balancer.py``, not announced: a load balancer of the same network
        elsewhere on this machine would be heard as senior and this one would stand down."""
        proc = subprocess.Popen(
            [sys.executable, "load_balancer.py", "--host", "127.0.0.1", "--no-announce", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def cleanup():
            if proc.poll() is None:
                proc.kill()
            proc.wait(DEADLINE_S)
            proc.stdout.close()
            proc.stderr.close()

        self.addCleanup(cleanup)
        line = read_line(proc.stdout, 10).strip()
        match = LISTENING_RE.fullmatch(line)
        self.assertIsNotNone(match, f"first line was {line!r}")
        self.assertEqual(match.group(1), "127.0.0.1")
        port = int(match.group(2))
        self.assertGreater(port, 0)
        return proc, port

    def run_cli(self, *args, timeout=15):
        return subprocess.run([sys.executable, "load_balancer.py", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)

    def test_listens_answers_and_stops_on_sigterm(self):
        proc, port = self.start("--port", "0")
        client = lb_client.LBClient("127.0.0.1", port, timeout=DEADLINE_S)
        self.addCleanup(client.close)
        status = client.status()
        self.assertEqual((status["policy"], status["peers"]), ("least-connections", []))
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(10), 0)
        log = proc.stderr.read().decode()
        self.assertNotIn("Traceback", log)
        self.assertRegex(log, rf"(?m)^{STAMP} p2p\.lb\.life INFO started \(pid {proc.pid}\): "
                              rf"listening on 127\.0\.0\.1:{port}, network 'p2p', open")
        self.assertRegex(log, rf"(?m)^{STAMP} p2p\.lb\.life INFO exiting: stopped by SIGTERM$")

    def test_sigint_stops_cleanly(self):
        proc, port = self.start("--port", "0")
        client = lb_client.LBClient("127.0.0.1", port, timeout=DEADLINE_S)
        self.addCleanup(client.close)
        self.assertEqual(client.status()["peers"], [])
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(10), 0)
        self.assertNotIn(b"Traceback", proc.stderr.read())

    def test_signal_right_after_listening_line_exits_cleanly(self):
        # BUG (load_balancer.py, main): "listening on ..." is printed before the SIGTERM
        # handler is installed and before the `try:` around serve_forever; a SIGTERM or
        # Ctrl-C that arrives in between (a script that starts the load balancer and stops
        # it at once, e.g. a test or the peer's auto-start) escapes as KeyboardInterrupt
        # from Thread.start(): a traceback and death by SIGINT (-2) instead of exit 0.
        # Fix: install the handler first, and cover everything after the print with the
        # try/except KeyboardInterrupt (or print the line last, just before serving).
        # (A race: a few tries per signal, so that a loaded machine does not hide it.)
        for sig in (signal.SIGTERM, signal.SIGINT):
            for attempt in range(3):
                with self.subTest(signal=sig.name, attempt=attempt):
                    proc, _ = self.start("--port", "0")
                    proc.send_signal(sig)
                    self.assertEqual(proc.wait(10), 0)
                    self.assertNotIn(b"Traceback", proc.stderr.read())

    def test_policy_and_heartbeat_options(self):
        proc, port = self.start("--port", "0", "--policy", "round-robin", "--heartbeat", "2.5")
        client = lb_client.LBClient("127.0.0.1", port, timeout=DEADLINE_S)
        self.addCleanup(client.close)
        self.assertEqual(client.register(7001, [])["heartbeat_s"], 2.5)
        self.assertEqual(client.status()["policy"], "round-robin")

    def test_second_instance_on_same_port_fails_cleanly(self):
        proc, port = self.start("--port", "0")
        result = self.run_cli("--host", "127.0.0.1", "--port", str(port))
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn(str(port), lines[0])
        self.assertIn("give this one its own --port and --network", lines[0])
        self.assertNotIn("Traceback", result.stderr)
        self.assertIsNone(proc.poll())  # the first one is unharmed
        client = lb_client.LBClient("127.0.0.1", port, timeout=DEADLINE_S)
        self.addCleanup(client.close)
        self.assertEqual(client.status()["peers"], [])

    def test_idle_exit_without_peers(self):
        started = time.monotonic()
        proc, _ = self.start("--port", "0", "--idle-exit", "1")
        self.assertEqual(proc.wait(10), 0)
        self.assertGreaterEqual(time.monotonic() - started, 0.9)
        log = proc.stderr.read().decode()
        self.assertNotIn("Traceback", log)
        self.assertRegex(log, rf"(?m)^{STAMP} .* started .*, exits after 1 s without peers$")
        self.assertRegex(log, rf"(?m)^{STAMP} .* exiting: no peer for 1 s \(--idle-exit\)$")

    def test_idle_exit_waits_while_a_peer_is_registered(self):
        proc, port = self.start("--port", "0", "--idle-exit", "1")
        client = lb_client.LBClient("127.0.0.1", port, timeout=DEADLINE_S)
        self.addCleanup(client.close)
        peer = client.register(7001, [])
        with self.assertRaises(subprocess.TimeoutExpired):
            proc.wait(2.2)  # over two idle periods with a peer registered: still running
        client.unregister(peer["peer_id"], peer["token"])
        self.assertEqual(proc.wait(10), 0)

    def test_help(self):
        result = self.run_cli("--help")
        self.assertEqual(result.returncode, 0)
        for option in ["--port", "--host", "--policy", "--idle-exit", "--heartbeat"]:
            self.assertIn(option, result.stdout)

    def test_bad_option_is_an_error_without_traceback(self):
        result = self.run_cli("--policy", "random")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("policy", result.stderr)
        self.assertNotIn("Traceback", result.stderr)


if __name__ == "__main__":
    unittest.main()

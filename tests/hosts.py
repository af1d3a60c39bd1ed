"""Test hosts: Linux network namespaces on one bridge, each with its own address and link.

``Hosts(n)`` makes ``n`` hosts ``h1..hn``: a network namespace each, joined to a bridge
of their own by a veth pair, with the address ``198.18.0.<i>/24`` (198.18.0.0/15 is
reserved for benchmarks and tests, RFC 2544) on its ``eth0``, and, with
``rate_mbit``, a ``tbf`` queue limiting its link in both directions. With ``lans``
(lists of host numbers) there is a bridge per list, LAN ``k`` being ``198.18.<k>.0/24``;
a host on several LANs has an interface on each (``eth0``, ``eth1``, ... in order). The
bridges have no address on this machine and the namespaces have no default route, so no
packet leaves the test hosts. ``run`` starts a real program inside a host; ``cut`` and ``mend`` pull
and plug a host's cable (``ip link set ... down``/``up`` on the bridge side); ``kill_all``
kills every process of a host, detached ones too; ``sent_bytes`` and
``received_bytes`` count what a host sent and received.

``close`` (also called at exit) kills the programs and removes the namespaces and the
bridge; making a ``Hosts`` first removes what dead test processes left behind (every
name carries the pid of the process that made it). It needs Linux, root and ``ip``;
``unavailable()`` says why not, in one line, so tests can skip.
"""

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import unittest

from tests.support import ProcessTestCase, clean_env

PREFIX = "p2pt"
SUBNET = "198.18"  # host i of LAN k is SUBNET.k.i/24, inside 198.18.0.0/15
COMMAND_TIMEOUT_S = 10.0
KILL_WAIT_S = 10.0
TBF_BURST = "64kb"
TBF_LATENCY = "50ms"
NAMESPACE_RE = re.compile(rf"{PREFIX}-(\d+)-")
PID_DIGITS = 5  # base 36, enough for any Linux pid (at most 4194304)
LINK_RE = re.compile(rf"{PREFIX}([0-9a-z]{{{PID_DIGITS}}})")
MAX_LANS = 10  # link names: PREFIX, pid, serial, 'b' or 'v', LAN digit, host: 15 chars at most
MAX_HOSTS = 99
FETCH = ("import sys, urllib.request\n"
         "print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())")

_open = set()
_serial = [0]


class HostsError(Exception):
    """An ``ip`` or ``tc`` command failed."""


def ip(*args, check=True):
    result = subprocess.run(["ip", *args], capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT_S)
    if check and result.returncode:
        raise HostsError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def base36(n, width=1):
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while n or len(text) < width:
        n, r = divmod(n, 36)
        text = digits[r] + text
    return text


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def unavailable():
    """Why test hosts cannot be made here (one line), or None."""
    if not sys.platform.startswith("linux"):
        return "test hosts need Linux network namespaces"
    if os.geteuid() != 0:
        return "test hosts need root (network namespaces, veth, bridge)"
    if shutil.which("ip") is None:
        return "test hosts need the 'ip' command (iproute2)"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
    except (HostsError, OSError, subprocess.SubprocessError) as e:
        return f"cannot make a network namespace: {e}"
    ip("netns", "del", probe, check=False)
    return None


def rate_limit_unavailable():
    """Why links cannot be rate-limited with tc tbf here (one line), or None."""
    if shutil.which("tc") is None:
        return "rate-limited links need the 'tc' command"
    probe = f"{PREFIX}-{os.getpid()}-tbf"
    try:
        ip("netns", "add", probe)
        ip("-n", probe, "link", "add", "name", "a", "type", "veth", "peer", "name", "b")
        result = subprocess.run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "a",
                                 "root", "tbf", "rate", "100mbit", "burst", TBF_BURST,
                                 "latency", TBF_LATENCY], capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT_S)
        return (f"tc tbf does not work here: {result.stderr.strip()}" if result.returncode
                else None)
    except (HostsError, OSError, subprocess.SubprocessError) as e:
        return f"cannot probe tc tbf: {e}"
    finally:
        ip("netns", "del", probe, check=False)


def sweep_stale():
    """Remove namespaces and links left by test processes that no longer run."""
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = NAMESPACE_RE.match(name)
        if match and not pid_alive(int(match.group(1))):
            ip("netns", "del", name, check=False)
    for line in ip("-o", "link", "show", check=False).stdout.splitlines():
        fields = line.split(":")
        name = fields[1].strip().split("@")[0] if len(fields) > 1 else ""
        match = LINK_RE.match(name)
        if match and not pid_alive(int(match.group(1), 36)):
            ip("link", "del", name, check=False)


class Hosts:
    """``count`` test hosts on one bridge; ``with Hosts(3) as hosts:`` or ``close()``."""

    def __init__(self, count, rate_mbit=None, lans=None):
        sweep_stale()
        _serial[0] += 1
        serial = _serial[0]
        self.count, self.rate_mbit = count, rate_mbit
        self.lans = [list(lan) for lan in lans] if lans else [list(range(1, count + 1))]
        if len(self.lans) > MAX_LANS or count > MAX_HOSTS:
            raise ValueError(f"at most {MAX_LANS} LANs and {MAX_HOSTS} hosts")
        self.namespaces = [f"{PREFIX}-{os.getpid()}-{serial}-h{i}" for i in range(1, count + 1)]
        tag = f"{PREFIX}{base36(os.getpid(), PID_DIGITS)}{base36(serial % 36)}"
        self.bridges = [f"{tag}b{k}" for k in range(len(self.lans))]
        self.cables = {(k, i): f"{tag}v{k}{i}" for k, lan in enumerate(self.lans) for i in lan}
        self.processes = []
        _open.add(self)
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def _make(self):
        for ns in self.namespaces:
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        interfaces = [0] * self.count
        for k, (bridge, lan) in enumerate(zip(self.bridges, self.lans)):
            ip("link", "add", bridge, "type", "bridge")
            ip("link", "set", bridge, "type", "bridge", "mcast_snooping", "0",
               "nf_call_iptables", "0")
            ip("link", "set", bridge, "up")
            for i in lan:
                ns, cable = self.namespaces[i - 1], self.cables[k, i]
                device = f"eth{interfaces[i - 1]}"
                interfaces[i - 1] += 1
                ip("link", "add", cable, "type", "veth", "peer", "name", device, "netns", ns)
                ip("link", "set", cable, "master", bridge, "up")
                ip("-n", ns, "addr", "add", f"{self.address(i, k)}/24", "dev", device)
                ip("-n", ns, "link", "set", device, "up")
                if self.rate_mbit:
                    self._limit(ns, device, cable)

    def _limit(self, ns, device, cable):
        rate = f"{self.rate_mbit}mbit"
        out_of_host, into_host = (["ip", "netns", "exec", ns, "tc"], device), (["tc"], cable)
        for command, link in (out_of_host, into_host):
            result = subprocess.run([*command, "qdisc", "add", "dev", link, "root", "tbf",
                                     "rate", rate, "burst", TBF_BURST, "latency", TBF_LATENCY],
                                    capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
            if result.returncode:
                raise HostsError(f"tc tbf on {link}: {result.stderr.strip()}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def address(i, lan=0):
        return f"{SUBNET}.{lan}.{i}"

    def run(self, i, args, **kwargs):
        """Start ``python ARGS`` on host ``i``; killed by ``close`` at the latest."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(["ip", "netns", "exec", self.namespaces[i - 1], sys.executable,
                                 *args], **kwargs)
        self.processes.append(proc)
        return proc

    def fetch_json(self, i, url):
        """GET ``url`` from host ``i``: the JSON answer, or None when nothing answers."""
        result = subprocess.run(["ip", "netns", "exec", self.namespaces[i - 1], sys.executable,
                                 "-c", FETCH, url], capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT_S)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def kill_all(self, i):
        """SIGKILL every process in host ``i`` (detached ones too: a machine dying)."""
        pids = ip("netns", "pids", self.namespaces[i - 1], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def sent_bytes(self, i, lan=0):
        """Bytes host ``i`` has sent on LAN ``lan`` so far, headers included (what its
        cable's bridge end received)."""
        with open(f"/sys/class/net/{self.cables[lan, i]}/statistics/rx_bytes") as f:
            return int(f.read())

    def received_bytes(self, i, lan=0):
        """Bytes host ``i`` has received on LAN ``lan`` so far, headers included."""
        with open(f"/sys/class/net/{self.cables[lan, i]}/statistics/tx_bytes") as f:
            return int(f.read())

    def cut(self, i, lan=0):
        ip("link", "set", self.cables[lan, i], "down")

    def mend(self, i, lan=0):
        ip("link", "set", self.cables[lan, i], "up")

    def close(self):
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
        for proc in self.processes:
            try:
                proc.wait(KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        self.processes = []
        for cable in self.cables.values():
            ip("link", "del", cable, check=False)
        for ns in self.namespaces:
            ip("netns", "del", ns, check=False)
        for bridge in self.bridges:
            ip("link", "del", bridge, check=False)
        _open.discard(self)


@atexit.register
def _close_all():
    for hosts in list(_open):
        hosts.close()


class HostsTestCase(ProcessTestCase):
    """Tests that run the real programs on test hosts: skipped, with the reason in one line,
    where hosts cannot be made (no root, no ``ip``)."""

    @classmethod
    def setUpClass(cls):
        reason = unavailable()
        if reason:
            raise unittest.SkipTest(reason)
        super().setUpClass()

    def make_hosts(self, count, **kwargs):
        hosts = Hosts(count, **kwargs)
        self.addCleanup(hosts.close)
        return hosts

    def run_on(self, hosts, i, args):
        """``python ARGS`` on host ``i``, discovering on that host's own interfaces."""
        return hosts.run(i, args, cwd=self.tmp, env=self.host_env())

    def host_env(self):
        env = clean_env(self.tmp)
        del env["P2P_DISCOVERY_ON"]  # a test host's own interfaces: its LAN and loopback
        return env

"""`python -m lab hosts`: real network namespaces, real traffic between them, nothing left after down."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.hosts import netns
from tests.netns_hosts import TEST_PREFIX, TEST_SUBNET, claimed, require_namespaces

pytestmark = pytest.mark.integration

HOSTS = netns.TestHosts(TEST_PREFIX, TEST_SUBNET)


def lab_hosts(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", "hosts", action, "--hosts-prefix", TEST_PREFIX,
                           "--hosts-subnet", TEST_SUBNET], capture_output=True, text=True, timeout=120,
                          check=False)


def fetch(host: str, url: str) -> str:
    """GET `url` from a program running on `host` ("lab": this machine); the body or the error."""
    code = ("import sys, urllib.request\n"
            "try: print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())\n"
            "except OSError as e: print('error', e)")
    prefix = [] if host == "lab" else HOSTS.run_in(host)
    done = subprocess.run([*prefix, sys.executable, "-c", code, url], capture_output=True, text=True,
                          timeout=30, check=False)
    return done.stdout.strip()


def test_up_twice_traffic_across_then_down_leaves_nothing() -> None:
    require_namespaces()
    with claimed(HOSTS):  # no other test session's hosts of these names are taken down here
        try:
            first = lab_hosts("up")
            assert first.returncode == 0, first.stderr
            second = lab_hosts("up")
            assert second.returncode == 0, second.stderr
            assert "all there already" in second.stdout
            status = lab_hosts("status").stdout
            for host in netns.HOSTS:
                assert f"{HOSTS.namespace(host)}" in status and HOSTS.address(host) in status
            # A web server on host a, bound to a's address only, answers b, c and this machine.
            a = HOSTS.address("a")
            server = subprocess.Popen([*HOSTS.run_in("a"), sys.executable, "-m", "http.server", "--bind", a,
                                       "18080"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                url = f"http://{a}:18080/"
                deadline = time.monotonic() + 15
                while "Directory listing" not in fetch("c", url) and time.monotonic() < deadline:
                    time.sleep(0.2)
                for host in ("b", "c", "lab"):
                    assert "Directory listing" in fetch(host, url), host
                # Host a's loopback is its own: nothing from a listens on this machine's 127.0.0.1:18080.
                assert fetch("lab", "http://127.0.0.1:18080/").startswith("error")
                assert "processes" in lab_hosts("status").stdout
            finally:
                down = lab_hosts("down")  # also stops the web server still running on host a
                server.wait(timeout=15)
            assert down.returncode == 0, down.stderr
            assert "1 process(es)" in down.stdout
        finally:
            netns.down(HOSTS)
        assert netns.leftovers(HOSTS) == []
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert TEST_PREFIX not in names and TEST_PREFIX not in links
        again = lab_hosts("down")
        assert again.returncode == 0 and "nothing was there" in again.stdout


def test_a_second_session_is_told_who_holds_the_test_hosts_and_takes_nothing_down(tmp_path: Path) -> None:
    """Two test sessions at once would share the hosts' names: the second one's claim fails, saying
    who holds them and what to do, and the first keeps its hosts."""
    hosts = netns.TestHosts("slablock", TEST_SUBNET)  # a lock of its own: no hosts are made here
    second = ("import sys\nfrom lab.hosts import netns\nhosts = netns.TestHosts('slablock', sys.argv[1])\n"
              "try:\n    with netns.claimed(hosts, 'session two'): print('held')\n"
              "except netns.HostsError as e: print(e)")
    with netns.claimed(hosts, "session one"):
        other = {k: v for k, v in os.environ.items() if k != netns.HELD_ENV}  # another session's process
        done = subprocess.run([sys.executable, "-c", second, TEST_SUBNET], capture_output=True, text=True,
                              timeout=60, check=False, env=other)
        assert "in use by pid" in done.stdout and "(session one)" in done.stdout, done.stdout + done.stderr
        assert "--hosts-prefix" in done.stdout
        # A process the holder starts is the same session (a test's `make load --test-hosts`): it passes.
        child = subprocess.run([sys.executable, "-c", second, TEST_SUBNET], capture_output=True, text=True,
                               timeout=60, check=False)
        assert child.stdout.strip() == "held", child.stdout + child.stderr
        # A load run across these hosts claims them too: it stops before making anything, saying who.
        load = subprocess.run([sys.executable, "-m", "lab", "load", "--test-hosts", "yes", "--hosts-prefix",
                               "slablock", "--hosts-subnet", TEST_SUBNET, "--calibrate", "skip",
                               "--reports-dir", str(tmp_path), "--run-id", "blocked"],
                              capture_output=True, text=True, timeout=120, check=False, env=other)
        assert load.returncode == 1 and "(session one)" in load.stdout, load.stdout[-2000:] + load.stderr
        assert "Traceback" not in load.stdout + load.stderr
    assert netns.HELD_ENV not in os.environ
    after = subprocess.run([sys.executable, "-c", second, TEST_SUBNET], capture_output=True, text=True,
                           timeout=60, check=False)
    assert after.stdout.strip() == "held", after.stdout + after.stderr


@pytest.mark.parametrize(("subnet", "why"), [("10.0.0.0/24", "inside 198.18.0.0/15"),
                                             ("198.18.0.0/16", "a /24"), ("nonsense", "nonsense")])
def test_a_subnet_outside_the_benchmark_range_is_refused(subnet: str, why: str) -> None:
    done = subprocess.run([sys.executable, "-m", "lab", "hosts", "up", "--hosts-subnet", subnet],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert why in done.stderr and "Traceback" not in done.stderr

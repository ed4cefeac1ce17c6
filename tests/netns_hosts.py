"""Test hosts for the multi-host tests: made by the lab itself, skipped (with why) where refused.

They must not skip in CI: there (CI=true) a refusal fails the test instead, with the same reason.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from lab.hosts import netns

# Apart from a person's own `make hosts-up` (serverlab, 198.18.0.0/24).
TEST_PREFIX = "slabtest"
TEST_SUBNET = "198.19.254.0/24"
# Test sessions at the same time share these names: one holds the hosts, another waits this long for
# them, then fails saying who holds them (it would otherwise take them down under the first).
CLAIM_WAIT_SECONDS = 60.0


def require_namespaces() -> None:
    why = netns.refused()
    if why is None:
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"multi-host tests must run in CI, but: {why}", pytrace=False)
    pytest.skip(f"multi-host tests need network namespaces: {why}")


@contextlib.contextmanager
def made_hosts(prefix: str = TEST_PREFIX, subnet: str = TEST_SUBNET) -> Iterator[netns.TestHosts]:
    """Hosts a, b, c up for the block (a leftover set from an interrupted run is reused), then down;
    held for this session meanwhile (netns.claimed)."""
    require_namespaces()
    hosts = netns.TestHosts(prefix, subnet)
    with claimed(hosts):
        netns.up(hosts)
        try:
            yield hosts
        finally:
            netns.down(hosts)


@contextlib.contextmanager
def claimed(hosts: netns.TestHosts) -> Iterator[None]:
    """The test hosts held for this test session; another session's claim makes the test fail, clearly."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(netns.claimed(hosts, "a test session", CLAIM_WAIT_SECONDS))
        except netns.HostsError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield

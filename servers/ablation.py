"""Lab only: the guarantees `make bench --ablation` may switch off (LAB_ABLATE), to price each one.

Off by default; `make up` refuses LAB_ABLATE. A server with a guarantee switched off still serves
the contract's endpoints and bodies, without that safeguard: never run one for anybody. The
stand-ins below are what a runtime uses in place of the real thing; each does nothing, cheaply.
"""

from __future__ import annotations

from collections.abc import Hashable

from servers.admission import HoldClock

# name -> the guarantee it switches off
GUARANTEES = {
    "deadline": "receive deadline and keep-alive sweeper",
    "cap": "connection cap and eviction",
    "inflight": "in-flight limit",
    "failfast": "fail-fast admission",
    "strict": "strict HTTP/1.1 parsing",
    "cancel": "cancellation on disconnect",
    "statement": "statement timeout and backstop",
    "metrics": "metrics",
}
ALL = "all"


def parse(raw: str) -> frozenset[str]:
    """The names in a LAB_ABLATE value ('' none, 'all' every one); ValueError naming the unknown."""
    names = {n.strip().lower() for n in raw.split(",") if n.strip()}
    if ALL in names:
        return frozenset(GUARANTEES)
    unknown = sorted(names - set(GUARANTEES))
    if unknown:
        raise ValueError(f"unknown guarantee(s) {', '.join(unknown)}: choose from {', '.join(GUARANTEES)} "
                         f"or {ALL}, comma-separated")
    return frozenset(names)


class NoDeadlines:
    """Stands in for servers.deadlines.Deadlines with `deadline` off: nothing is timed."""

    def receiving(self, key: Hashable, since: float | None = None) -> None:
        pass

    def wake(self, key: Hashable) -> None:
        pass

    def idle(self, key: Hashable) -> None:
        pass

    def busy(self, key: Hashable) -> None:
        pass

    forget = busy

    def is_receiving(self, key: Hashable) -> bool:
        return False

    def overdue(self, now: float | None = None) -> tuple[list[Hashable], list[Hashable]]:
        return [], []

    def victim(self) -> tuple[Hashable, bool] | None:
        return None


class NoBusy:
    """Stands in for servers.deadlines.Busy with `cancel` off: no running request is watched."""

    def start(self, key: Hashable, worker: object) -> None:
        pass

    def stop(self, key: Hashable) -> None:
        pass

    def older_than(self, seconds: float) -> list[tuple[Hashable, object]]:
        return []


class NeverHopeless(HoldClock):
    """The fail-fast rule with `failfast` off: hold times are not kept, and no wait is refused early
    (a wait still ends at the acquire timeout)."""

    __slots__ = ()

    def held(self, seconds: float, now: float) -> None:
        pass

    def hopeless(self, ahead: int, size: int, timeout: float, now: float) -> bool:
        return False

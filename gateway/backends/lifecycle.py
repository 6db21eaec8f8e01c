"""A backend's lifecycle: its states, the legal moves between them, and the events they produce.

::

    stopped ──start──▶ starting ──handshake──▶ running ──stop──▶ stopping ──▶ stopped
                          │  ▲                    │
               start fails│  │retry              │crash / health checks fail / session expired
                          ▼  │                    ▼
                        backoff ◀────────────────(restart policy allows)
                          │
                          └──too many failures──▶ failed ──start (admin)──▶ starting

`failed` is the open circuit: calls fail fast until an admin starts the backend again.
"""

from __future__ import annotations

import enum
import random
import time
from dataclasses import dataclass


class State(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    FAILED = "failed"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.RUNNING, State.BACKOFF, State.FAILED, State.STOPPING}),
    State.RUNNING: frozenset({State.STOPPING, State.BACKOFF, State.FAILED, State.STARTING}),
    State.BACKOFF: frozenset({State.STARTING, State.STOPPING, State.FAILED}),
    State.STOPPING: frozenset({State.STOPPED}),
    State.FAILED: frozenset({State.STARTING, State.STOPPING}),
}

_SEVERITY = {
    State.FAILED: "error",
    State.BACKOFF: "warning",
}


class IllegalTransition(RuntimeError):
    """A bug: the supervisor tried a move the lifecycle does not allow."""


@dataclass(frozen=True, slots=True)
class Event:
    time: float
    server: str
    old: str
    new: str
    reason: str
    severity: str  # info | warning | error
    category: str  # lifecycle | health | admin | config

    @classmethod
    def transition(cls, server: str, old: State, new: State, reason: str, category: str) -> Event:
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(f"{server}: {old.value} -> {new.value} is not a legal transition")
        return cls(time.time(), server, old.value, new.value, reason, _SEVERITY.get(new, "info"), category)


# A backend that stayed up this long after its handshake had a healthy run: its next crash starts a
# fresh count and is retried at once (an expired HTTP session, a one-off crash), not after an
# escalating delay.
STABLE_AFTER = 10.0


def backoff_delay(failures: int, first: float, maximum: float) -> float:
    """Seconds before retry number `failures` (1-based): doubling from `first` up to `maximum`.

    The ±20% jitter keeps a fleet that crashed together from restarting in lockstep.
    """
    if failures <= 0:
        return 0.0
    return float(min(maximum, first * 2.0 ** (failures - 1)) * random.uniform(0.8, 1.2))

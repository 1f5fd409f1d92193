"""Who puts the next frame on the bus, and when. Pure logic, no I/O, no asyncio: the clock is passed in.

Several meters share one RS-485 line and only one frame may be on it at a time. Sampling (the periodic live
values of every meter) keeps the line busy; a transaction command (start, end, reading the signed record, its
release) must not wait behind a neighbour's queue of sampling reads, or a signature arrives late. So every request
waits here with a `Priority`: TRANSACTION goes before SAMPLING, first come first served within a priority, and a
transaction command waits for at most the one frame already on the line.

The scheduler also owns the line's silence: after every frame the line stays quiet for the RTU inter-frame time, and
after a timeout for as long as a late answer may still be on its way (so that it dies on the line instead of
colliding with, or being taken as the answer to, the next request).

The priority of a request comes from a context variable, so that a caller marks a whole procedure at once:

    with station.bus.urgent():
        await meter.stop_transaction(ref)  # every frame the driver sends for it is TRANSACTION

Context variables flow through `await` (and into tasks created inside), so a driver's multi-request procedures need
no change to be urgent.

Strict priority means a steady stream of TRANSACTION requests would starve SAMPLING; transaction procedures are
short bursts of a few frames, so sampling only ever waits for those bursts.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import itertools
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field


class Priority(enum.IntEnum):
    """Lower goes first."""

    TRANSACTION = 0
    SAMPLING = 1


_priority: ContextVar[Priority] = ContextVar("station.bus.priority", default=Priority.SAMPLING)


@contextlib.contextmanager
def urgent() -> Iterator[None]:
    """Everything awaited inside this block goes onto the bus as TRANSACTION, ahead of sampling."""
    token = _priority.set(Priority.TRANSACTION)
    try:
        yield
    finally:
        _priority.reset(token)


def current_priority() -> Priority:
    """The priority a request made here gets: TRANSACTION inside `urgent()`, SAMPLING otherwise."""
    return _priority.get()


class TurnState(enum.Enum):
    WAITING = "waiting"
    ON_LINE = "on the line"
    DONE = "done"
    CANCELLED = "cancelled"


@dataclass(eq=False)
class Turn:
    """One request's claim on the line. `seq` is its place in arrival order; a retry keeps it."""

    priority: Priority
    seq: int
    label: str = ""
    state: TurnState = field(default=TurnState.WAITING)

    def __lt__(self, other: Turn) -> bool:
        return self.seq < other.seq


class BusScheduler:
    """Pending turns by priority, the one turn on the line, and how long the line must stay silent.

    The caller drives it: `submit` a turn, `grant` hands the line to the next turn once it is free and silent for
    long enough (`wait` says how long that still is), `finish` gives it back with the silence the line now owes.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._queues: dict[Priority, list[Turn]] = {p: [] for p in Priority}  # each sorted by seq
        self._seq = itertools.count()
        self._on_line: Turn | None = None
        self._silent_until = float("-inf")

    # ------------------------------------------------------------------ state

    @property
    def on_line(self) -> Turn | None:
        """The turn whose frame is on the line (or about to be), None while the line is free."""
        return self._on_line

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def queued(self) -> list[Turn]:
        """The waiting turns in the order they will get the line (if nothing more urgent arrives)."""
        return [t for p in sorted(Priority) for t in self._queues[p]]

    def wait(self) -> float:
        """Seconds the line must still stay silent before the next frame (0.0: it may go now)."""
        return max(0.0, self._silent_until - self._clock())

    # ------------------------------------------------------------------ transitions

    def submit(self, priority: Priority, label: str = "") -> Turn:
        turn = Turn(priority, next(self._seq), label)
        self._queues[priority].append(turn)  # seq only grows: appending keeps the queue sorted
        return turn

    def resubmit(self, turn: Turn) -> None:
        """Queue a finished turn again (a retry) at its original place among its priority."""
        if turn.state is not TurnState.DONE:
            raise ValueError(f"only a finished turn can be queued again, not one {turn.state.value}")
        turn.state = TurnState.WAITING
        bisect.insort(self._queues[turn.priority], turn)

    def cancel(self, turn: Turn) -> None:
        """Withdraw a waiting turn (its requester gave up). A finished or cancelled turn is left alone; the turn on
        the line must be `finish`ed instead, since only its owner knows whether a frame went out."""
        if turn.state is TurnState.ON_LINE:
            raise ValueError("the turn on the line must be finished, not cancelled")
        if turn.state is TurnState.WAITING:
            self._queues[turn.priority].remove(turn)
            turn.state = TurnState.CANCELLED

    def grant(self, *, early: bool = False) -> Turn | None:
        """Hand the line to the first waiting turn of the highest priority, if the line is free and silent (`early`:
        free and still silent, for a frame that is held until the silence ends)."""
        if self._on_line is not None or (self.wait() > 0 and not early):
            return None
        for priority in sorted(Priority):
            queue = self._queues[priority]
            if queue:
                turn = queue.pop(0)
                turn.state = TurnState.ON_LINE
                self._on_line = turn
                return turn
        return None

    def finish(self, turn: Turn, quiet: float) -> None:
        """The turn's exchange is over; no frame may start for `quiet` seconds from now."""
        if turn is not self._on_line:
            raise ValueError("only the turn on the line can finish")
        self._on_line = None
        turn.state = TurnState.DONE
        self._silent_until = max(self._silent_until, self._clock() + quiet)

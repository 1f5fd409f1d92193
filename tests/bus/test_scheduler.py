"""The bus scheduler on a fake clock: who gets the line next, and when.

Pure logic: no event loop, no pty. The bus (station/bus/line.py) drives exactly these transitions.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station.bus import BusScheduler, Priority, current_priority, urgent
from station.bus.scheduler import Turn, TurnState

S, T = Priority.SAMPLING, Priority.TRANSACTION


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run_all(sched: BusScheduler, clock: FakeClock, quiet: float = 0.0) -> list[str]:
    """Grant and finish until nobody waits; the labels in the order they had the line."""
    order: list[str] = []
    while sched.waiting:
        clock.advance(sched.wait())
        turn = sched.grant()
        assert turn is not None
        order.append(turn.label)
        sched.finish(turn, quiet)
    return order


def test_transaction_goes_before_sampling() -> None:
    clock = FakeClock()
    sched = BusScheduler(clock)
    for label, priority in (("s1", S), ("s2", S), ("t1", T), ("s3", S), ("t2", T)):
        sched.submit(priority, label)
    assert [t.label for t in sched.queued()] == ["t1", "t2", "s1", "s2", "s3"]
    assert run_all(sched, clock) == ["t1", "t2", "s1", "s2", "s3"]


def test_first_come_first_served_within_a_priority() -> None:
    clock = FakeClock()
    sched = BusScheduler(clock)
    labels = [f"s{i}" for i in range(20)]
    for label in labels:
        sched.submit(S, label)
    assert run_all(sched, clock) == labels


def test_a_transaction_behind_many_sampling_requests_waits_only_for_the_frame_on_the_line() -> None:
    clock = FakeClock()
    sched = BusScheduler(clock)
    for i in range(8):
        sched.submit(S, f"s{i}")
    on_line = sched.grant()
    assert on_line is not None and on_line.label == "s0"
    urgent_turn = sched.submit(T, "stop")
    assert sched.grant() is None  # one frame at a time: s0 is still on the line
    sched.finish(on_line, 0.004)  # s0's answer is in; the line owes the inter-frame silence
    assert sched.grant() is None and sched.wait() == pytest.approx(0.004)
    clock.advance(0.004)
    assert sched.grant() is urgent_turn  # seven sampling requests still wait; the transaction went first
    assert sched.waiting == 7


def test_the_line_stays_silent_for_the_longest_quiet_time_owed() -> None:
    clock = FakeClock()
    sched = BusScheduler(clock)
    a = sched.submit(S, "a")
    assert sched.grant() is a
    sched.finish(a, 0.5)  # a timed out: its late answer may come for 0.5 s
    b = sched.submit(T, "b")
    clock.advance(0.3)
    assert sched.grant() is None and sched.wait() == pytest.approx(0.2)
    clock.advance(0.2)
    assert sched.grant() is b
    sched.finish(b, 0.004)
    assert sched.wait() == pytest.approx(0.004)


def test_a_shorter_silence_never_cuts_a_longer_one_short() -> None:
    clock = FakeClock()
    sched = BusScheduler(clock)
    a = sched.submit(S, "a")
    assert sched.grant() is a
    sched.finish(a, 1.0)
    clock.advance(1.0)
    b = sched.submit(S, "b")
    assert sched.grant() is b
    sched.finish(b, 0.0)  # e.g. a turn that was granted but sent nothing
    assert sched.wait() == 0.0
    sched.submit(S, "c")
    assert sched.grant() is not None


def test_cancelling_a_waiting_request_removes_it() -> None:
    clock = FakeClock()
    sched = BusScheduler(clock)
    a, b, c = (sched.submit(S, x) for x in "abc")
    sched.cancel(b)
    assert b.state is TurnState.CANCELLED and sched.waiting == 2
    sched.cancel(b)  # twice is harmless
    assert run_all(sched, clock) == ["a", "c"]
    assert a.state is TurnState.DONE and c.state is TurnState.DONE


def test_the_turn_on_the_line_cannot_be_cancelled_only_finished() -> None:
    clock = FakeClock()
    sched = BusScheduler(clock)
    a = sched.submit(S, "a")
    assert sched.grant() is a
    with pytest.raises(ValueError, match="finished, not cancelled"):
        sched.cancel(a)
    other = sched.submit(S, "other")
    with pytest.raises(ValueError, match="only the turn on the line"):
        sched.finish(other, 0.0)
    sched.finish(a, 0.0)
    sched.cancel(a)  # a finished turn is left alone
    assert a.state is TurnState.DONE


def test_a_retry_keeps_its_place_among_its_priority() -> None:
    clock = FakeClock()
    sched = BusScheduler(clock)
    first = sched.submit(S, "first")
    assert sched.grant() is first
    sched.submit(S, "second")
    sched.submit(S, "third")
    sched.finish(first, 0.0)  # no answer: it is tried again
    sched.resubmit(first)
    assert [t.label for t in sched.queued()] == ["first", "second", "third"]
    with pytest.raises(ValueError, match="only a finished turn"):
        sched.resubmit(first)
    assert run_all(sched, clock) == ["first", "second", "third"]


# Operations on the scheduler, drawn at random: submit at a priority, cancel the n-th waiting turn, grant and finish
# the turn on the line (with some silence), or let time pass.
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.sampled_from(list(Priority))),
        st.tuples(st.just("cancel"), st.integers(0, 10)),
        st.tuples(st.just("grant"), st.just(0)),
        st.tuples(st.just("finish"), st.sampled_from([0.0, 0.002, 0.5])),
        st.tuples(st.just("tick"), st.sampled_from([0.001, 0.1, 1.0])),
    ),
    max_size=80,
)


@given(OPS)
def test_no_request_is_ever_lost_granted_twice_or_granted_out_of_order(ops: list[tuple[str, object]]) -> None:
    clock = FakeClock()
    sched = BusScheduler(clock)
    submitted: list[Turn] = []
    cancelled: set[int] = set()
    granted: list[Turn] = []
    for op, arg in ops:
        if op == "submit":
            assert isinstance(arg, Priority)
            submitted.append(sched.submit(arg, str(len(submitted))))
        elif op == "cancel":
            waiting = sched.queued()
            if waiting:
                victim = waiting[int(str(arg)) % len(waiting)]
                sched.cancel(victim)
                cancelled.add(victim.seq)
        elif op == "grant":
            expected = sched.queued()[0] if sched.queued() and sched.on_line is None and not sched.wait() else None
            turn = sched.grant()
            assert turn is expected  # the most urgent, oldest waiting turn, or nobody
            if turn is not None:
                granted.append(turn)
        elif op == "finish":
            if sched.on_line is not None:
                sched.finish(sched.on_line, float(str(arg)))
        else:
            clock.advance(float(str(arg)))
    if sched.on_line is not None:
        sched.finish(sched.on_line, 0.0)
    while sched.waiting:  # drain: everything still waiting gets the line in the end
        clock.advance(sched.wait())
        turn = sched.grant()
        assert turn is not None
        granted.append(turn)
        sched.finish(turn, 0.0)
    seqs = [t.seq for t in granted]
    assert len(seqs) == len(set(seqs))  # nobody twice
    assert set(seqs) | cancelled == {t.seq for t in submitted}  # nobody lost
    assert not set(seqs) & cancelled  # a cancelled turn never gets the line


# ---------------------------------------------------------------------- the priority context


def test_urgent_marks_everything_inside_it_as_transaction_work() -> None:
    assert current_priority() is Priority.SAMPLING
    with urgent():
        assert current_priority() is Priority.TRANSACTION
        with urgent():
            assert current_priority() is Priority.TRANSACTION
        assert current_priority() is Priority.TRANSACTION
    assert current_priority() is Priority.SAMPLING


async def test_the_priority_flows_through_awaits_and_into_tasks_started_inside() -> None:
    async def procedure() -> list[Priority]:
        seen = [current_priority()]
        await asyncio.sleep(0)
        seen.append(current_priority())
        seen.append(await asyncio.create_task(step()))
        return seen

    async def step() -> Priority:
        await asyncio.sleep(0)
        return current_priority()

    with urgent():
        inside = await procedure()
    outside = await procedure()
    assert inside == [Priority.TRANSACTION] * 3
    assert outside == [Priority.SAMPLING] * 3

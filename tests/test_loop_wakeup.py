"""The wake-up contract of ``EventLoop.submit``: a task handed to a sleeping loop wakes it, on both cores.

The loop announces that it is about to wait in the poller (``loop._sleeping``), then looks at its queue; ``submit``
appends, then writes the wake-up only when the loop says it sleeps. A wake-up lost between the two leaves the task
queued behind a poller that waits for ever: these tests submit to idle loops (no timers, no traffic, nothing else
would wake them) and wait for every task with a timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from loopback import TIMEOUT, serving, switching_threads_often

import netloop


@pytest.fixture(autouse=True)
def fast_switching() -> Iterator[None]:
    """Switch threads every microsecond (GIL builds), so a submit lands at every point of the loop's iteration."""
    with switching_threads_often():
        yield


def wait_until_asleep(loop: netloop.EventLoop) -> None:
    """Until the idle loop says it sleeps (it has nothing to do once it has started); the loop's thread gets the
    GIL every switch interval (a microsecond here)."""
    deadline = time.monotonic() + TIMEOUT
    while not loop._sleeping:
        assert time.monotonic() < deadline, "an idle loop never went to sleep"


def test_an_idle_loop_says_it_sleeps_and_a_task_on_it_sees_it_awake() -> None:
    with serving(netloop.EventHandler(), "tcp://127.0.0.1:0") as engine:
        loop = engine.loops[0]
        wait_until_asleep(loop)
        seen: list[bool] = []
        ran = threading.Event()
        loop.submit(lambda: (seen.append(bool(loop._sleeping)), ran.set()))
        assert ran.wait(TIMEOUT), "a task submitted to a sleeping loop did not run: the wake-up was lost"
        assert seen == [False]
    assert not loop._sleeping, "a stopped loop still says it sleeps"


@pytest.mark.timeout(60)
def test_tasks_from_many_threads_each_wake_an_idle_loop() -> None:
    """Six threads each submit one task at a time to two idle loops and wait for it before the next, so most
    submits find the loop asleep or about to sleep; every task runs exactly once, none waits for a later one."""
    threads, rounds = 6, 150
    with serving(netloop.EventHandler(), "tcp://127.0.0.1:0", num_event_loop=2) as engine:
        loops = engine.loops
        for loop in loops:
            wait_until_asleep(loop)
        ran: list[list[int]] = [[] for _ in range(threads)]
        failures: list[str] = []

        def submitter(t: int) -> None:
            done = threading.Event()
            for i in range(rounds):
                done.clear()
                loop = loops[(t + i) % len(loops)]

                def task(i: int = i) -> None:
                    ran[t].append(i)
                    done.set()

                loop.submit(task)
                if not done.wait(TIMEOUT):
                    failures.append(f"thread {t}: task {i} on loop {loop.index} never ran")
                    return

        workers = [threading.Thread(target=submitter, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(TIMEOUT * 3)
        assert not any(worker.is_alive() for worker in workers), "a submitter is still waiting"
        assert failures == []
        assert ran == [list(range(rounds))] * threads


@pytest.mark.timeout(60)
def test_a_burst_of_submits_to_a_sleeping_loop_runs_every_task() -> None:
    """Many threads submit at once to a loop that sleeps: one wake-up is written for the burst, and every task of
    it runs (those queued after the loop woke included)."""
    with serving(netloop.EventHandler(), "tcp://127.0.0.1:0") as engine:
        loop = engine.loops[0]
        for _ in range(5):
            wait_until_asleep(loop)
            burst(loop, threads=8, per_thread=200)


def burst(loop: netloop.EventLoop, threads: int, per_thread: int) -> None:
    """``threads`` threads released at once each submit ``per_thread`` tasks; every task runs."""
    count = 0
    lock = threading.Lock()
    all_ran = threading.Event()
    start = threading.Barrier(threads, timeout=TIMEOUT)

    def task() -> None:
        nonlocal count
        with lock:
            count += 1
            if count == threads * per_thread:
                all_ran.set()

    def submitter() -> None:
        start.wait()
        for _ in range(per_thread):
            loop.submit(task)

    workers = [threading.Thread(target=submitter) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(TIMEOUT)
    assert all_ran.wait(TIMEOUT), f"{count} of {threads * per_thread} tasks ran"

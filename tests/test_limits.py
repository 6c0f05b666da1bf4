"""The memory budget that a process's feature threads share: a reservation waits while the
others leave too little, goes on when they give theirs back, and one larger than the whole
budget runs alone rather than never."""
from __future__ import annotations

import threading
import time

from tprna.limits import MemoryBudget, size


def _hold(budget: MemoryBudget, need: int, entered: threading.Event, release: threading.Event) -> None:
    with budget.reserve(need):
        entered.set()
        release.wait(10)


def test_a_reservation_waits_until_the_budget_has_room():
    budget = MemoryBudget(10)
    first_in, first_out = threading.Event(), threading.Event()
    second_in, second_out = threading.Event(), threading.Event()
    first = threading.Thread(target=_hold, args=(budget, 6, first_in, first_out))
    second = threading.Thread(target=_hold, args=(budget, 6, second_in, second_out))
    first.start()
    assert first_in.wait(5)
    second.start()
    assert not second_in.wait(0.3) and budget.reserved == 6  # 6 + 6 > 10: it waits
    with budget.reserve(4):  # 6 + 4 fits beside the first
        assert budget.reserved == 10
    first_out.set()
    assert second_in.wait(5) and budget.reserved == 6
    second_out.set()
    first.join(5), second.join(5)
    assert budget.reserved == 0


def test_a_reservation_above_the_budget_runs_alone():
    budget = MemoryBudget(10)
    with budget.reserve(25):  # nothing else reserved: it goes on rather than wait forever
        assert budget.reserved == 25
        blocked = threading.Event()
        waiter = threading.Thread(target=_hold, args=(budget, 1, blocked, threading.Event()))
        waiter.daemon = True
        waiter.start()
        time.sleep(0.2)
        assert not blocked.is_set()  # and nothing runs beside it
    assert blocked.wait(5)


def test_no_capacity_means_no_waiting():
    budget = MemoryBudget(10)
    budget.capacity = None  # as where the memory available is unknown
    with budget.reserve(8), budget.reserve(8):
        assert budget.reserved == 16


def test_sizes_in_words():
    assert size(3 * 2 ** 30) == "3.0 GiB" and size(27 * 2 ** 20) == "27.0 MiB"

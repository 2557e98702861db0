"""Admission at the door (serving/scheduling/door.py): requests refused with only their headers
read, and the estimates of requests let in but not yet queued (stand-in runners, real schedulers)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from predictors.serving.errors import QueueFull
from predictors.serving.scheduling.door import DOOR_TICKET, DoorTicket

from .test_scheduler import StandInRunner, make_scheduler, queued, texts_of, until


def test_a_full_queue_refuses_before_the_body_is_read():
    gate = threading.Event()
    scheduler = make_scheduler(StandInRunner(gate=gate), batch_size=1, max_queue_texts=5)

    async def main():
        ticket = scheduler.door.admit(None)
        assert isinstance(ticket, DoorTicket)
        ticket.release()
        busy = asyncio.create_task(scheduler.submit(texts_of("a", 8)))
        await until(lambda: queued(scheduler) == 7)  # over the bound of 5
        refusal = scheduler.door.admit(None)
        assert isinstance(refusal, QueueFull) and "max_queue_texts" in refusal.message
        gate.set()
        await busy
        assert isinstance(scheduler.door.admit(None), DoorTicket)

    asyncio.run(main())
    scheduler.stop()


def test_requests_let_in_but_not_yet_queued_count_against_the_bound():
    """A burst whose headers all arrive before any body: the queue is empty each time, but the
    requests already let in hold their estimated texts, so the rest are refused at the door."""
    scheduler = make_scheduler(StandInRunner(), batch_size=1, max_queue_texts=100)
    scheduler.door.body_bytes_per_text = 100.0
    let_in = []
    for _ in range(10):
        admission = scheduler.door.admit(3_000)  # about 30 texts each
        if not isinstance(admission, DoorTicket):
            assert isinstance(admission, QueueFull) and "arriving" in admission.message
            break
        let_in.append(admission)
    assert len(let_in) == 3  # 90 texts held; a fourth would make 120 of 100
    assert scheduler.describe()["arriving_texts_estimated"] == 90
    for ticket in let_in:
        ticket.release()
        ticket.release()  # once only
    assert scheduler.describe()["arriving_texts_estimated"] == 0
    assert isinstance(scheduler.door.admit(50_000), DoorTicket)  # nothing ahead: never refused
    scheduler.stop()


def test_a_request_that_arrives_gives_up_its_estimate_and_teaches_the_body_size():
    scheduler = make_scheduler(StandInRunner(), batch_size=1, max_queue_texts=100)
    before = scheduler.door.body_bytes_per_text

    async def main():
        ticket = scheduler.door.admit(64_000)
        DOOR_TICKET.set(ticket)
        scheduler.arrived(1_000)  # 64 bytes per text, not the default guess
        assert ticket.released and scheduler.describe()["arriving_texts_estimated"] == 0
        assert scheduler.door.body_bytes_per_text == pytest.approx(0.8 * before + 0.2 * 64)

    asyncio.run(main())
    scheduler.stop()

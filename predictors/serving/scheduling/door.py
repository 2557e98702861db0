"""Admission at the door: a REST request refused with only its headers read.

Requests let in before their body is read hold the texts their body size suggests against the
queue bound until their texts are queued (or they end without them), so a burst whose headers all
arrive before any body is refused at the door, with no reading or parsing, instead of after.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import QueueFull
from .admission import queue_full_at_door

if TYPE_CHECKING:
    from .scheduler import Scheduler

#: Body bytes per text before any request has shown this model's clients' sizes: a V2 JSON text of
#: about 250 characters. Learned from each request let in at the door afterwards.
DEFAULT_BODY_BYTES_PER_TEXT = 256.0


@dataclass(eq=False)
class DoorTicket:
    """A request let in when its headers arrived, before its body was read: until its texts are
    queued (or it ends without them) its estimated texts count against the queue bound for the
    requests that arrive after it."""

    door: "Door"
    texts: int  # estimated from the body size
    body_bytes: int | None
    released: bool = False

    def release(self) -> None:
        self.door.release(self)


#: The ticket of the request being served in this task, set by the transport at the door and read
#: when the request's texts are known (Door.arrived).
DOOR_TICKET: ContextVar[DoorTicket | None] = ContextVar("predictors_door_ticket", default=None)


class Door:
    """One model's door, beside its scheduler's queue and under its lock."""

    def __init__(self, scheduler: "Scheduler") -> None:
        self.scheduler = scheduler
        self.arriving_texts = 0  # estimated texts of requests let in, not yet queued
        self.body_bytes_per_text = DEFAULT_BODY_BYTES_PER_TEXT  # learned, exponentially averaged

    def admit(self, body_bytes: int | None) -> DoorTicket | QueueFull | None:
        """With only the headers read: a 429 when the queued texts plus those of requests let in but
        not yet queued leave no room for this one (its texts estimated from its body size); else a
        ticket that holds its estimate until `arrived`. Nothing ahead means no refusal, as in
        Scheduler.submit; None when there is no bound yet."""
        scheduler = self.scheduler
        with scheduler.lock:
            limit = scheduler.queue_limit
            if limit is None or scheduler.stopped:
                return None
            estimate = max(1, round(body_bytes / self.body_bytes_per_text)) if body_bytes else 1
            queued, arriving = scheduler.queued_texts, self.arriving_texts
            ahead = queued + arriving
            if ahead >= limit or (ahead > 0 and ahead + estimate > limit):
                scheduler.refused()
                return queue_full_at_door(scheduler.name, queued, arriving, estimate, limit, scheduler.retry_after(ahead))
            self.arriving_texts += estimate
            return DoorTicket(self, estimate, body_bytes)

    def arrived(self, texts: int) -> None:
        """The current request's body is decoded: its door estimate gives way to its `texts`, and its
        body size per text teaches the next estimates."""
        ticket = DOOR_TICKET.get()
        if ticket is not None and ticket.door is self:
            self.release(ticket, texts)

    def release(self, ticket: DoorTicket, texts: int | None = None) -> None:
        with self.scheduler.lock:
            if ticket.released:
                return
            ticket.released = True
            self.arriving_texts -= ticket.texts
            if texts and ticket.body_bytes:
                self.body_bytes_per_text = 0.8 * self.body_bytes_per_text + 0.2 * (ticket.body_bytes / texts)

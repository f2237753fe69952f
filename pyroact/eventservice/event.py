"""The event value object delivered to subscribers (Pyro 3's ``Pyro.EventService.Event``)."""

from __future__ import annotations

import time as _time
from typing import Any

__all__ = ["Event"]


class Event:
    """One published event: what a subscriber's ``event(self, event)`` receives.

    Events are plain picklable values. Every event of one ``publish`` call carries the same
    creation time.

    Args:
        subject: the subject exactly as it was published (original case).
        msg: the message (any picklable object).
        time: the creation time (``time.time()`` on the event server); None means now.

    Attributes:
        subject: the subject as published.
        msg: the message.
        time: the creation time, seconds since the epoch.

    Raises:
        TypeError: ``subject`` is not a string.
    """

    __slots__ = ("msg", "subject", "time")

    def __init__(self, subject: str, msg: Any, time: float | None = None) -> None:
        if not isinstance(subject, str):
            raise TypeError(f"an event subject must be a string, not {type(subject).__name__}")
        self.subject = subject
        self.msg = msg
        self.time = _time.time() if time is None else float(time)

    def __getstate__(self) -> tuple[str, Any, float]:
        return (self.subject, self.msg, self.time)

    def __setstate__(self, state: tuple[str, Any, float]) -> None:
        self.subject, self.msg, self.time = state

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Event):
            return (self.subject, self.time, self.msg) == (other.subject, other.time, other.msg)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # the message may be mutable

    def __str__(self) -> str:
        return f"<EVENT SUBJ {self.subject} ({_time.ctime(self.time)}): {self.msg}>"

    def __repr__(self) -> str:
        return f"Event({self.subject!r}, {self.msg!r}, {self.time!r})"

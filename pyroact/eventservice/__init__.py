"""The pyroact event service: publish/subscribe on subjects (layer 9).

``python -m pyroact.eventservice`` starts one (see :mod:`pyroact.eventservice.__main__`).
:class:`Publisher` and :class:`Subscriber` find it through the name server as
``:Pyro.EventService``.
"""

from __future__ import annotations

from .clients import Publisher, Subscriber
from .event import Event
from .server import EventService, EventServiceStarter

__all__ = ["Event", "EventService", "EventServiceStarter", "Publisher", "Subscriber"]

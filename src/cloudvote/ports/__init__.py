"""Ports: the small interfaces the application needs from the outside world.

Each adapter in `cloudvote.adapters` implements one of these. The application layer
depends only on this module, so swapping Redis for SQLite is a change in the
composition root and nowhere else.
"""

from cloudvote.ports.queue import Delivery, QueueUnavailable, VoteQueue, VoteSource
from cloudvote.ports.store import StoreUnavailable, TallyChanges, VoteStore

__all__ = [
    "Delivery",
    "QueueUnavailable",
    "StoreUnavailable",
    "TallyChanges",
    "VoteQueue",
    "VoteSource",
    "VoteStore",
]

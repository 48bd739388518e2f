"""The pipeline panel's data: what the workers last reported, read by the result service."""

from __future__ import annotations

import time
from collections.abc import Callable

from cloudvote.domain.pipeline import PipelineStatus
from cloudvote.ports.store import StoreUnavailable, VoteStore


class PipelineView:
    """Reads the workers' reports from the store; a store that does not answer is itself
    what the panel shows, so this never raises for it."""

    def __init__(self, store: VoteStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def status(self) -> PipelineStatus:
        try:
            return self.store.pipeline()
        except StoreUnavailable:
            return PipelineStatus.unreachable(self.clock())

"""Reading results, with a last-known-good copy for when the store is down."""

from __future__ import annotations

import threading

from cloudvote.domain.polls import PollCatalog
from cloudvote.domain.results import PollResults
from cloudvote.ports.store import StoreUnavailable, VoteStore


class ResultsView:
    """Tallies for the result pages and API.

    When the store fails, the last counts this process saw are served marked stale, so a
    database restart degrades the page instead of breaking it (fault isolation, ARCH-04).
    """

    def __init__(self, catalog: PollCatalog, store: VoteStore) -> None:
        self.catalog = catalog
        self.store = store
        self._last_known: dict[str, PollResults] = {}
        self._lock = threading.Lock()

    def results(self, poll_id: str) -> PollResults:
        """Raise UnknownPoll for a bad id, StoreUnavailable if there is nothing to show."""
        poll = self.catalog.require(poll_id)
        try:
            fresh = PollResults.for_poll(poll, self.store.counts(poll.id))
        except StoreUnavailable:
            with self._lock:
                last = self._last_known.get(poll.id)
            if last is None:
                raise
            return PollResults(last.poll_id, dict(last.counts), stale=True)
        with self._lock:
            self._last_known[poll.id] = fresh
        return fresh

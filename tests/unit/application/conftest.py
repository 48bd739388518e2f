"""The in-memory queue and store the application services are driven through."""

from __future__ import annotations

import pytest

from cloudvote.adapters.memory import InMemoryVoteQueue, InMemoryVoteStore


@pytest.fixture
def queue() -> InMemoryVoteQueue:
    return InMemoryVoteQueue()


@pytest.fixture
def store() -> InMemoryVoteStore:
    return InMemoryVoteStore()

"""Polls and their options, and the rule that decides whether a ballot is valid."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

# Ids travel in URLs, Redis fields and SQL rows; a small alphabet keeps them safe everywhere.
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

DEFAULT_POLL_ID = "default"


class PollError(ValueError):
    """Base class for every way a ballot or a poll definition can be wrong."""


class UnknownPoll(PollError):
    def __init__(self, poll_id: str) -> None:
        super().__init__(f"unknown poll {poll_id!r}")
        self.poll_id = poll_id


class UnknownOption(PollError):
    def __init__(self, poll: Poll, option_id: str) -> None:
        valid = ", ".join(poll.option_ids)
        super().__init__(
            f"unknown option {option_id!r} for poll {poll.id!r}; valid options: {valid}"
        )
        self.poll_id = poll.id
        self.option_id = option_id
        self.valid_options = poll.option_ids


class InvalidPollDefinition(PollError):
    """A polls file that cannot describe a usable poll."""


def is_valid_id(value: str) -> bool:
    return bool(_ID_PATTERN.fullmatch(value))


@dataclass(frozen=True, slots=True)
class Option:
    id: str
    label: str


@dataclass(frozen=True, slots=True)
class Poll:
    id: str
    question: str
    options: tuple[Option, ...]

    def __post_init__(self) -> None:
        if not is_valid_id(self.id):
            raise InvalidPollDefinition(f"poll id {self.id!r} must match {_ID_PATTERN.pattern}")
        if len(self.options) < 2:
            raise InvalidPollDefinition(f"poll {self.id!r} needs at least two options")
        seen: set[str] = set()
        for option in self.options:
            if not is_valid_id(option.id):
                raise InvalidPollDefinition(
                    f"option id {option.id!r} in poll {self.id!r} must match {_ID_PATTERN.pattern}"
                )
            if option.id in seen:
                raise InvalidPollDefinition(f"option {option.id!r} repeats in poll {self.id!r}")
            seen.add(option.id)

    @property
    def option_ids(self) -> tuple[str, ...]:
        return tuple(option.id for option in self.options)

    def require_option(self, option_id: str) -> Option:
        for option in self.options:
            if option.id == option_id:
                return option
        raise UnknownOption(self, option_id)

    def zero_counts(self) -> dict[str, int]:
        return dict.fromkeys(self.option_ids, 0)


class PollCatalog:
    """The polls this deployment knows, keyed by id, in the order they were defined."""

    def __init__(self, polls: Iterable[Poll]) -> None:
        self._polls: dict[str, Poll] = {}
        for poll in polls:
            if poll.id in self._polls:
                raise InvalidPollDefinition(f"poll {poll.id!r} is defined twice")
            self._polls[poll.id] = poll
        if not self._polls:
            raise InvalidPollDefinition("at least one poll must be defined")

    def __iter__(self) -> Iterator[Poll]:
        return iter(self._polls.values())

    def __len__(self) -> int:
        return len(self._polls)

    @property
    def default(self) -> Poll:
        """The poll served at `/`: the one named `default`, else the first defined."""
        return self._polls.get(DEFAULT_POLL_ID) or next(iter(self._polls.values()))

    def require(self, poll_id: str) -> Poll:
        try:
            return self._polls[poll_id]
        except KeyError:
            raise UnknownPoll(poll_id) from None

    @classmethod
    def default_catalog(cls, option_a: str = "Cats", option_b: str = "Dogs") -> PollCatalog:
        question = f"{option_a} or {option_b}?"
        return cls(
            [Poll(DEFAULT_POLL_ID, question, (Option("a", option_a), Option("b", option_b)))]
        )

    @classmethod
    def from_mapping(cls, document: Mapping[str, object]) -> PollCatalog:
        """Build a catalog from the parsed polls file (see docs/configuration.md)."""
        raw_polls = document.get("polls")
        if not isinstance(raw_polls, list):
            raise InvalidPollDefinition("the polls file needs a top-level list named 'polls'")
        polls = []
        for index, raw in enumerate(raw_polls):
            if not isinstance(raw, Mapping):
                raise InvalidPollDefinition(f"polls[{index}] must be a mapping")
            poll_id = str(raw.get("id", ""))
            raw_options = raw.get("options")
            if not isinstance(raw_options, list):
                raise InvalidPollDefinition(f"poll {poll_id!r} needs a list named 'options'")
            options = []
            for raw_option in raw_options:
                if not isinstance(raw_option, Mapping) or "id" not in raw_option:
                    raise InvalidPollDefinition(f"every option of poll {poll_id!r} needs an id")
                option_id = str(raw_option["id"])
                options.append(Option(option_id, str(raw_option.get("label", option_id))))
            question = str(raw.get("question", poll_id))
            polls.append(Poll(poll_id, question, tuple(options)))
        return cls(polls)

"""The composition root: which catalog and adapters each shape gets from its settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudvote.bootstrap import build_monolith, load_catalog
from cloudvote.config import Settings
from cloudvote.domain.polls import InvalidPollDefinition, PollCatalog
from tests.support.fakes import VOTER


def test_without_a_polls_file_the_default_poll_is_labelled_by_option_a_and_option_b() -> None:
    catalog = load_catalog(Settings.from_env({"OPTION_A": "Tea", "OPTION_B": "Coffee"}))

    poll = catalog.default
    assert poll.id == "default"
    assert [(o.id, o.label) for o in poll.options] == [("a", "Tea"), ("b", "Coffee")]


def test_the_default_labels_are_cats_and_dogs() -> None:
    poll = load_catalog(Settings.from_env({})).default

    assert [o.label for o in poll.options] == ["Cats", "Dogs"]


def test_a_polls_file_replaces_the_default_poll(tmp_path: Path) -> None:
    path = tmp_path / "polls.yaml"
    path.write_text("polls:\n  - id: lunch\n    options: [{id: pizza}, {id: salad}]\n")

    catalog = load_catalog(Settings.from_env({"CLOUDVOTE_POLLS_FILE": str(path)}))

    assert [poll.id for poll in catalog] == ["lunch"]


def test_a_missing_polls_file_fails_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(InvalidPollDefinition, match=str(path)):
        load_catalog(Settings(polls_file=str(path)))


def test_the_monolith_votes_drains_and_counts_through_one_sqlite_file(tmp_path: Path) -> None:
    monolith = build_monolith(Settings(data_dir=str(tmp_path)))
    try:
        monolith.caster.cast("default", "b", VOTER)
        monolith.drainer.drain_once()

        assert monolith.live.view.results("default").counts == {"a": 0, "b": 1}
        for check in monolith.readiness.values():
            check()
    finally:
        monolith.close()

    assert (tmp_path / "cloudvote.db").is_file()


def test_the_monolith_releases_the_claims_of_a_killed_run_at_start(tmp_path: Path) -> None:
    killed = build_monolith(Settings(data_dir=str(tmp_path)))
    try:
        killed.caster.cast("default", "a", VOTER)
        # Its worker received the vote and was killed before committing it.
        assert len(killed.drainer.source.receive(10, 0)) == 1
    finally:
        killed.close()

    restarted = build_monolith(Settings(data_dir=str(tmp_path)))
    try:
        # A fresh start must not wait for the claim idle timeout to pick the vote up.
        assert len(restarted.drainer.source.receive(10, 0)) == 1
    finally:
        restarted.close()


def test_a_catalog_loaded_already_is_used_as_given(tmp_path: Path) -> None:
    catalog = PollCatalog.default_catalog("Tea", "Coffee")

    monolith = build_monolith(Settings(data_dir=str(tmp_path)), catalog)
    try:
        assert monolith.catalog is catalog
        assert monolith.caster.catalog is catalog
    finally:
        monolith.close()

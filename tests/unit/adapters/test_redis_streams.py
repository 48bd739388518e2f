"""The Redis adapter's own knowledge, without a server: the stream message and how a
stream id becomes a vote's version. tests/integration/adapters drives it against Redis."""

from __future__ import annotations

from cloudvote.adapters.redis_streams import stream_fields, stream_id_to_version
from cloudvote.domain.votes import Ballot
from tests.support.fakes import VOTER


def test_ballot_fields_are_flat_strings_for_the_queue() -> None:
    fields = stream_fields(Ballot("default", "a", VOTER, "trace", via="vote-7f9c"))

    assert fields == {
        "poll": "default",
        "option": "a",
        "voter": VOTER,
        "trace": "trace",
        "via": "vote-7f9c",
    }


def test_stream_ids_of_the_same_millisecond_keep_their_sequence_order() -> None:
    assert stream_id_to_version("1700000000000-0") < stream_id_to_version("1700000000000-1")
    assert stream_id_to_version("1700000000000-9") < stream_id_to_version("1700000000000-10")


def test_a_later_millisecond_outranks_any_sequence_of_an_earlier_one() -> None:
    assert stream_id_to_version("1700000000000-999999") < stream_id_to_version("1700000000001-0")


def test_stream_id_versions_sort_exactly_like_the_stream() -> None:
    ids = ["1700000000001-0", "1700000000000-10", "1700000000000-2", "1699999999999-5"]
    stream_order = sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))

    assert sorted(ids, key=stream_id_to_version) == stream_order


def test_stream_id_version_fits_a_postgresql_bigint_until_the_year_2200() -> None:
    year_2200_ms = 7_258_118_400_000  # 2200-01-01T00:00:00Z
    assert stream_id_to_version(f"{year_2200_ms}-999999") < 2**63 - 1


def test_stream_id_without_sequence_counts_as_sequence_zero() -> None:
    assert stream_id_to_version("1700000000000") == stream_id_to_version("1700000000000-0")

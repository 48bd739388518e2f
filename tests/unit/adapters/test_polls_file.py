"""The polls file a ConfigMap mounts: YAML or JSON in, a catalog out, errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudvote.adapters.polls_file import load_polls_file
from cloudvote.domain.polls import InvalidPollDefinition, Option

YAML = """\
polls:
  - id: default
    question: Cats or Dogs?
    options:
      - {id: a, label: Cats}
      - {id: b, label: Dogs}
  - id: lunch
    question: What for lunch?
    options:
      - id: pizza
        label: Pizza
      - id: salad
"""


def test_a_yaml_polls_file_becomes_a_catalog(tmp_path: Path) -> None:
    path = tmp_path / "polls.yaml"
    path.write_text(YAML)

    catalog = load_polls_file(str(path))

    assert [poll.id for poll in catalog] == ["default", "lunch"]
    assert catalog.require("lunch").options == (Option("pizza", "Pizza"), Option("salad", "salad"))


def test_a_json_polls_file_is_read_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "polls.json"
    path.write_text(
        json.dumps({"polls": [{"id": "pets", "options": [{"id": "cats"}, {"id": "dogs"}]}]})
    )

    catalog = load_polls_file(str(path))

    assert catalog.default.id == "pets"
    assert catalog.default.option_ids == ("cats", "dogs")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file"),
        ("polls: [unclosed\n", "not valid YAML/JSON"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("", "must hold a mapping"),
        ("polls:\n  - id: lunch\n    options: [{id: pizza}]\n", "at least two options"),
    ],
    ids=["missing", "broken", "list", "empty", "one-option"],
)
def test_a_bad_polls_file_is_refused_with_a_message_naming_the_file(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "polls.yaml"
    if content is not None:
        path.write_text(content)

    with pytest.raises(InvalidPollDefinition) as caught:
        load_polls_file(str(path))

    assert str(path) in str(caught.value)
    assert message in str(caught.value)

"""docs/concepts.md maps every concept ID of ../shared/CONCEPTS.md to places that exist:
every file path it names exists (and every `path:LINE` anchor is inside the file), and
every test it names is defined in tests/."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.manifests import concepts_map
from tests.manifests.k8s import REPO

CONCEPTS_DOC = REPO / "docs" / "concepts.md"
ID = re.compile(r"\b([A-Z][A-Z0-9]{2,3}-\d{2})\b")
# A backticked repo path: word characters, dots, dashes, slashes, an optional :LINE.
PATH = re.compile(r"`((?:[\w.-]+/)+[\w.*-]+|[\w-]+\.(?:md|yaml|toml|lock|conf|py|sh))(?::(\d+))?`")
TEST_NAME = re.compile(r"`(test_\w+)(?:\[[^\]]*\])?`")


def concepts_checklist() -> Path:
    configured = os.environ.get("CLOUDVOTE_CONCEPTS")
    path = Path(configured) if configured else REPO.parent / "shared" / "CONCEPTS.md"
    if not path.is_file():
        pytest.fail(
            f"{path} not found: the concept checklist sits in shared/ beside the repository "
            "(set CLOUDVOTE_CONCEPTS to its path)",
            pytrace=False,
        )
    return path


def checklist_ids() -> list[str]:
    ids = []
    for line in concepts_checklist().read_text().splitlines():
        match = re.match(r"- ([A-Z][A-Z0-9]{2,3}-\d{2}) ", line)
        if match:
            ids.append(match.group(1))
    return ids


def mapped_rows() -> dict[str, str]:
    """ID -> its table row in docs/concepts.md."""
    rows = {}
    for line in CONCEPTS_DOC.read_text().splitlines():
        match = re.match(r"\| ([A-Z][A-Z0-9]{2,3}-\d{2}) \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_every_concept_id_is_mapped() -> None:
    ids = checklist_ids()
    assert len(ids) >= 50, "the checklist parsed to too few IDs"
    rows = mapped_rows()
    missing = [concept for concept in ids if concept not in rows]
    assert not missing, f"not in docs/concepts.md: {missing}"
    unknown = sorted(set(rows) - set(ids))
    assert not unknown, f"docs/concepts.md maps IDs the checklist does not have: {unknown}"


def test_every_row_names_a_place_and_a_proof() -> None:
    for concept, row in mapped_rows().items():
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 4, f"{concept}: expected | ID | concept | where | shown by |"
        assert PATH.search(cells[2]), f"{concept}: no file in the 'where' column"
        assert cells[3], f"{concept}: nothing shows it working"


def test_every_path_in_the_concept_map_exists() -> None:
    text = CONCEPTS_DOC.read_text()
    checked = 0
    for match in PATH.finditer(text):
        relative, line = match.group(1), match.group(2)
        if "*" in relative:
            assert list(REPO.glob(relative)), relative
            continue
        path = REPO / relative
        assert path.exists(), f"docs/concepts.md names {relative}, which does not exist"
        if line:
            lines = path.read_text().count("\n") + 1
            assert 1 <= int(line) <= lines, f"{relative}:{line} is past the end ({lines})"
        checked += 1
    assert checked >= 100


def test_every_test_in_the_concept_map_exists() -> None:
    defined = set()
    for path in (REPO / "tests").rglob("test_*.py"):
        defined.update(re.findall(r"^\s*def (test_\w+)", path.read_text(), re.M))
    named = set(TEST_NAME.findall(CONCEPTS_DOC.read_text()))
    assert named, "the concept map names no tests"
    missing = sorted(named - defined)
    assert not missing, f"named in docs/concepts.md but not defined: {missing}"


def test_the_page_is_generated_from_the_map_and_up_to_date() -> None:
    """Line anchors follow the files: each comes from a text in concepts_map.yaml."""
    try:
        page = concepts_map.render()
    except LookupError as error:
        raise AssertionError(f"concepts_map.yaml: {error}") from None
    assert CONCEPTS_DOC.read_text() == page, (
        "docs/concepts.md is out of date: .venv/bin/python -m tests.manifests.concepts_map"
    )

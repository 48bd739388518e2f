"""Writes docs/concepts.md from concepts_map.yaml, turning each `at` text into a line anchor.

.venv/bin/python -m tests.manifests.concepts_map          # rewrite docs/concepts.md
.venv/bin/python -m tests.manifests.concepts_map --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).with_name("concepts_map.yaml")
PAGE = REPO / "docs" / "concepts.md"

HEADER = """\
# Concepts: where each one lives, and what shows it working

Every ID of `../shared/CONCEPTS.md` (the project's checklist), mapped to the files where
cloudvote uses it (`path:line` points at the spot, usually its teaching comment) and to the
test or command that shows it doing its job. The page is generated from
`tests/manifests/concepts_map.yaml` (`.venv/bin/python -m tests.manifests.concepts_map`), so
the line anchors follow the files; `tests/manifests/test_docs.py` checks that every ID is
here, every path exists, every named test is defined and the page is up to date.

Where the tests live: `tests/unit`, `tests/integration`, `tests/e2e` (`make test`),
`tests/compose` (`scripts/compose-e2e`, a real Docker engine), `tests/manifests`
(`scripts/k8s-check`, rendered manifests, no cluster), and `tests/cluster` and
`tests/kubernetes` (`scripts/cluster-e2e`, a real Kubernetes v1.34 cluster built by
`deploy/cluster/up`; both take the current kubectl context).

**Proof status.** Every Kubernetes row is checked statically (the manifests render,
validate strictly against the 1.34 schemas and satisfy the rules in `tests/manifests`) and,
where a running cluster is what shows it, on the cluster in CI: pods starting, probes and
rollouts acting, NetworkPolicies enforced, autoscalers scaling, the scenarios reproduced
and fixed. A row says so where only the static check exists.

| ID | concept | where | shown by |
|---|---|---|---|
"""


def anchor(path: str, text: str | None) -> str:
    file = REPO / path
    if not file.exists():
        raise LookupError(f"{path} does not exist")
    if text is None:
        return f"`{path}`"
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if text in line:
            return f"`{path}:{number}`"
    raise LookupError(f"{path} no longer contains {text!r}")


def render() -> str:
    rows: list[dict[str, Any]] = yaml.safe_load(DATA.read_text(encoding="utf-8"))
    lines = []
    for row in rows:
        where = ", ".join(anchor(w["path"], w.get("at")) for w in row["where"])
        cells = [row["id"], row["concept"], where, row["shown_by"]]
        lines.append("| " + " | ".join(cells) + " |")
    return HEADER + "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    page = render()
    if "--check" in argv:
        if PAGE.read_text(encoding="utf-8") != page:
            print("docs/concepts.md is out of date: python -m tests.manifests.concepts_map")
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Named volumes and project names: what survives `down`, and two copies side by side."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compose.project import TIMINGS, Project, run


def test_votes_survive_down_and_up_and_are_gone_after_down_v(stack: Project) -> None:
    before = stack.total()
    for option in "aab":
        assert stack.vote(option) == 202  # each from a new voter: +1 each
    total = stack.wait_total(before + 3, timeout=30)

    # `down` removes containers and networks; the named volumes stay (COMP-07).
    stack.down()
    assert not stack.container_ids()
    volumes = project_volumes(stack)
    assert {"cloudvote_postgres-data", "cloudvote_redis-data"} <= volumes
    TIMINGS["up --wait with existing volumes"] = stack.up()
    assert stack.total() == total

    # `down -v` deletes the volumes too: the next start is a fresh install.
    stack.down(volumes=True)
    volumes = project_volumes(stack)
    assert not volumes
    TIMINGS["up --wait after down -v"] = stack.up()
    assert stack.total() == 0


def project_volumes(project: Project) -> set[str]:
    label = f"label=com.docker.compose.project={project.name}"
    return set(run(["docker", "volume", "ls", "-q", "--filter", label]).stdout.split())


@pytest.fixture
def second_project() -> Iterator[Project]:
    project = Project(name="test", port=5001)
    project.down(volumes=True)
    try:
        yield project
    finally:
        project.down(volumes=True)


def test_second_project_runs_beside_the_first_on_port_5001(
    stack: Project, second_project: Project
) -> None:
    TIMINGS["up --wait of a second project (-p test)"] = second_project.up()
    first_before = stack.total()

    assert second_project.vote("b") == 202
    second_project.wait_total(1, timeout=30)

    # Separate containers, networks and volumes: the first project did not see that vote.
    assert stack.total() == first_before
    names = run(["docker", "ps", "--format", "{{.Names}}"]).stdout.split()
    assert "test-gateway-1" in names and "cloudvote-gateway-1" in names
    ports = second_project.inspect(second_project.container("gateway"))["NetworkSettings"]["Ports"]
    assert ports["8080/tcp"][0]["HostPort"] == "5001"
    volumes = run(["docker", "volume", "ls", "-q"]).stdout.split()
    assert "test_postgres-data" in volumes and "cloudvote_postgres-data" in volumes

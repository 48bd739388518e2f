"""ServedBy: which instance answered, from the environment the platform sets."""

from __future__ import annotations

import socket

import pytest

from cloudvote import __version__
from cloudvote.config import Settings
from cloudvote.observability.identity import ServedBy


def served(service: str, **env: str) -> ServedBy:
    return ServedBy.describe(service, Settings.from_env(env))


def test_the_monolith_names_itself_and_its_shape() -> None:
    who = served("monolith")

    assert who.service == "monolith"
    assert who.shape == "monolith"


@pytest.mark.parametrize("service", ["vote", "result", "worker"])
def test_each_service_is_the_microservices_shape(service: str) -> None:
    who = served(service)

    assert who.service == service
    assert who.shape == "microservices"


def test_kubernetes_pod_and_node_come_from_the_downward_api_variables() -> None:
    who = served("vote", POD_NAME="vote-7d9c8-x2x4q", NODE_NAME="node-2")

    assert who.instance == "vote-7d9c8-x2x4q"
    assert who.node == "node-2"


def test_without_a_pod_name_the_host_name_stands_for_the_instance() -> None:
    """Compose: the hostname is the container id; by hand, the machine's name."""
    who = served("result")

    assert who.instance == socket.gethostname()
    assert who.node == ""


def test_the_version_carries_the_release_marker_when_there_is_one() -> None:
    assert served("vote").version == __version__
    assert served("vote", CLOUDVOTE_RELEASE="r42").version == f"{__version__}+r42"


def test_headers_name_service_instance_version_shape_and_node() -> None:
    who = served("result", POD_NAME="result-abc", NODE_NAME="node-1", CLOUDVOTE_RELEASE="r1")

    assert dict(who.headers()) == {
        "Cloudvote-Service": "result",
        "Cloudvote-Instance": "result-abc",
        "Cloudvote-Version": f"{__version__}+r1",
        "Cloudvote-Shape": "microservices",
        "Cloudvote-Node": "node-1",
    }


def test_headers_leave_out_the_node_where_there_is_none() -> None:
    names = [name for name, _ in served("monolith").headers()]

    assert names == [
        "Cloudvote-Service",
        "Cloudvote-Instance",
        "Cloudvote-Version",
        "Cloudvote-Shape",
    ]

"""Which instance answered: service, pod or host, node, version and shape.

People put cloudvote on a projector to watch load balancing and rolling updates, so every
answer names the replica that served it: in headers for curl and scripts, and in the
pages' footer for the room.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudvote import __version__
from cloudvote.config import Settings


@dataclass(frozen=True, slots=True)
class ServedBy:
    service: str  # vote, result, worker or monolith
    instance: str  # the pod's name, or the host's (a container id under Docker)
    node: str  # the Kubernetes node; empty where there is none
    version: str
    shape: str  # monolith or microservices

    @classmethod
    def describe(cls, service: str, settings: Settings) -> ServedBy:
        version = f"{__version__}+{settings.release}" if settings.release else __version__
        shape = "monolith" if service == "monolith" else "microservices"
        return cls(service, settings.instance_name(), settings.node_name, version, shape)

    def headers(self) -> list[tuple[str, str]]:
        named = [
            ("Cloudvote-Service", self.service),
            ("Cloudvote-Instance", self.instance),
            ("Cloudvote-Version", self.version),
            ("Cloudvote-Shape", self.shape),
        ]
        if self.node:
            named.append(("Cloudvote-Node", self.node))
        return named

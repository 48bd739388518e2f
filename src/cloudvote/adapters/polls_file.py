"""Reading the polls file that a ConfigMap (or a developer) provides."""

from __future__ import annotations

from pathlib import Path

import yaml

from cloudvote.domain.polls import InvalidPollDefinition, PollCatalog


def load_polls_file(path: str) -> PollCatalog:
    """Parse YAML or JSON (JSON is valid YAML) into a catalog; errors name the file."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidPollDefinition(f"polls file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise InvalidPollDefinition(f"polls file {path} is not valid YAML/JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidPollDefinition(f"polls file {path} must hold a mapping with a 'polls' list")
    try:
        return PollCatalog.from_mapping(document)
    except InvalidPollDefinition as error:
        raise InvalidPollDefinition(f"polls file {path}: {error}") from None

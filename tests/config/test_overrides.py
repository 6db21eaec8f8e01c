"""The `overrides:` of a server as the config file gives them: their own shape is checked when the
file is read, each problem naming the file, the line, the key path and what to do. (What they
name is checked against the backend's listing once it runs: tests/test_overrides.py.)"""

from __future__ import annotations

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError

SERVER = "servers:\n  rec:\n    command: x\n    overrides:\n      search:\n"


def problems(override: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(SERVER + override, source="g.yaml")
    return err.value.problems


def test_a_valid_override_is_kept_as_written() -> None:
    cfg = parse_config(
        SERVER + "        name: find\n        title: Find\n        description_append: More.\n"
        "        hide: {region: eu}\n        defaults: {limit: 5}\n"
        "        schema: {units: {enum: [metric, imperial]}}\n"
    )
    override = cfg.servers["rec"].overrides["search"]
    assert (override.name, override.title, override.description_append) == ("find", "Find", "More.")
    assert override.hide == {"region": "eu"} and override.defaults == {"limit": 5}
    assert override.tighten == {"units": {"enum": ["metric", "imperial"]}}
    # Shown (admin API, effective config) under the key the file uses.
    assert cfg.model_dump(mode="json")["servers"]["rec"]["overrides"]["search"]["schema"] == override.tighten


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "        descripton: x\n",
            "g.yaml:6: servers.rec.overrides.search.descripton: unknown key; did you mean 'description'?",
        ),
        (
            "        name: 'find me'\n",
            "g.yaml:6: servers.rec.overrides.search.name: name 'find me' must be 1-64 letters, digits",
        ),
        (
            "        hide: {region: eu}\n        defaults: {region: us}\n",
            "g.yaml:7: servers.rec.overrides.search.defaults: argument 'region' is hidden too",
        ),
        (
            "        hide: {region: eu}\n        schema: {region: {enum: [eu]}}\n",
            "g.yaml:7: servers.rec.overrides.search.schema: argument 'region' is hidden: the client never",
        ),
        (
            "        schema: {units: {type: celsius}}\n",
            "g.yaml:6: servers.rec.overrides.search.schema: `units.type` is not valid JSON Schema",
        ),
        (
            "        schema: {units: [metric]}\n",
            "g.yaml:6: servers.rec.overrides.search.schema.units: must be a valid dictionary",
        ),
        (
            "        defaults: {units: kelvin}\n        schema: {units: {enum: [metric]}}\n",
            "g.yaml:7: servers.rec.overrides.search.schema: the default of 'units' does not pass",
        ),
        (
            "        name: find\n      lookup:\n        name: find\n",
            "g.yaml:4: servers.rec.overrides: tools 'search' and 'lookup' would both be named 'find'",
        ),
    ],
)
def test_a_malformed_override_is_refused_naming_its_key(override: str, expected: str) -> None:
    found = problems(override)
    assert len(found) == 1 and found[0].startswith(expected), found

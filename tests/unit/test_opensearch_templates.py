"""Rendering of mappings/ and the installed-vs-rendered comparison of setup."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shipper.errors import ConfigError
from shipper.setup import covers, names, rendered_bodies, template_priority

# The field contract as the repository documents it (PRODUCT.md's table plus smtp.reason and
# smtp.incomplete from CONTRACTS.md), so the test needs nothing outside the checkout.
FIELDS_DOC = Path(__file__).resolve().parents[2] / "docs" / "fields.md"


def bodies(prefix: str = "smtp-deliveries", **kw):
    args = {"replicas": 0, "refresh_interval": "5s", "retention_days": 90}
    args.update(kw)
    return rendered_bodies(prefix, **args)


def flatten(properties: dict, path: str = "") -> dict[str, str]:
    out = {}
    for name, spec in properties.items():
        if "properties" in spec:
            out.update(flatten(spec["properties"], f"{path}{name}."))
        else:
            out[f"{path}{name}"] = spec["type"]
    return out


def test_mapping_types_every_product_field():
    """Each field of the documented contract (docs/fields.md) has exactly the type the table names."""
    mapping = bodies()["mappings"]["template"]["mappings"]
    fields = flatten(mapping["properties"])
    table = re.findall(r"^\| `([^|]+)` \| ([^|]+) \|", FIELDS_DOC.read_text(), re.MULTILINE)
    expected: dict[str, str] = {}
    for names_cell, types_cell in table:
        field_names = re.findall(r"[@\w.]+", names_cell.replace("`", ""))
        types = [t.strip().split()[0].rstrip("[]") for t in types_cell.split(",")]
        if len(types) == 1:
            types *= len(field_names)
        expected.update(zip(field_names, types))
    expected |= {"smtp.reason": "keyword", "smtp.incomplete": "boolean"}  # CONTRACTS.md
    assert len(expected) >= 30
    assert expected.items() <= fields.items()
    assert "strict" == mapping["dynamic"]


def test_text_fields():
    """reply.text has a bounded keyword copy; the transcript is cheap full text."""
    smtp = bodies()["mappings"]["template"]["mappings"]["properties"]["smtp"]["properties"]
    assert {"type": "keyword", "ignore_above": 1024} == smtp["reply"]["properties"]["text"]["fields"]["keyword"]
    assert {"type": "text", "index_options": "positions", "norms": False} == smtp["transcript"]


def test_names_and_priority_follow_the_prefix():
    """Two installs never share a name, and overlapping patterns never tie."""
    a, b = bodies("smtp"), bodies("smtp-deliveries")
    assert ["smtp-*"] == a["index_template"]["index_patterns"]
    assert ["smtp-settings", "smtp-mappings"] == a["index_template"]["composed_of"]
    assert a["index_template"]["priority"] < b["index_template"]["priority"]
    assert template_priority("smtp-deliveries") == b["ism_policy"]["policy"]["ism_template"][0]["priority"]
    assert set(names("a").values()).isdisjoint(names("b").values())


def test_settings_and_retention_rendered():
    b = bodies(replicas=2, refresh_interval="30s", retention_days=7)
    index = b["settings"]["template"]["settings"]["index"]
    assert (1, 2, "30s", "best_compression") == (
        index["number_of_shards"], index["number_of_replicas"], index["refresh_interval"], index["codec"])
    hot = b["ism_policy"]["policy"]["states"][0]
    assert "7d" == hot["transitions"][0]["conditions"]["min_index_age"]


@pytest.mark.parametrize("prefix", ["", "Smtp", "a b", "x-", '"}'])
def test_bad_prefix_refused(prefix):
    with pytest.raises(ConfigError):
        bodies(prefix)


def test_covers_ignores_what_opensearch_adds_and_its_string_forms():
    wanted = {"settings": {"index": {"number_of_shards": 1, "codec": "best_compression"}}, "a": [{"delete": {}}]}
    installed = {
        "settings": {"index": {"number_of_shards": "1", "codec": "best_compression", "uuid": "x"}},
        "a": [{"delete": {}, "retry": {"count": 3}}],
    }
    assert covers(installed, wanted)
    assert not covers({**installed, "a": []}, wanted)
    assert not covers({"settings": {"index": {"number_of_shards": "2", "codec": "best_compression"}}, "a": [{"delete": {}}]}, wanted)
    assert not covers(None, wanted)
    assert covers({"x": "false"}, {"x": False})

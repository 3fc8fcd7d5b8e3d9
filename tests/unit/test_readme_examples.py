"""The README's examples are part of the product: they must keep working as written."""

from __future__ import annotations

import re
from pathlib import Path

from shipper import config
from shipper.reasons import REASONS, Classifier

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README, re.DOTALL)


def test_the_configuration_example_loads(tmp_path):
    """The configuration shown in the README is valid (files it names need not exist here)."""
    (block,) = [b for b in yaml_blocks() if b.startswith("opensearch:")]
    path = tmp_path / "config.yml"
    path.write_text(block, encoding="utf-8")
    settings = config.load(path, env={}, check_files=False, log_warnings=False)
    assert ("https://search.example.net:9200",) == settings.opensearch.hosts
    assert ["outbound", "inbound"] == [i.direction for i in settings.inputs]


def test_the_reason_rule_example_loads_and_decides(tmp_path):
    """The user rule file of the README is accepted and overrides `other` for its reply."""
    (block,) = [b for b in yaml_blocks() if "rules:" in b]
    rules = tmp_path / "reasons.local.yml"
    rules.write_text(block, encoding="utf-8")
    classifier = Classifier.from_files([rules])
    assert "spam-content" == classifier.classify("550", None, "Message quarantined for review")
    assert "other" == classifier.classify("550", None, "Message parked for review")  # the rule, not the code, decided


def test_the_reason_vocabulary_in_the_readme_is_the_closed_one():
    """The README lists every reason of the vocabulary, and no other."""
    section = README.split("## Why a message was not delivered", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([a-z]+(?:-[a-z]+)*)`", section.split("The RFC 3463", 1)[0]))
    assert set(REASONS) == listed - {"smtp", "delivered"}

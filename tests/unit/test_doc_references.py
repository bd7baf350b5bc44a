"""The security page cites the tests that check its statements: every cited file and test exists,
and every ELSA_* name it uses is a real setting."""

from __future__ import annotations

import re
from pathlib import Path

from elsa_client.settings import ClientSettings
from elsa_cloud.settings import CloudSettings
from elsa_edge.settings import EdgeSettings

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "security.md"


def test_cited_tests_exist() -> None:
    text = PAGE.read_text()
    cited = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", text)
    assert len(cited) >= 8
    for path, name in cited:
        source = (ROOT / path).read_text()
        assert not name or re.search(rf"def {name}\b", source), f"{path}::{name}"
    # bare test names cited after a file name must exist somewhere under tests/
    everything = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    for name in re.findall(r"\[`(test_\w+)`", text) + re.findall(r",\s*`(test_\w+)`\]", text):
        assert re.search(rf"def {name}\b", everything), name


def test_setting_names_are_real() -> None:
    fields = {
        f"{cls.model_config.get('env_prefix', '')}{name}".upper()
        for cls in (CloudSettings, EdgeSettings, ClientSettings)
        for name in cls.model_fields
    }
    for name in set(re.findall(r"ELSA_[A-Z_]+[A-Z]", PAGE.read_text())):
        if "_TIER_" in name or name.endswith("_"):
            continue
        assert name in fields, name

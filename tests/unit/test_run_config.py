"""Run configuration: defaults, the shipped YAML, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from elsa.errors import ConfigError
from elsa.runtime.config import RunConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_default_yaml_equals_built_in_defaults() -> None:
    assert load_config(ROOT / "configs" / "default.yaml") == RunConfig()


def test_every_shipped_config_is_valid() -> None:
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)


def test_mapping_onto_params() -> None:
    cfg = parse_config({"topology": {"edges": 3, "devices_per_edge": 4}, "model": {"head_blocks": 2}})
    assert cfg.num_devices == 12
    assert cfg.partition_params().num_parts == 12
    assert cfg.split_params().head_blocks == 2
    assert cfg.train_params().local_steps == 5


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"topology": {"edgez": 2}}, "topology.edgez"),
        ({"train": {"learning_rate": -1}}, "train.learning_rate"),
        ({"transport": {"dtype": "int8"}}, "transport.dtype"),
        ({"model": {"head_blocks": 0}}, "model.head_blocks"),
        ([1, 2], "mapping"),
    ],
)
def test_invalid_configs_name_the_field(raw: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        parse_config(raw)


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({"train": {"batch_size": "many"}}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        load_config(wrong)

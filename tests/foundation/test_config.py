from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from ground.config import Params, load_params, parse_params, with_overrides
from ground.errors import ConfigError


def _raw(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def test_repo_params_load_and_are_frozen(params: Params) -> None:
    assert params.profile == "local"
    assert len(params.params_hash) == 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.cohort.seed = 3  # type: ignore[misc]


def test_every_dataclass_field_has_a_yaml_key_and_back(repo_root: Path) -> None:
    raw = _raw(repo_root)
    params = parse_params(raw)
    as_dict = params.to_dict()
    assert set(as_dict) == set(raw)
    for section, values in raw.items():
        if isinstance(values, dict):
            assert set(as_dict[section]) == set(values), section


def test_hash_changes_with_content(repo_root: Path) -> None:
    raw = _raw(repo_root)
    a = parse_params(raw).params_hash
    raw["cohort"]["seed"] = 99
    assert parse_params(raw).params_hash != a


def test_overrides_revalidate(params: Params) -> None:
    p = with_overrides(params, cohort={"base": "whas500", "seed": None})
    assert p.cohort.base == "whas500" and p.cohort.seed == params.cohort.seed
    with pytest.raises(ConfigError, match="cohort.base must be one of"):
        with_overrides(params, cohort={"base": "nope"})


@pytest.mark.parametrize(
    ("section", "key", "value", "match"),
    [
        ("cohort", "base", "metabric", r"cohort\.base must be one of gbsg2"),
        ("cohort", "seed", "zero", r"cohort\.seed must be an integer"),
        ("cohort", "admission_start", "yesterday", r"cohort\.admission_start must be an ISO date"),
        ("generator", "resolution", 48, r"generator\.resolution must be a power of two"),
        ("align", "multi_face", "all", r"align\.multi_face must be 'reject' or 'best'"),
        ("training", "test_fraction", 1.5, r"training\.test_fraction must be between 0 and 1"),
        ("training", "horizons_days", [], r"training\.horizons_days must be a non-empty list"),
        ("flows", "embedding_cron", "nightly", r"flows\.embedding_cron must be a 5-field cron"),
        ("projection", "enable", True, r"projection\.enable is not a known setting"),
        ("align", "enable_padding", "yes", r"align\.enable_padding must be true or false"),
    ],
)
def test_bad_values_name_the_key(repo_root: Path, section: str, key: str, value: object, match: str) -> None:
    raw = _raw(repo_root)
    raw[section][key] = value
    with pytest.raises(ConfigError, match=match):
        parse_params(raw)


def test_missing_key_and_section(repo_root: Path) -> None:
    raw = _raw(repo_root)
    del raw["cohort"]["seed"]
    with pytest.raises(ConfigError, match=r"cohort\.seed is missing"):
        parse_params(raw)
    raw = _raw(repo_root)
    del raw["serving"]
    with pytest.raises(ConfigError, match=r"serving is missing"):
        parse_params(raw)


def test_malformed_yaml_file(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("cohort:\n  base: [gbsg2\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: malformed YAML at line \d+"):
        load_params(p)


def test_empty_and_absent_file(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    with pytest.raises(ConfigError, match="no params.yaml here"):
        load_params(p)
    p.write_text("")
    with pytest.raises(ConfigError, match="file is empty"):
        load_params(p)
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_params(p)


def test_the_paper_method_is_one_switch(repo_root: Path) -> None:
    from ground.config import PAPER_PROJECTION

    raw = _raw(repo_root)
    raw["projection"]["method"] = "paper"
    raw["projection"]["steps"] = 7          # replaced: the switch selects the paper's step count
    p = parse_params(raw)
    assert (p.projection.space, p.projection.loss, p.projection.steps) == ("z", "perceptual", 1000)
    assert p.perceptual.network == "lpips-vgg16" and p.align.output_size == 512
    assert all(getattr(p.projection, k) == v for k, v in PAPER_PROJECTION.items())
    assert p.projection.batch_size == raw["projection"]["batch_size"]   # what the paper does not fix stays
    custom = parse_params(_raw(repo_root))
    assert custom.projection.method == "custom" and custom.projection.steps == _raw(repo_root)["projection"]["steps"]
    assert with_overrides(custom, projection={"method": "paper"}).projection.steps == 1000


@pytest.mark.parametrize(("key", "value", "match"), [
    ("method", "nvidia", r"projection\.method must be 'custom' or 'paper'"),
    ("init", "zero", r"projection\.init must be 'mean' or 'encoder'"),
    ("steps", 0, r"projection\.steps must be >= 1 \(0 only with init: encoder"),
])
def test_bad_projection_method_and_init(repo_root: Path, key: str, value: object, match: str) -> None:
    raw = _raw(repo_root)
    raw["projection"][key] = value
    with pytest.raises(ConfigError, match=match):
        parse_params(raw)
    raw["projection"].update(init="encoder", steps=0)
    assert parse_params(raw if key == "steps" else _raw(repo_root)).projection.steps >= 0

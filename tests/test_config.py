import pytest

from augment.config import Config
from augment.config_file import load_config, parse_overrides
from augment.errors import UserError
from conftest import REPO


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml", "my_folder.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(REPO / "configs" / name)
    assert isinstance(cfg, Config)


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg.data.source == "digits" and cfg.gan.mode == "per_class+mix" and "real" in cfg.benchmark.arms


def test_relative_data_path_is_relative_to_the_config(tmp_path):
    (tmp_path / "c.yaml").write_text("data:\n  source: folder\n  path: imgs\n")
    assert load_config(tmp_path / "c.yaml").data.path == (tmp_path / "imgs").resolve()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("gan:\n  stepz: 3\n", "unknown config key 'gan.stepz'"),
        ("colour: red\n", "unknown config key 'colour'"),
        ("gan:\n  mode: lstm\n", "config key 'gan.mode'"),
        ("gan:\n  steps: -1\n", "config key 'gan.steps'"),
        ("device: tpu\n", "config key 'device'"),
        ("smote:\n  sampler: MagicSMOTE\n", "config key 'smote.sampler': unknown sampler 'MagicSMOTE'"),
        ("data:\n  source: folder\n", "data.path is required"),
        ("data:\n  imbalance_ratio: 5\n", "data.imbalance_ratio needs data.per_class"),
        ("benchmark:\n  arms: [real+gan]\n", "config key 'benchmark.arms': the 'real' arm is required"),
        ("benchmark:\n  arms: [real, real+magic]\n", "unknown arm(s) ['real+magic']"),
    ],
)
def test_bad_configs_name_the_file_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and expected in message
    assert "\n" not in message


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("seed: 1\ngan: [\n")
    with pytest.raises(UserError, match=r"broken.yaml: not valid YAML \(line \d+\)"):
        load_config(path)


def test_missing_file():
    with pytest.raises(UserError, match="nope.yaml: config file not found"):
        load_config("nope.yaml")


def test_overrides_are_parsed_as_yaml_and_applied():
    assert parse_overrides(["gan.steps=10", "data.per_class=5", "benchmark.arms=[real, real+gan]"]) == {
        "gan": {"steps": 10},
        "data": {"per_class": 5},
        "benchmark": {"arms": ["real", "real+gan"]},
    }
    cfg = load_config(REPO / "configs" / "smoke.yaml", ["gan.steps=7", "seed=3", "gate.min_confidence=0.9"])
    assert (cfg.gan.steps, cfg.seed, cfg.gate.min_confidence) == (7, 3, 0.9)
    assert cfg.gan.image_size == 16  # untouched keys keep the file's values


@pytest.mark.parametrize("bad", ["gan.steps", "=3", "seed.x=1"])
def test_bad_overrides(bad):
    with pytest.raises(UserError):
        load_config(None, [bad])


def test_unknown_override_key_names_it():
    with pytest.raises(UserError, match="unknown config key 'gan.nope'"):
        load_config(None, ["gan.nope=1"])


def test_section_hash_changes_only_with_its_section():
    a, b = load_config(None), load_config(None, ["gan.steps=3"])
    assert a.section_hash("data") == b.section_hash("data")
    assert a.section_hash("gan") != b.section_hash("gan")


def test_readme_documents_every_config_key():
    """README's key table names every key of every section (keys sharing a row, like
    `gan.ngf`, `gan.ndf`, count), so the README cannot fall behind the config."""
    import re

    from augment.config import Config
    from conftest import REPO

    documented = set(re.findall(r"`([a-z_]+(?:\.[a-z_0-9]+)?)`", (REPO / "README.md").read_text().split("## Config keys")[1]
                                .split("\n## ")[0]))
    keys = set()
    for name, field in Config.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        keys |= {f"{name}.{k}" for k in sub} if sub else {name}
    assert sorted(keys - documented) == []

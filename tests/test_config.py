import warnings
from pathlib import Path

import pytest
import yaml

from augment.config import Config, ConfigWarning
from augment.config_file import load_config, parse_overrides
from augment.errors import UserError
from conftest import REPO


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml", "my_folder.yaml"])
def test_shipped_configs_load_without_a_warning(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        cfg = load_config(REPO / "configs" / name)
    assert isinstance(cfg, Config)


def test_the_embedded_default_lists_only_the_keys_it_changes_and_run_none_uses_it(monkeypatch, tmp_path):
    """configs/default.yaml sets a key only where it differs from the library default (augment.config),
    and augment.run(None) runs it, as `augment run` with no config does."""
    from augment import graph
    from augment.config_file import default_config_path

    raw, defaults = yaml.safe_load((REPO / "configs" / "default.yaml").read_text()), Config().model_dump(mode="json")
    same = [f"{section}.{key}" for section, keys in raw.items() for key, value in keys.items()
            if defaults[section][key] == value]
    assert not same, f"configs/default.yaml repeats library defaults: {same}"
    seen = {}
    monkeypatch.setattr(graph, "run_pipeline", lambda cfg, path: seen.update(cfg=cfg, path=path))
    monkeypatch.setattr(graph, "read_summary", lambda path: None)
    monkeypatch.chdir(tmp_path)  # no configs/ here: the one beside the package
    graph.run(None)
    assert seen["cfg"] == load_config(default_config_path()) and seen["path"] == Path("runs") / "default"
    assert default_config_path() == REPO / "configs" / "default.yaml"


def test_a_renamed_key_loads_with_a_warning_and_both_names_are_an_error(tmp_path):
    with pytest.warns(ConfigWarning, match="smote.multiplier is now smote.fill_ratio"):
        assert load_config(None, ["smote.multiplier=4"]).smote.fill_ratio == 4.0
    with pytest.raises(UserError, match="smote.multiplier is the old name of smote.fill_ratio"):
        load_config(None, ["smote.multiplier=4", "smote.fill_ratio=2"])


@pytest.mark.parametrize("overrides, line", [
    (["smote.features=cnn", "smote.pca_components=8"], "smote.pca_components does nothing: smote.features is not pixels"),
    (["gan.mode=per_class", "gan.mix_reconstruction=3"], "gan.mix_reconstruction does nothing: only gan.mode mix or hydra reads it"),
    (["gan.enabled=false", "gan.steps=10"], "gan.steps does nothing: gan.enabled is false"),
    (["benchmark.synthetic_share=0.5", "benchmark.share_grid=[0.1]"], "benchmark.share_grid does nothing"),
    (["classical.transforms=[{__class_fullname__: Blur}]", "classical.preset=heavy"], "classical.preset does nothing"),
])
def test_a_key_that_does_nothing_in_the_chosen_combination_is_one_warning(overrides, line):
    with pytest.warns(ConfigWarning, match=line):
        load_config(None, overrides)
    with warnings.catch_warnings():  # the same key where it does something: silent
        warnings.simplefilter("error", ConfigWarning)
        load_config(None, ["gan.mode=mix", "gan.mix_reconstruction=3", "smote.pca_components=8"])
        load_config(None, ["gan.latent_scales=[0.8,1.0]"])  # synthesize scores every scale of the last step
        load_config(None, ["classical.enabled=false", "classical.preset=heavy"])  # still applied on the fly
        load_config(None, ["smote.enabled=false", "smote.pca_components=8"])  # the linear probe's features


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


def test_the_docs_document_every_config_key_and_no_other():
    """docs/config.md's key table names every key of every section (keys sharing a row, like
    `gan.ngf`, `gan.ndf`, count) and no key the config does not have, so it cannot fall behind."""
    import re

    from augment.config import Config
    from conftest import REPO

    table = [line for line in (REPO / "docs" / "config.md").read_text().splitlines() if line.startswith("| `")]
    documented = {k for line in table for k in re.findall(r"`([a-z_]+(?:\.[a-z_0-9]+)?)`", line.split(" | ")[0])}
    keys = set()
    for name, field in Config.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        keys |= {f"{name}.{k}" for k in sub} if sub else {name}
    assert sorted(keys - documented) == [] and sorted(documented - keys) == []

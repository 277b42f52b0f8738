"""Config files: YAML 1.2 booleans, --set overrides, input paths made absolute, one-line errors.

load_config returns an augment.config.Config; augment.graph.load_config adds the checks that
read the input (data, pipeline file, weights).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from augment.config import Config, ConfigWarning
from augment.errors import UserError
from augment.registry import GENERATORS, generator_modes, source_member

# Keys holding a path to an input: a relative one is made absolute at load, against the folder of
# the config file that sets it, or the current folder for --set.
PATH_KEYS = ("data.path", "data.test_path", "classical.pipeline_file", "smote.weights", "benchmark.weights")


class _YamlLoader(yaml.SafeLoader):
    """yaml.SafeLoader with YAML 1.2's booleans: only true/false (any case) are booleans."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                  list("tTfF"))


def yaml_load(text: str):
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506  (a SafeLoader subclass)



def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown config key '{loc}'"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "bool_type":  # yes/no/on/off/1/0 are not booleans here
        msg = f"expected true or false, got {first['input']!r}"
    if not first["loc"] or f"{loc}." in msg:  # a rule across keys: the message names them
        return f"{source}: {msg}"
    return f"{source}: config key '{loc}': {msg}"


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {dotted}: '{part}' is not a config section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> dict:
    """Turn ['gan.steps=10', ...] into a nested dict; values are parsed as YAML scalars."""
    tree: dict = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected key.path=value")
        try:
            value = yaml_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        _set_path(tree, key.strip(), value)
    return tree


def _absolute_paths(tree: dict, base: Path) -> dict:
    """Make the relative input paths (PATH_KEYS) in `tree` absolute against `base`, in place."""
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        node = tree.get(section)
        value = node.get(key) if isinstance(node, dict) else None
        if isinstance(value, str) and value and not Path(value).is_absolute():
            node[key] = str((base / value).resolve())
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


DEFAULT_CONFIG = "configs/default.yaml"  # the embedded default (scikit-learn's digits made scarce)


def default_config_path() -> Path:
    """configs/default.yaml in the working directory, else the one shipped beside this package."""
    here = Path(DEFAULT_CONFIG)
    return here if here.is_file() else Path(__file__).resolve().parents[1] / DEFAULT_CONFIG


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the built-in defaults when path is None) and apply --set overrides."""
    raw: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        try:
            raw = yaml_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise UserError(f"{path}: not valid YAML{where}") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: the config must be a mapping of sections")
        _absolute_paths(raw, path.parent)
    raw = _merge(raw, _absolute_paths(parse_overrides(overrides), Path.cwd()))
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(_format_error(err, source)) from None
    for line in inert_keys(cfg):
        warnings.warn(f"{source}: {line}", ConfigWarning, stacklevel=2)
    return cfg


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------- keys that do nothing

# (section, keys, when they do nothing, why): a key set in the config (not left at its default)
# while its condition holds is one warning (augment.config_file.load_config), never an error.
INERT: list[tuple[str, tuple[str, ...], Any, str]] = [
    ("smote", ("backbone", "weights", "input_size"), lambda c: c.smote.features != "pretrained",
     "smote.features is not pretrained"),
    ("smote", ("pca_components",), lambda c: c.smote.features != "pixels", "smote.features is not pixels"),
    ("classical", ("preset", "flips"), lambda c: c.classical.transforms is not None or c.classical.pipeline_file is not None,
     "classical.transforms or classical.pipeline_file replaces the preset"),
    ("gan", ("patience",), lambda c: c.gan.checkpoint_selection == "last",
     "gan.checkpoint_selection is last (no snapshot is scored while the GAN trains)"),
    ("benchmark", ("share_grid",), lambda c: c.benchmark.synthetic_share != "auto",
     "benchmark.synthetic_share is a number (no share is chosen)"),
    ("benchmark", ("cross_sources",), lambda c: not any(getattr(c, source_member(s)[0]).enabled for s in c.benchmark.cross_sources),
     "none of its sources' stages is enabled"),
]


def inert_keys(cfg: Config) -> list[str]:
    """One line per key the config sets that does nothing in the combination it chose."""
    out = []
    # a disabled stage's keys, except those another stage still reads: the classical pipeline on the fly
    # (benchmark.classical_on_the_fly) and the linear probe's feature space (benchmark.linear_probe)
    still_read = {"classical": cfg.benchmark.classical_on_the_fly, "smote": cfg.benchmark.linear_probe, "gan": False}
    for section in ("classical", "smote", "gan"):
        part = getattr(cfg, section)
        if not part.enabled and not still_read[section]:
            out += [f"{section}.{k} does nothing: {section}.enabled is false" for k in sorted(part.model_fields_set - {"enabled"})]
    for section, keys, when, why in INERT:
        part = getattr(cfg, section)
        if (section not in ("classical", "smote", "gan") or part.enabled) and when(cfg):
            out += [f"{section}.{k} does nothing: {why}" for k in keys if k in part.model_fields_set]
    if cfg.gan.enabled:  # keys one generator reads (registry GeneratorEntry.keys), set for a gan.mode without it
        members = generator_modes(cfg.gan.mode)
        for k in sorted({k for entry in GENERATORS.values() for k in entry.keys} & cfg.gan.model_fields_set):
            readers = [name for name, entry in GENERATORS.items() if k in entry.keys]
            if not set(readers) & set(members):
                out.append(f"gan.{k} does nothing: only gan.mode {' or '.join(readers)} reads it, not {cfg.gan.mode!r}")
    return out

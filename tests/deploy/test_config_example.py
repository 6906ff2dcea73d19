"""deploy/config.example.toml loads, shows the defaults, and names every setting of gateway/config.py."""
from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from gateway.config import Settings, load_settings
from tests.deploy.conftest import DEPLOY

EXAMPLE = DEPLOY / "config.example.toml"
# Where the example deliberately differs from the defaults: the data directory of the systemd unit and image.
NOT_DEFAULT = {("store", "path"), ("signing", "dev_dir")}
_SECTION = re.compile(r"^(#\s*)?\[\[?([\w.]+)\]\]?\s*$")
_KEY = re.compile(r"^(#\s*)?(\w+)\s*=\s*\S")


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models inside a field's type (`X`, `X | None`, `list[X]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def _settings(model: type[BaseModel], section: str = "") -> Iterator[tuple[str, str]]:
    """Every leaf setting as (TOML section, key), walking nested models and lists of models."""
    for name, field in model.model_fields.items():
        nested = _models_in(field.annotation)
        if nested:
            yield from _settings(nested[0], f"{section}.{name}".lstrip("."))
        else:
            yield section, name


def _keys_in_example() -> dict[tuple[str, str], bool]:
    """(section, key) of every setting the example names, mapped to whether it is commented out."""
    keys: dict[tuple[str, str], bool] = {}
    section = ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if match := _SECTION.match(line):
            section = match.group(2)
        elif match := _KEY.match(line):
            keys.setdefault((section, match.group(2)), match.group(1) is not None)
    return keys


def _uncommented(text: str) -> str:
    """The example with every optional setting switched on."""
    active = {key for key, commented in _keys_in_example().items() if not commented}
    lines, section = [], ""
    for line in text.splitlines():
        if match := _SECTION.match(line):
            section = match.group(2)
            line = line.lstrip("# ")
        elif (match := _KEY.match(line)) and match.group(1) and (section, match.group(2)) not in active:
            line = line[len(match.group(1)):]
        lines.append(line)
    return "\n".join(lines)


def test_the_example_loads() -> None:
    settings = load_settings(EXAMPLE, environ={})
    assert settings.store.path == Path("/var/lib/healthbook-gateway/gateway.db")


def test_the_example_shows_the_defaults() -> None:
    loaded = load_settings(EXAMPLE, environ={}).model_dump()
    defaults = Settings().model_dump()
    for section, key in NOT_DEFAULT:
        del loaded[section][key], defaults[section][key]
    assert loaded == defaults


def test_every_setting_is_in_the_example() -> None:
    missing = set(_settings(Settings)) - _keys_in_example().keys()
    assert missing == set(), f"settings missing from {EXAMPLE.name}: {sorted(missing)}"


def test_the_example_names_no_unknown_setting() -> None:
    unknown = _keys_in_example().keys() - set(_settings(Settings))
    assert unknown == set(), f"{EXAMPLE.name} names settings gateway/config.py does not have: {sorted(unknown)}"


def test_the_optional_examples_are_valid_settings(tmp_path: Path) -> None:
    full, catalogue = tmp_path / "full.toml", tmp_path / "site-mappings.toml"
    catalogue.write_text('[wards]\n"KB" = "K01"\n', encoding="utf-8")
    text = _uncommented(EXAMPLE.read_text(encoding="utf-8"))
    full.write_text(text.replace("/etc/healthbook-gateway/site-mappings.toml", str(catalogue)), encoding="utf-8")
    settings = load_settings(full, environ={})
    assert settings.site_mappings.as_mapping()["wards"] == {"KB": "K01", "NOI-TM": "K02"}
    assert settings.mllp.allowed_senders[0].address == "10.10.20.0/24"
    assert settings.signing.pkcs11_module is not None
    assert settings.store.encryption_key is not None


def test_the_settings_walk_sees_nested_lists_and_optionals() -> None:
    walked = set(_settings(Settings))
    assert {("mllp.allowed_senders", "address"), ("http.fhir_senders", "name"), ("mllp.tls", "cert_file"),
            ("portal.hub", "push_path"), ("mllp", "sender_charsets")} <= walked

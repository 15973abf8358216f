"""``check-config --schema``: the JSON Schema agrees with the parser on shipped files,
refuses what the parser refuses for keys and types, and names every key it knows."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from streamlstm.cli import main
from streamlstm.errors import ConfigError
from streamlstm.service.config import parse as parse_mod
from streamlstm.service.config import parse_config
from streamlstm.service.config.envsubst import interpolate
from streamlstm.service.config.schema import config_schema
from streamlstm.service.config.yamlread import Loader, Section

REPO = Path(__file__).resolve().parents[3]
SHIPPED = [*sorted((REPO / "config").glob("*.yaml")), REPO / "deploy/kubernetes/pipeline.yaml"]
# The Kubernetes example reads its password and its static member id (the pod name)
# from the environment.
ENV = {"KAFKA_PASSWORD": "secret", "POD_NAME": "streamlstm-0"}


def _load(path: Path) -> Any:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506
    data, errors = interpolate(data, ENV)
    assert not errors
    return data


def _validator() -> jsonschema.Draft202012Validator:
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_cli_prints_a_valid_draft_2020_12_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_check_config_without_file_or_schema_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"]) == 2
    assert "--schema" in capsys.readouterr().err


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_configs_validate(path: Path) -> None:
    errors = [e.message for e in _validator().iter_errors(_load(path))]
    assert errors == []


def _sensors() -> Any:
    return _load(REPO / "config/sensors.yaml")


def _typo_key(d: Any) -> None:
    d["pipelines"][0].setdefault("alerts", {})["min_runs"] = 3


def _wrong_type(d: Any) -> None:
    d.setdefault("metrics", {})["port"] = "10131"


def _out_of_range(d: Any) -> None:
    d["pipelines"][0].setdefault("checkpoint", {})["keep"] = 0


def _bad_choice(d: Any) -> None:
    d["pipelines"][0]["source"]["start"] = "beginning"


def _literal_secret(d: Any) -> None:
    d.setdefault("kafka", {})["sasl_password"] = "hunter2"


def _typo_in_feature(d: Any) -> None:
    d["pipelines"][0]["decode"]["features"][0] = {"name": "temp", "transfrom": "log"}


@pytest.mark.parametrize(
    "mutate",
    [_typo_key, _wrong_type, _out_of_range, _bad_choice, _literal_secret, _typo_in_feature],
)
def test_schema_and_parser_both_refuse(mutate: Any) -> None:
    data = copy.deepcopy(_sensors())
    parse_config(copy.deepcopy(data), env=ENV)  # the unmutated file is fine
    mutate(data)
    assert list(_validator().iter_errors(data)), "the schema accepted it"
    with pytest.raises(ConfigError):
        parse_config(data, env=ENV)


def _node(schema: Any, path: str) -> Any:
    """The object schema at a parser path like ``pipelines[0].decode.features[1]``."""
    node = schema
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        node = _as_object(node) if not part.startswith("[") else _as_array(node)
        node = node["items"] if part.startswith("[") else node["properties"][part]
    return _as_object(node)


def _as_object(node: Any) -> Any:
    for alt in node.get("anyOf", [node]):
        if "properties" in alt or "items" in alt:
            return alt
    raise AssertionError(f"no object or array schema in {node}")


def _as_array(node: Any) -> Any:
    return next(a for a in node.get("anyOf", [node]) if a.get("type") == "array")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_key_the_parser_allows_is_in_the_schema(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, tuple[str, ...]]] = []
    real_init = Section.__init__

    def spy(self: Section, data: Any, where: str, allowed: Any) -> None:
        seen.append((where, tuple(allowed)))
        real_init(self, data, where, allowed)

    monkeypatch.setattr(Section, "__init__", spy)
    parse_config(_load(path), env=ENV)
    schema = config_schema()
    where_seen = {w for w, _ in seen}
    assert {"", "metrics", "service", "pipelines[0].decode.features[0]"} <= where_seen
    for where, allowed in seen:
        props = _node(schema, where)["properties"]
        missing = set(allowed) - set(props)
        assert not missing, f"{where or '<top>'}: {sorted(missing)} not in the schema"
    assert parse_mod.Section is Section  # the parser builds the class we spied on


def test_schema_output_is_json_with_no_python_objects() -> None:
    buf = io.StringIO()
    json.dump(config_schema(), buf)  # a default that is a Path or a tuple would fail here
    assert "<" not in json.dumps(config_schema()["properties"]["version"])

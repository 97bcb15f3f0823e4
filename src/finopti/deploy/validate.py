"""Validate the rendered bundle against the published JSON schemas, without the engines.

- docker-compose.yml: the Compose Specification schema, vendored in `schemas/` (see schemas/README.md).
- apisix.yaml: the schemas APISIX 3.18 reports for its resources and plugins (`schema.json` in
  ../shared/apisix, not shipped with the project). Validated the way APISIX loads a standalone file:
  Draft 7, property defaults filled in before `if/then/else` is evaluated, PCRE patterns (the `regex`
  package), and no length/pattern/enum checks on secret references (`$env://...`), whose values APISIX
  resolves at run time. A schema pass is necessary, not sufficient: some plugins check more in code.
"""

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import regex
import yaml
from jsonschema import Draft7Validator, ValidationError
from jsonschema.exceptions import best_match
from jsonschema.validators import extend, validator_for

COMPOSE_SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
SECRET_PREFIXES = ("$env://", "$ENV://", "$secret://")


def _is_secret(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SECRET_PREFIXES)


def _pcre_pattern(validator, pattern: str, instance, schema) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _is_secret(instance) and not regex.search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pcre_pattern_properties(validator, patterns: dict, instance, schema) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if regex.search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _unless_secret(keyword: str):
    original = Draft7Validator.VALIDATORS[keyword]

    def check(validator, value, instance, schema):
        if not _is_secret(instance):
            yield from original(validator, value, instance, schema)

    return check


ApisixValidator = extend(Draft7Validator, {
    "pattern": _pcre_pattern,
    "patternProperties": _pcre_pattern_properties,
    **{k: _unless_secret(k) for k in ("minLength", "maxLength", "enum")},
})


def fill_defaults(schema: dict, instance):
    """A copy of `instance` with the defaults of `properties` filled in, recursively (as APISIX does)."""
    instance = copy.deepcopy(instance)
    _fill(schema, instance)
    return instance


def _fill(schema: dict, instance) -> None:
    if not isinstance(schema, dict):
        return
    if isinstance(instance, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in instance and isinstance(sub, dict) and "default" in sub:
                instance[name] = copy.deepcopy(sub["default"])
            if name in instance:
                _fill(sub, instance[name])
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            _fill(schema["items"], item)


def _errors(schema: dict, instance, where: str) -> list[str]:
    filled = fill_defaults(schema, instance)
    return [f"{where}{'/' + '/'.join(map(str, e.absolute_path)) if e.absolute_path else ''}: {e.message}"
            for e in ApisixValidator(schema).iter_errors(filled)]


def load_apisix_schemas(path: Path | str) -> dict:
    return json.loads(Path(path).read_text())


def validate_apisix(doc: dict, schemas: dict, enabled_plugins: list[str] | None = None) -> list[str]:
    """Problems of a standalone apisix.yaml (parsed): each resource, each plugin, each reference."""
    main, plugins = schemas["main"], schemas["plugins"]
    problems: list[str] = []

    def check_plugins(conf: dict, where: str, key: str = "schema") -> None:
        for name, plugin_conf in (conf or {}).items():
            if name not in plugins:
                problems.append(f"{where}: unknown plugin '{name}'")
                continue
            if enabled_plugins is not None and name not in enabled_plugins:
                problems.append(f"{where}: plugin '{name}' is not enabled in config.yaml")
            problems.extend(_errors(plugins[name][key], plugin_conf, f"{where}/plugins/{name}"))

    sections = {"routes": "route", "upstreams": "upstream", "consumers": "consumer",
                "plugin_configs": "plugin_config", "global_rules": "global_rule", "ssls": "ssl"}
    for section, kind in sections.items():
        for index, item in enumerate(doc.get(section) or []):
            where = f"{section}[{item.get('id', item.get('username', index))}]"
            problems.extend(_errors(main[kind], item, where))
            check_plugins(item.get("plugins"), where, "consumer_schema" if section == "consumers" else "schema")
    for item in doc.get("plugin_metadata") or []:
        name = item.get("id")
        schema = (plugins.get(name) or {}).get("metadata_schema")
        if schema is None:
            problems.append(f"plugin_metadata[{name}]: the plugin has no metadata")
            continue
        problems.extend(_errors(schema, {k: v for k, v in item.items() if k != "id"}, f"plugin_metadata[{name}]"))
    problems.extend(_references(doc))
    return problems


def _references(doc: dict) -> list[str]:
    upstreams = {u.get("id") for u in doc.get("upstreams") or []}
    configs = {c.get("id") for c in doc.get("plugin_configs") or []}
    problems = []
    for route in doc.get("routes") or []:
        where = f"routes[{route.get('id')}]"
        wanted = [route.get("upstream_id")]
        split = (route.get("plugins") or {}).get("traffic-split") or {}
        wanted += [w.get("upstream_id") for rule in split.get("rules", []) for w in rule.get("weighted_upstreams", [])]
        for up in wanted:
            if up is not None and up not in upstreams:
                problems.append(f"{where}: upstream '{up}' is not defined")
        if route.get("plugin_config_id") is not None and route["plugin_config_id"] not in configs:
            problems.append(f"{where}: plugin_config '{route['plugin_config_id']}' is not defined")
    return problems


def validate_apisix_text(text: str, schemas: dict, enabled_plugins: list[str] | None = None) -> list[str]:
    problems = [] if text.rstrip().endswith("#END") else ["apisix.yaml does not end with the line '#END'"]
    return problems + validate_apisix(yaml.safe_load(text) or {}, schemas, enabled_plugins)


def validate_compose_schema(doc: dict, schema_path: Path = COMPOSE_SCHEMA) -> list[str]:
    """Problems of a parsed docker-compose.yml against the Compose Specification schema."""
    schema = json.loads(schema_path.read_text())
    validator = validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())
    errors = [best_match([e]) for e in validator.iter_errors(doc)]
    paths = [tuple(map(str, e.absolute_path)) for e in errors]
    # A failed oneOf also leaves its properties "unevaluated" on the parent: report the cause only.
    errors = [e for e, p in zip(errors, paths, strict=True)
              if not (e.validator == "unevaluatedProperties" and any(q[:len(p)] == p and q != p for q in paths))]
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errors)

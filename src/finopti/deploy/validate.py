"""Validate the rendered bundle against the published JSON schemas, without the engines.

- docker-compose.yml: the Compose Specification schema, vendored in `schemas/` (see schemas/README.md).
- apisix.yaml: the schemas APISIX 3.18 reports for its resources and plugins (`schema.json` in
  ../shared/apisix, not shipped with the project). Validated the way APISIX loads a standalone file:
  Draft 7, property defaults filled in before `if/then/else` is evaluated, PCRE patterns (the `regex`
  package), and no length/pattern/enum checks on secret references (`$env://...`), whose values APISIX
  resolves at run time. A schema pass is necessary, not sufficient: APISIX checks more in code, which
  `apisix_checks.check_loadable` reproduces (PEM certificates, `vars` expressions, references, ...).
"""

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import regex
import yaml
from jsonschema import Draft7Validator, ValidationError
from jsonschema.exceptions import best_match
from jsonschema.validators import extend, validator_for

from finopti.deploy.apisix_checks import check_loadable
from finopti.deploy.apisix_checks import is_secret as _is_secret

COMPOSE_SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"


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
    """Problems of a standalone apisix.yaml (parsed): each resource and plugin against APISIX's schemas,
    then what APISIX checks in code at load (`check_loadable`), references included."""
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
    problems.extend(check_loadable(doc))
    return problems


def validate_apisix_text(text: str, schemas: dict, enabled_plugins: list[str] | None = None) -> list[str]:
    problems = [] if text.rstrip().endswith("#END") else ["apisix.yaml does not end with the line '#END'"]
    return problems + validate_apisix(yaml.safe_load(text) or {}, schemas, enabled_plugins)


def default_apisix_schemas() -> Path | None:
    """APISIX's schemas: FINOPTI_APISIX_SCHEMAS, else ../shared/apisix/schema.json beside the working directory
    (the project's checkout); None when neither exists (they are not shipped with the project)."""
    configured = os.environ.get("FINOPTI_APISIX_SCHEMAS")
    path = Path(configured) if configured else Path.cwd().parent / "shared" / "apisix" / "schema.json"
    return path if path.is_file() else None


def validate_apisix_dir(apisix_dir: Path | str, schemas: dict | None = None) -> list[str]:
    """Problems of a bundle's `apisix/` directory (apisix.yaml with config.yaml's plugin list): what APISIX
    checks in code at load, always; its JSON schemas too when `schemas` is given."""
    directory = Path(apisix_dir)
    try:
        text = (directory / "apisix.yaml").read_text()
        config = yaml.safe_load((directory / "config.yaml").read_text()) or {}
        doc = yaml.safe_load(text) or {}
    except FileNotFoundError as exc:
        return [f"{exc.filename}: file not found"]
    except yaml.YAMLError as exc:
        return [f"{directory}: not valid YAML: {exc}"]
    enabled = config.get("plugins") if isinstance(config, dict) else None
    if schemas is not None:
        return validate_apisix_text(text, schemas, enabled)
    problems = [] if text.rstrip().endswith("#END") else ["apisix.yaml does not end with the line '#END'"]
    problems += check_loadable(doc)
    if enabled is not None:
        used = {name for section in ("routes", "plugin_configs", "global_rules", "consumers")
                for item in doc.get(section) or [] for name in item.get("plugins") or {}}
        problems += [f"plugin '{name}' is used but not enabled in config.yaml" for name in sorted(used - set(enabled))]
    return problems


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

"""Kubernetes manifests as data with Helm expressions in them, written as the chart's template files.

A renderer builds plain dicts; where a value comes from the chart's values it puts `Value(expr)` (a scalar,
`{{ expr }}`), `Block(expr)` (a subtree, `{{- toYaml expr | nindent N }}`), `Raw(expr)` (YAML text an
expression yields), or, as a key, `Fragment(template)` to splice a named template's lines in place (an
optional field). `template_text` dumps the document and puts the expressions where their tokens are,
indented to fit: every template is YAML written by one dumper with a few Helm expressions in it.
"""

from dataclasses import dataclass
from itertools import count

from finopti.deploy.apisix import dump_yaml

HEADER = "# Rendered from mesh.yaml by `finopti render kubernetes`; do not edit.\n"


@dataclass(frozen=True)
class Value:
    """A scalar from the values: `{{ expr }}`; `quote`: as a YAML string."""

    expr: str
    quote: bool = False


@dataclass(frozen=True)
class Block:
    """A mapping or list from the values, in place of this value."""

    expr: str


@dataclass(frozen=True)
class Raw:
    """YAML text an expression yields (e.g. `(.Files.Glob "files/x/*").AsConfig`), as this value."""

    expr: str


@dataclass(frozen=True)
class Fragment:
    """As a mapping key (its value is ignored): the lines of the named template `name` (may be none)."""

    name: str
    arg: str = "."


def _tokens(doc, found: dict[str, object], ids) -> object:
    if isinstance(doc, dict):
        out = {}
        for key, value in doc.items():
            if isinstance(key, Fragment):
                token = f"finopti_fragment_{next(ids)}"
                found[token] = key
                out[token] = None
            else:
                out[key] = _tokens(value, found, ids)
        return out
    if isinstance(doc, list):
        return [_tokens(v, found, ids) for v in doc]
    if isinstance(doc, (Value, Block, Raw)):
        token = f"finopti_value_{next(ids)}"
        found[token] = doc
        return token
    return doc


def template_text(doc: dict, condition: str | None = None) -> str:
    """One manifest as a Helm template; `condition`: rendered only when this expression is true."""
    found: dict[str, object] = {}
    text = dump_yaml(_tokens(doc, found, count()))
    lines = []
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        for token, part in found.items():
            if token not in line:
                continue
            if isinstance(part, Fragment):
                line = " " * indent + f'{{{{- include "{part.name}" {part.arg} | nindent {indent} }}}}'
            elif isinstance(part, Block):
                line = line.replace(f" {token}", f" {{{{- toYaml ({part.expr}) | nindent {indent + 2} }}}}")
            elif isinstance(part, Raw):
                line = line.replace(f" {token}", f" {{{{- {part.expr} | nindent {indent + 2} }}}}")
            else:
                expr = f"{part.expr} | quote" if part.quote else part.expr
                line = line.replace(token, f"{{{{ {expr} }}}}")
        lines.append(line)
    body = "\n".join(lines) + "\n"
    if condition:
        body = f"{{{{- if {condition} }}}}\n{body}{{{{- end }}}}\n"
    return HEADER + body


def documents_text(docs: list[tuple[dict, str | None]]) -> str:
    """Several manifests in one template file, each with its own condition."""
    parts = [template_text(doc, condition).removeprefix(HEADER) for doc, condition in docs]
    return HEADER + "---\n".join(parts)


def values_path(*keys: str) -> str:
    """`.Values.a.b` for plain keys; `index` for keys that are not Go identifiers (service names with dashes)."""
    plain = all(k.replace("_", "a").isalnum() and not k[0].isdigit() for k in keys)
    if plain:
        return ".Values." + ".".join(keys)
    return "(index .Values " + " ".join(f'"{k}"' for k in keys) + ")"

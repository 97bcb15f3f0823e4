"""What the FinOps analyses share: turning user arguments into filters and dimensions, and money rounding."""

from __future__ import annotations

import difflib

from ..errors import InvalidArgument
from ..validation import parse_labels
from .export import DIMENSIONS, LABEL_PREFIX, BillingExport, CostFilter

LABEL_SHORTCUTS = ("team", "env", "app")  # group_by="team" means group_by="label:team"
GROUP_BY_CHOICES = (*DIMENSIONS, *LABEL_SHORTCUTS, "label:<key>")


def money(value: float) -> float:
    return round(value + 0.0, 2)  # + 0.0 turns -0.0 into 0.0


def format_money(value: float | None, currency: str = "USD") -> str:
    """$1,234.56 for USD, "1,234.56 EUR" otherwise; a minus sign before the symbol."""
    if value is None:
        return "n/a"
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}" if currency == "USD" else f"{sign}{abs(value):,.2f} {currency}"


def net(cell: dict) -> float:
    return cell["cost"] + cell["credits"]


def dimension(group_by: object, label_key: object = None) -> str:
    """A group_by argument as an export dimension: service, ..., or label:<key>."""
    if not isinstance(group_by, str) or not group_by.strip():
        raise InvalidArgument(f"group_by must be one of {', '.join(GROUP_BY_CHOICES)}; got {group_by!r}.")
    value = group_by.strip().lower()
    if value == "label":
        if not isinstance(label_key, str) or not label_key.strip():
            raise InvalidArgument("group_by 'label' needs label_key (e.g. team, env, app).")
        return LABEL_PREFIX + label_key.strip()
    if value in LABEL_SHORTCUTS:
        return LABEL_PREFIX + value
    if value.startswith(LABEL_PREFIX) and value[len(LABEL_PREFIX):].strip():
        return LABEL_PREFIX + value[len(LABEL_PREFIX):].strip()
    if value in DIMENSIONS:
        return value
    raise InvalidArgument(f"group_by must be one of {', '.join(GROUP_BY_CHOICES)}; got {group_by!r}.")


def dimension_text(dim: str) -> str:
    return f"label {dim[len(LABEL_PREFIX):]}" if dim.startswith(LABEL_PREFIX) else dim


def key_text(dim: str, value: object) -> str:
    """How a group's key is shown; rows without the dimension get a named bucket, not None."""
    if value is not None:
        return str(value)
    if dim.startswith(LABEL_PREFIX):
        return f"(no {dim[len(LABEL_PREFIX):]} label)"
    return f"(no {dim})"


def _match(kind: str, value: object, known: list[str]) -> str:
    """A known value, matched without regard to case or a unique prefix ("bigquery", "compute")."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{kind} must be a non-empty string, got {value!r}.")
    wanted = value.strip().lower()
    exact = [k for k in known if k.lower() == wanted]
    if exact:
        return exact[0]
    prefixed = [k for k in known if k.lower().startswith(wanted)]
    if len(prefixed) == 1:
        return prefixed[0]
    close = difflib.get_close_matches(value, known, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise InvalidArgument(f"unknown {kind} {value!r}.{hint} Known: {', '.join(known)}.")


def cost_filter(export: BillingExport, project: object = None, service: object = None, team: object = None,
                env: object = None, label: object = None) -> CostFilter:
    """A filter from tool arguments; project and service must exist in the export (case-insensitive)."""
    labels: list[tuple[str, str]] = []
    for key, value in (("team", team), ("env", env)):
        if value is not None:
            if not isinstance(value, str) or not value.strip():
                raise InvalidArgument(f"{key} must be a non-empty string, got {value!r}.")
            labels.append((key, value.strip().lower()))
    if label is not None:
        labels.extend(parse_labels(label).items())
    return CostFilter(
        projects=(_match("project", project, export.known("project")),) if project is not None else (),
        services=(_match("service", service, export.known("service")),) if service is not None else (),
        labels=tuple(labels),
    )


def check_top(top: object) -> int:
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 500:
        raise InvalidArgument(f"top must be a whole number between 1 and 500, got {top!r}.")
    return top

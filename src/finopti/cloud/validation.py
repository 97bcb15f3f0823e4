"""Argument checks shared by the sandbox methods; each failure names the argument and what is allowed."""

from __future__ import annotations

import math

from .catalog import HISTORY_DAYS, STATES, ZONES
from .errors import InvalidArgument

# Agents often say "stopped"; GCP calls it TERMINATED.
STATE_ALIASES = {"STOPPED": "TERMINATED"}


def check_int(name: str, value: object, lo: int, hi: int) -> int:
    # bool is an int subclass, but `days=True` is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be a whole number between {lo} and {hi}, got {value!r}.")
    if not lo <= value <= hi:
        raise InvalidArgument(f"{name} must be between {lo} and {hi}, got {value}.")
    return value


def check_days(days: object) -> int:
    return check_int("days", days, 1, HISTORY_DAYS)


def check_percent(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidArgument(f"{name} must be a number between 0 and 100, got {value!r}.")
    if not 0 <= value <= 100:
        raise InvalidArgument(f"{name} must be between 0 and 100 (percent), got {value}.")
    return float(value)


def check_choice(name: str, value: object, choices: list[str] | tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidArgument(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    return str(value)


def check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{what} must be a non-empty string, got {value!r}.")
    return value.strip()


def check_zone(zone: object) -> str:
    if not isinstance(zone, str) or zone not in ZONES:
        raise InvalidArgument(f"unknown zone {zone!r}; valid zones: {', '.join(ZONES)}.")
    return str(zone)


def check_state(state: object) -> str:
    upper = state.upper() if isinstance(state, str) else ""
    upper = STATE_ALIASES.get(upper, upper)
    if upper not in STATES:
        raise InvalidArgument(
            f"unknown state {state!r}; valid states: {', '.join(STATES)} (STOPPED = TERMINATED)."
        )
    return str(upper)


def parse_label(label: object) -> tuple[str, str]:
    if not isinstance(label, str) or label.count("=") != 1 or label.startswith("=") or label.endswith("="):
        raise InvalidArgument(f"label filter must look like 'key=value' (e.g. 'env=prod'), got {label!r}.")
    key, value = label.split("=")
    return key.strip(), value.strip()


def parse_labels(labels: object) -> dict[str, str]:
    """'env=prod' or several pairs joined by commas ('env=prod,team=payments'): every pair must hold."""
    if not isinstance(labels, str) or not labels.strip():
        raise InvalidArgument(f"label filter must look like 'key=value' (e.g. 'env=prod'), got {labels!r}.")
    pairs = dict(parse_label(part) for part in labels.split(","))
    return pairs


def labels_match(labels: dict, wanted: dict[str, str] | None) -> bool:
    return not wanted or all(labels.get(k) == v for k, v in wanted.items())

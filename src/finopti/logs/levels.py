"""A level written as a word, as a stream's `level` label: one rule for the collector (a JSON line's `level`) and
the log store (the `level` label another agent pushes, Alloy or Promtail passing Go's slog `ERROR` as it is; and a
query's `level=`), so that `level=error` finds `ERROR`, `Error` and `err` whoever shipped the line."""

ALIASES = {"warn": "warning", "err": "error", "crit": "critical", "fatal": "critical", "dbg": "debug"}
KNOWN = {name: name for name in ("debug", "info", "warning", "error", "critical")}


def level_word(text: str) -> str | None:
    """`WARN` -> `warning`, ` Error ` -> `error`; another word of at most 12 letters as it is, lower-cased
    (`notice`); None for anything else (`4f2a…`, `50`): a label per odd value would be a stream each."""
    word = text.strip().lower()
    known = KNOWN.get(word) or ALIASES.get(word)
    if known is not None:
        return known
    return word if word.isascii() and word.isalpha() and len(word) <= 12 else None

"""A prompt as tokens: compatibility forms folded (NFKC), lower case, punctuation off the edges, contractions
opened, quoted text set aside.

Tokens keep what names are made of (`ledger-db-prod-01`, `env=prod`, `1.5%`); `parts()` splits a token the
way names split (on `-` and `_`), which is how entity matching compares them."""

import re
import unicodedata
from dataclasses import dataclass

_QUOTED = re.compile(r"[\"“”„«»]([^\"“”„«»]{1,200})[\"“”„«»]|(?<![\w])'([^']{1,200})'(?![\w])")
_DASHES = str.maketrans({"—": " ", "–": " ", "‐": "-", "‑": "-", "’": "'", "‘": "'"})
_EDGE = ",.;:!?()[]{}<>\"'`*"
_NOT = {"n't": "not"}
# "what's" and friends: the 's is "is"; on a name ("notebook-dev-03's") it is a possessive and goes.
_IS_WORDS = {"what", "whats", "that", "it", "there", "here", "who", "where", "how", "which"}
_CONTRACTED = {"whats": ["what", "is"], "thats": ["that", "is"], "im": ["i", "am"], "id": ["i", "would"],
               "ive": ["i", "have"], "dont": ["do", "not"], "doesnt": ["does", "not"], "isnt": ["is", "not"],
               "arent": ["are", "not"], "wasnt": ["was", "not"], "cant": ["can", "not"], "wont": ["will", "not"]}

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "forty-eight": 48, "fifty": 50, "sixty": 60, "ninety": 90, "hundred": 100,
}


@dataclass(frozen=True)
class Prompt:
    text: str  # normalized, without the quoted parts
    tokens: tuple[str, ...]
    quoted: tuple[str, ...]


def _split_token(raw: str) -> list[str]:
    token = raw.strip(_EDGE)
    if not token:
        return []
    if token.endswith("n't"):
        return [token[:-3] or "not", "not"] if token[:-3] not in ("ca", "wo") else [
            {"ca": "can", "wo": "will"}[token[:-3]], "not"]
    if token.endswith("'s"):
        stem = token[:-2]
        return [stem, "is"] if stem in _IS_WORDS else [stem]
    if token.endswith("'d") or token.endswith("'m") or token.endswith("'re") or token.endswith("'ve"):
        stem, _, tail = token.rpartition("'")
        return [stem, {"d": "would", "m": "am", "re": "are", "ve": "have"}[tail]]
    if token in _CONTRACTED:
        return list(_CONTRACTED[token])
    if token.startswith("per-"):  # "per-service breakdown"
        return ["per", token[4:]]
    return [token.strip("'")]


def normalize(prompt: str) -> Prompt:
    # NFKC: full-width letters and digits ("ＬＥＤＧＥＲ-０１"), ligatures and the like as their plain forms
    text = unicodedata.normalize("NFKC", prompt).translate(_DASHES)
    quoted = tuple(q.strip() for m in _QUOTED.finditer(text) for q in m.groups() if q and q.strip())
    text = _QUOTED.sub(" ", text).lower()
    tokens: list[str] = []
    for raw in text.split():
        tokens.extend(t for t in _split_token(raw) if t)
    return Prompt(" ".join(tokens), tuple(tokens), quoted)


def parts(token: str) -> list[str]:
    """How a name splits: `ledger-db-prod-01` -> [ledger, db, prod, 01]."""
    return [p for p in re.split(r"[-_]", token) if p]


def number(token: str) -> float | None:
    """'3', '1.5', 'three' -> the number; anything else None."""
    if token in NUMBER_WORDS:
        return float(NUMBER_WORDS[token])
    try:
        value = float(token)
    except ValueError:
        return None
    return value if value == value and abs(value) < 1e9 else None

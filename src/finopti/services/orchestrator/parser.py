"""The deterministic parser: a prompt -> an intent, a clarifying question, or nothing.

1. Entities first: names of the inventory, in any spelling close enough (`entities.py`).
2. Quantities: time windows, percentages (`quantities.py`).
3. The words that are left, matched longest first against the catalogue's vocabulary (`catalog.py`).
4. Every action is scored on the same evidence: its words, the slots the evidence fills, what it would leave
   unused (a named instance that an action cannot take is strong evidence against it), the verbs of another
   action (a "delete" is never answered by a listing).
5. The best action wins, unless another is as good (ask which), or an argument it needs is missing or could
   be several things (ask, with the candidates).
"""

from dataclasses import dataclass, field, replace

from rapidfuzz import process
from rapidfuzz.distance import OSA

from finopti.services.orchestrator.catalog import (
    ACTIONS,
    NEGATED_CHANGE,
    OUT_OF_SCOPE,
    VOCABULARY,
    ActionSpec,
    Slot,
    action,
)
from finopti.services.orchestrator.entities import STOPWORDS, Mention, Reading, find_mentions
from finopti.services.orchestrator.inventory import Inventory
from finopti.services.orchestrator.quantities import Quantity, Window, find_quantities
from finopti.services.orchestrator.text import normalize

# How much filling a slot says "this action", per kind (a slot's own weight overrides it).
FILL_WEIGHT = {"instance": 1.5, "disk": 1.5, "bucket": 1.5, "zone": 1.0, "machine_type": 1.5, "label": 1.0,
               "service": 2.0, "state": 1.0, "metric": 0.0, "severity": 1.5, "group_by": 1.5, "unattached": 1.5,
               "percent": 1.5, "days": 0.5, "window": 0.5, "text": 1.0, "period": 1.0, "cloud_service": 1.5,
               "cost_group": 1.5, "amount": 2.0, "label_key": 1.5, "project": 1.5}
# What leaving a named thing unused costs an action: naming an instance and getting a listing is wrong.
UNUSED_MENTION = {"instance": 2.0, "disk": 2.0, "bucket": 2.0, "service": 2.0, "name": 1.0, "machine_type": 1.0,
                  "project": 1.0,
                  "zone": 0.5, "region": 0.5, "label": 0.5}
UNUSED_WORD = 0.3
UNUSED_QUANTITY = 0.3
MISSING = 1.0
FOREIGN_VERB = 3.0
MIN_SCORE = 1.5
CLOSE = 0.75
WORDS_NEEDED = 1.0  # an action none of whose words were said is not a reading of the prompt
COMPETE = 2.0  # how much of its own vocabulary a runner-up needs for the prompt to be a real choice
QUALITY_RANK = {"exact": 4, "corrected": 3, "partial": 1, "near": 1, "unknown": 0.5}
# Which readings can fill a slot of each kind, best first.
READS = {"instance": ("instance", "name"), "disk": ("disk", "name"), "bucket": ("bucket", "name"),
         "zone": ("zone", "region"), "machine_type": ("machine_type",), "label": ("label",),
         "service": ("service",), "project": ("project",)}
MAX_OPTIONS = 6
# The state an instance must be in for an action to change it.
STATE_BEFORE = {"stop_instance": "RUNNING", "start_instance": "TERMINATED"}


@dataclass(frozen=True)
class Intent:
    agent: str
    action: str
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Option:
    label: str
    intent: Intent
    prompt: str


@dataclass(frozen=True)
class Understanding:
    intent: Intent | None = None
    question: str | None = None
    about: str | None = None  # the action a question is about
    missing: str | None = None  # the argument it asks for
    options: tuple[Option, ...] = ()
    notes: tuple[str, ...] = ()
    ranking: tuple[tuple[str, float], ...] = ()  # (action, score), best first: for explaining and tuning
    mentioned: tuple[str, ...] = ()  # the names recognised in the prompt

    @property
    def kind(self) -> str:
        return "intent" if self.intent else "clarify" if self.question else "unknown"


@dataclass(frozen=True)
class Phrase:
    start: int
    end: int
    text: str
    tokens: frozenset[int]


# ------------------------------------------------------------------ the lexicon: every phrase of the catalogue

def _lexicon() -> dict[str, set[str]]:
    """phrase -> what it can be ('action:<name>' or 'slot:<kind>')."""
    out: dict[str, set[str]] = {}
    for spec in (*ACTIONS, OUT_OF_SCOPE):
        for phrase in (*spec.words, *spec.verbs):
            out.setdefault(phrase, set()).add(f"action:{spec.name}")
    for kind, words in VOCABULARY.items():
        for phrase in words:
            out.setdefault(phrase, set()).add(f"slot:{kind}")
    return out


LEXICON = _lexicon()
_PHRASES = sorted(((p.split(), p) for p in LEXICON), key=lambda item: -len(item[0]))
STRONG_VERBS = {phrase: spec.name for spec in (*ACTIONS, OUT_OF_SCOPE) for phrase in spec.verbs}
CHANGE_VERBS = frozenset(phrase for spec in ACTIONS if spec.mutates for phrase in spec.verbs)
NEGATORS = frozenset({"not", "never"})
# What may stand between "not" and the verb it negates: "do not ever stop", "do NOT restart or stop X".
NEGATION_CARRIES = frozenset({"ever", "to", "you", "please", "even", "or", "and", "nor", "either", "want", "need",
                              "wish"}) | frozenset(
    word for phrase in STRONG_VERBS for word in phrase.split() if word != "*")
NEGATION_REACH = 4
# "all instances except X", "everything but X": what follows names what is left out, never what is meant.
EXCLUDING = {("except",): 1, ("excluding",): 1, ("besides",): 1, ("other", "than"): 2, ("apart", "from"): 2,
             ("aside", "from"): 2, ("but", "not"): 2, ("without",): 1}
# "not in prod", "not ledger-db-prod-01": what comes right after "not" (or "not in/from/for/the") is left out.
NOT_BEFORE = frozenset({"in", "from", "for", "the", "on", "of"})
# Vocabulary values left out the same way ("costs without bigquery", "all instances except stopped ones").
EXCLUDABLE_KINDS = frozenset({"cloud_service", "state"})
EVERYTHING = frozenset({"all", "everything", "every", "everyone", "anything", "each"})
EXCLUDED_REACH = 5  # tokens after the word within which a named thing is left out


_SINGLE_WORDS = sorted(p for p in LEXICON if " " not in p and len(p) >= 4 and p.isalpha())


def _typo_of(token: str) -> str | None:
    """The one-word phrase a token misspells: two letters swapped ("stpo"), or, in longer words, one letter
    wrong, missing or extra ("describ", "unatached"). An inflection ("deleted") is not a typo."""
    if len(token) < 4 or not token.isalpha():
        return None
    for phrase, _, _ in process.extract(token, _SINGLE_WORDS, scorer=OSA.distance, score_cutoff=1, limit=None):
        if token.startswith(phrase) or phrase == token:
            continue
        swapped = len(token) == len(phrase) and sorted(token) == sorted(phrase)
        if swapped or min(len(token), len(phrase)) >= 6:
            return phrase
    return None


_BY_FIRST_WORD: dict[str, list[tuple[int, list[str], str]]] = {}
for _rank, (_words, _phrase) in enumerate(_PHRASES):
    _BY_FIRST_WORD.setdefault(_words[0], []).append((_rank, _words, _phrase))


def _match_phrases(tokens: tuple[str, ...], taken: set[int], excluded: list[range] = ()) -> list[Phrase]:
    """Every catalogue phrase in the tokens, longest first; a token belongs to one phrase at most."""
    found: list[Phrase] = []
    used = set(taken)
    candidates = []  # (rank, start, words, phrase): rank orders longer phrases first, as _PHRASES does
    for i, token in enumerate(tokens):
        for rank, words, phrase in _BY_FIRST_WORD.get(token, ()):
            if "*" in words:
                tail = next((j for j in range(i + 2, min(len(tokens), i + 8)) if tokens[j] == words[-1]), None)
                if tail is not None:
                    candidates.append((rank, i, (i, tail), phrase))
            elif tuple(tokens[i:i + len(words)]) == tuple(words):
                candidates.append((rank, i, tuple(range(i, i + len(words))), phrase))
    for _, start, span, phrase in sorted(candidates):
        if not used.intersection(span):
            found.append(Phrase(start, span[-1] + 1, phrase, frozenset(span)))
            used.update(span)
    for i, token in enumerate(tokens):
        if i not in used and token not in STOPWORDS:
            typo = _typo_of(token)
            if typo is not None:
                found.append(Phrase(i, i + 1, typo, frozenset({i})))
    found = [p for p in found if not (any(p.start in r for r in excluded) and _excludable(p.text))]
    return sorted((_negated(p, tokens, taken) for p in found), key=lambda p: p.start)


def _excludable(phrase: str) -> bool:
    return any(m.startswith("slot:") and m[5:] in EXCLUDABLE_KINDS for m in LEXICON[phrase])


def _negated(phrase: Phrase, tokens: tuple[str, ...], taken: set[int]) -> Phrase:
    """"don't stop X", "never delete X", "please do not ever shut it down", "why didn't X stop": a change said
    with "not" is no request for it (the names in between do not count)."""
    if phrase.text not in CHANGE_VERBS:
        return phrase
    before = [t for k, t in enumerate(tokens[:phrase.start]) if k not in taken][-NEGATION_REACH:]
    for token in reversed(before):
        if token in NEGATORS:
            return replace(phrase, text=NEGATED_CHANGE)
        if token not in NEGATION_CARRIES:
            break
    return phrase


def _excluded_ranges(tokens: tuple[str, ...]) -> list[range]:
    """Where a prompt names what it leaves out ("stop all instances except ledger-db-prod-01", "not in prod")."""
    out = []
    for i in range(len(tokens)):
        for words, size in EXCLUDING.items():
            if tokens[i:i + size] == words:
                out.append(range(i + size, i + size + EXCLUDED_REACH))
        if tokens[i] == "but" and i > 0 and tokens[i - 1] in EVERYTHING:
            out.append(range(i + 1, i + 1 + EXCLUDED_REACH))
        if tokens[i] == "not":
            skip = 1 if i + 1 < len(tokens) and tokens[i + 1] in NOT_BEFORE else 0
            out.append(range(i + 1 + skip, i + 2 + skip))
    return out


# ------------------------------------------------------------------ evidence and slot filling

@dataclass
class Evidence:
    tokens: tuple[str, ...]
    mentions: list[Mention]
    quantities: list[Quantity]
    phrases: list[Phrase]
    quoted: tuple[str, ...]
    inventory: Inventory
    excluded: tuple[Mention, ...] = ()  # named only to be left out


@dataclass
class Fill:
    """One slot's value, and why it cannot be used yet when it is a question instead."""

    value: object = None
    sources: tuple = ()  # mentions / phrases / quantities it came from
    note: str | None = None
    choices: tuple[str, ...] = ()  # several values fit: ask which
    problem: str | None = None  # "ambiguous", "near", "region"
    weight: float | None = None  # how much it says "this action", when less than the slot's own


@dataclass
class Candidate:
    spec: ActionSpec
    score: float
    fills: dict[str, Fill]
    missing: list[Slot]
    said: float  # what its own words and verbs say for it
    eligible: bool

    @property
    def questions(self) -> list[tuple[Slot, Fill]]:
        return [(self.spec.slot(arg), f) for arg, f in self.fills.items() if f.choices]


def _mention_fill(slot: Slot, mention: Mention, reading: Reading, evidence: Evidence) -> Fill:
    if reading.kind == "region":
        zones = evidence.inventory.regions().get(reading.value or "", [])
        if len(zones) == 1:
            return Fill(zones[0], (mention,), note=f"{reading.value} has one zone, {zones[0]}")
        return Fill(None, (mention,), choices=tuple(sorted(zones)), problem="region")
    if reading.value is None or reading.quality == "near":
        problem = "near" if reading.quality == "near" else "ambiguous"
        return Fill(None, (mention,), choices=reading.candidates, problem=problem)
    note = None
    if mention.said.replace(" ", "-") != reading.value:
        note = f"read “{mention.said}” as {reading.value}"
    return Fill(reading.value, (mention,), note=note)


def _best_reading(mention: Mention, kinds: tuple[str, ...]) -> Reading | None:
    readings = [r for r in mention.readings if r.kind in kinds]
    if not readings:
        return None
    return max(readings, key=lambda r: (QUALITY_RANK[r.quality], -kinds.index(r.kind)))


def _assign_mentions(spec: ActionSpec, evidence: Evidence) -> dict[str, Fill]:
    """Each mention fills at most one slot: the one its best reading fits best."""
    fills: dict[str, Fill] = {}
    entity_slots = [s for s in spec.slots if s.kind in READS]
    label_values: list[tuple[Mention, Reading]] = []
    for mention in evidence.mentions:
        best: tuple[float, Slot, Reading] | None = None
        for slot in entity_slots:
            reading = _best_reading(mention, READS[slot.kind])
            if reading is None:
                continue
            rank = QUALITY_RANK[reading.quality] + (0.5 if reading.kind == slot.kind else 0)
            if best is None or rank > best[0]:
                best = (rank, slot, reading)
        if best is None:
            continue
        _, slot, reading = best
        if slot.kind == "label":
            label_values.append((mention, reading))
            continue
        fill = _mention_fill(slot, mention, reading, evidence)
        if mention.start > 0 and evidence.tokens[mention.start - 1] == "from" and slot.kind == "machine_type":
            continue  # "from e2-standard-4 to e2-standard-2": the first is what it is now
        if slot.arg in fills and fills[slot.arg].value is not None and fills[slot.arg].value == fill.value:
            continue  # the same thing said twice
        if slot.arg in fills:  # two things for one slot: ask which
            previous = fills[slot.arg]
            values = tuple(v for f in (previous, fill) for v in ((f.value,) if f.value else f.choices))
            fills[slot.arg] = Fill(None, previous.sources + fill.sources, choices=values, problem="several")
        else:
            fills[slot.arg] = fill
    if label_values:
        fills[next(s.arg for s in spec.slots if s.kind == "label")] = _merge_labels(label_values)
    return fills


def _merge_labels(found: list[tuple[Mention, Reading]]) -> Fill:
    pairs: dict[str, str] = {}
    clash: list[str] = []
    for _, reading in found:
        for pair in (reading.value or "").split(","):
            key, _, value = pair.partition("=")
            if key in pairs and pairs[key] != value:
                clash += [f"{key}={pairs[key]}", pair]
            pairs[key] = value
    sources = tuple(m for m, _ in found)
    if clash:
        return Fill(None, sources, choices=tuple(dict.fromkeys(clash)), problem="several")
    return Fill(",".join(f"{k}={v}" for k, v in sorted(pairs.items())), sources)


def _vocabulary_fill(slot: Slot, evidence: Evidence) -> Fill | None:
    words = VOCABULARY.get(slot.kind)
    if words is None:
        return None
    hits = [p for p in evidence.phrases if p.text in words]
    if not hits:
        return None
    values = list(dict.fromkeys(words[p.text] for p in hits))
    if slot.kind == "severity":  # "warnings and errors": the least severe level asked for
        order = ["WARNING", "ERROR", "CRITICAL"]
        values = [min(values, key=order.index)]
    if slot.kind == "period" and len(values) > 1:  # "september and october": one period at a time; which?
        return Fill(None, tuple(hits), choices=tuple(values), problem="several")
    return Fill(values[0], tuple(hits))


def _quantity_fill(slot: Slot, evidence: Evidence) -> Fill | None:
    if slot.kind in ("days", "window"):
        windows = [q for q in evidence.quantities if q.kind == "window"]
        if not windows:
            return None
        window: Window = windows[0].value  # type: ignore[assignment]
        return Fill(window.days if slot.kind == "days" else window.said, (windows[0],))
    if slot.kind == "percent":
        numbers = [q for q in evidence.quantities if q.kind in ("percent", "below")]
        if not numbers:
            return None
        return Fill(float(numbers[0].value), (numbers[0],))  # type: ignore[arg-type]
    if slot.kind == "text" and evidence.quoted:
        return Fill(evidence.quoted[0], ())
    if slot.kind == "period":
        for q in evidence.quantities:
            if q.kind == "date":
                return Fill(q.value, (q,))
            period = _period_of(q, evidence.tokens) if q.kind == "window" else None
            if period:
                return Fill(period, (q,))
        return None
    if slot.kind == "amount":
        money = [q for q in evidence.quantities if q.kind == "money"]
        return Fill(money[0].value, (money[0],)) if money else None
    return None


# Billing is daily: a window names a period when it is said as one ("last week", "the past 30 days",
# "yesterday"), not as a rate ("a month", "per week").
_CALENDAR_WEEK_OR_MONTH = {"week": "last_week", "month": "last_month"}


def _period_of(quantity: Quantity, tokens: tuple[str, ...]) -> str | None:
    window: Window = quantity.value  # type: ignore[assignment]
    said = tokens[quantity.start:quantity.end]
    if window.said in ("yesterday", "this_week"):
        return window.said
    if not window.said.endswith("d") or not set(said) & {"last", "past", "previous", "over", "in", "during",
                                                          "for", "since", "within"}:
        return None
    if len(said) >= 2 and said[-2] in ("last", "previous") and said[-1] in _CALENDAR_WEEK_OR_MONTH:
        return _CALENDAR_WEEK_OR_MONTH[said[-1]]  # "last week": the calendar week before this one
    return f"last_{window.days}_days"


def _narrow(fills: dict[str, Fill], spec: ActionSpec, evidence: Evidence) -> None:
    """"the ledger database in prod": several instances fit the name, the other words say which one."""
    used = {id(src) for f in fills.values() for src in f.sources}
    for arg, fill in list(fills.items()):
        slot = spec.slot(arg)
        if slot.kind != "instance" or not fill.choices or fill.problem == "several":
            continue
        others = [m for m in evidence.mentions if id(m) not in used and not m.reading("instance")]
        if not others:
            continue
        kept = []
        for name in fill.choices:
            inst = evidence.inventory.instance(name)
            if inst and all(_fits(inst, m) for m in others):
                kept.append(name)
        if len(kept) == 1:
            fills[arg] = Fill(kept[0], fill.sources + tuple(others),
                              note=f"read “{' '.join(s.said for s in (*fill.sources, *others))}” as {kept[0]}")
        elif 1 < len(kept) < len(fill.choices):
            fills[arg] = Fill(None, fill.sources + tuple(others), choices=tuple(kept), problem=fill.problem)


def _side_by_side(fills: dict[str, Fill], spec: ActionSpec) -> None:
    """"compare prod and staging costs": two values of one label key, for an action that can break costs down,
    are a breakdown by that key (not a question which one)."""
    label = next((s for s in spec.slots if s.kind == "label"), None)
    group = next((s for s in spec.slots if s.kind in ("group_by", "cost_group")), None)
    fill = fills.get(label.arg) if label else None
    if fill is None or group is None or group.arg in fills or fill.problem != "several":
        return
    keys = {choice.partition("=")[0] for choice in fill.choices}
    if len(keys) == 1:
        del fills[label.arg]
        key = keys.pop()
        fills[group.arg] = Fill(("label", key), fill.sources, note=f"read {' and '.join(fill.choices)} as by {key}")


def _fits(inst, mention: Mention) -> bool:
    """Whether an instance matches what a label or zone mention says (other mentions say nothing of it)."""
    for reading in mention.readings:
        if reading.kind == "label" and reading.value:
            return all(inst.labels.get(k) == v for k, _, v in (p.partition("=") for p in reading.value.split(",")))
        if reading.kind == "zone" and reading.value:
            return inst.zone == reading.value
    return True


# Instances an action that takes one could mean, from what describes them: the labels said ("the notebook",
# "all prod instances", "the ledger staging db"), a zone, and words that are parts of their names. Always a
# question (never a guess), worth less than a name.
DESCRIBED_WEIGHT = 0.5


def _described_instances(spec: ActionSpec, fills: dict[str, Fill], evidence: Evidence) -> Fill | None:
    used = {id(src) for f in fills.values() for src in f.sources}
    said = [m for m in evidence.mentions if id(m) not in used
            and any(r.kind in ("label", "zone") and r.value for r in m.readings) and not m.reading("instance")]
    if not said:
        return None
    fitting = [i for i in evidence.inventory.instances if all(_fits(i, m) for m in said)]
    words = {w for k, t in enumerate(evidence.tokens) if t not in STOPWORDS
             and not any(m.start <= k < m.end for m in evidence.mentions) for w in (t, t.removesuffix("s"))}
    named = [i for i in fitting if words & set(i.name.split("-"))]
    fitting = named or fitting
    wanted = STATE_BEFORE.get(spec.name)
    fitting = [i for i in fitting if i.state == wanted] or fitting if wanted else fitting
    excluded = _excluded_names(evidence)
    choices = tuple(i.name for i in fitting if i.name not in excluded)
    if not choices:
        return None
    return Fill(None, tuple(said), choices=choices, problem="described", weight=DESCRIBED_WEIGHT)


def _excluded_names(evidence: Evidence) -> set[str]:
    return {r.value for m in evidence.excluded for r in m.readings if r.value}


def _score(spec: ActionSpec, evidence: Evidence) -> Candidate:
    score = 0.0
    said = 0.0
    verb = False
    fills = _assign_mentions(spec, evidence)
    _narrow(fills, spec, evidence)
    _side_by_side(fills, spec)
    for slot in spec.slots:
        if slot.arg not in fills:
            fill = _vocabulary_fill(slot, evidence) or _quantity_fill(slot, evidence)
            if fill is None and slot.kind == "instance" and slot.required:
                fill = _described_instances(spec, fills, evidence)
            if fill is not None and fill.choices and slot.kind == "period" and spec.name == "compare_costs":
                fill = replace(fill, value=fill.choices[0], choices=(), problem=None)  # "oct vs sept": the first
            if fill is not None:
                fills[slot.arg] = fill
    slot_kinds = {s.kind for s in spec.slots}
    for phrase in evidence.phrases:
        weight = spec.words.get(phrase.text, spec.verbs.get(phrase.text))
        if weight is not None:
            score += weight
            said += max(weight, 0)
            verb = verb or phrase.text in spec.verbs
        elif phrase.text in STRONG_VERBS:
            score -= FOREIGN_VERB
        elif not any(m.startswith("slot:") and m[5:] in slot_kinds for m in LEXICON[phrase.text]) and \
                not any(m.startswith("action:") for m in LEXICON[phrase.text]):
            score -= UNUSED_WORD
    for arg, fill in fills.items():
        slot = spec.slot(arg)
        weight = slot.weight if slot.weight is not None else FILL_WEIGHT[slot.kind]
        weight = weight if fill.weight is None else min(weight, fill.weight)
        score += weight
        if slot.kind in VOCABULARY and any(isinstance(src, Phrase) for src in fill.sources):
            said += weight  # "errors", "stopped", "per team": the action's own vocabulary
    missing = [s for s in spec.slots if s.required and s.arg not in fills]
    score -= MISSING * len(missing)
    used = {id(src) for f in fills.values() for src in f.sources}
    for mention in evidence.mentions:
        if id(mention) not in used:
            score -= max(UNUSED_MENTION.get(r.kind, 0.5) for r in mention.readings)
    for quantity in evidence.quantities:
        if quantity.kind == "above" and "percent" in slot_kinds:
            score -= FOREIGN_VERB  # "over 80% cpu" asks the opposite of "under a threshold"
        elif id(quantity) not in used:
            score -= UNUSED_QUANTITY
    implied = bool(spec.implied_by) and all(arg in fills for arg in spec.implied_by)
    eligible = verb or implied or (said >= WORDS_NEEDED and not (spec.mutates and not spec.implied_by))
    return Candidate(spec, round(score, 3), fills, missing, said, eligible)


# ------------------------------------------------------------------ the answer

def _arguments(candidate: Candidate) -> dict:
    args: dict = {}
    for slot in candidate.spec.slots:
        fill = candidate.fills.get(slot.arg)
        if fill is None:
            if slot.default is not None:
                args[slot.arg] = slot.default
            continue
        if slot.kind in ("group_by", "cost_group"):
            group, key = fill.value  # type: ignore[misc]
            args["group_by"] = group
            if key:
                args["label_key"] = key
        else:
            args[slot.arg] = fill.value
    return args


def _intent(candidate: Candidate, **override) -> Intent:
    return Intent(candidate.spec.agent, candidate.spec.name, {**_arguments(candidate), **override})


def render_prompt(intent: Intent) -> str:
    """The canonical prompt of an intent, from its action's template (the parser reads it back the same):
    segments in [brackets] appear when their arguments are set."""
    spec = action(intent.action)
    words = _spoken(intent.arguments, spec)
    out, i, template = [], 0, spec.template
    while i < len(template):
        if template[i] == "[":
            end = template.index("]", i)
            segment = template[i + 1:end]
            if all(words.get(n) for n in _names(segment)):
                out.append(segment.format(**words))
            i = end + 1
        else:
            end = template.find("[", i)
            end = len(template) if end < 0 else end
            out.append(template[i:end].format(**{k: words.get(k, "") for k in _names(template[i:end])}))
            i = end
    return " ".join("".join(out).split())


def _names(text: str) -> list[str]:
    return [n.split("}")[0] for n in text.split("{")[1:]]


def _spoken(arguments: dict, spec: ActionSpec) -> dict[str, str]:
    """Arguments as words a prompt would use."""
    out = {}
    for arg, value in arguments.items():
        slot = spec.slot(arg)
        kind = slot.kind if slot else arg
        if kind == "state":
            out[arg] = {"RUNNING": "running", "TERMINATED": "stopped"}.get(str(value), str(value).lower())
        elif kind == "unattached":
            out[arg] = "unattached" if value else ""
        elif kind == "group_by":
            out[arg] = "per instance" if value == "instance" else f"by {arguments.get('label_key', 'team')}"
        elif kind == "cost_group":
            out[arg] = f"by {arguments['label_key']}" if value == "label" else f"by {value}"
        elif kind == "period":
            out[arg] = _spoken_period(str(value))
        elif kind == "amount":
            out[arg] = f"{value:.0f}" if float(value) == int(value) else f"{value:g}"
        elif kind == "severity":
            out[arg] = {"WARNING": "warnings", "ERROR": "errors", "CRITICAL": "critical errors"}.get(str(value), "")
        elif kind == "window":
            out[arg] = _spoken_window(str(value))
        elif isinstance(value, float):
            out[arg] = f"{value:g}"
        else:
            out[arg] = str(value)
    return out


def _spoken_period(period: str) -> str:
    if period[:4].isdigit():
        return f"on {period}"
    if period.startswith("last_") and period.endswith("_days"):
        return f"the last {period.split('_')[1]} days"
    return period.replace("_", " ")


def _spoken_window(said: str) -> str:
    named = {"today": "today", "yesterday": "yesterday", "this_morning": "this morning", "this_week": "this week"}
    if said in named:
        return named[said]
    amount = said[:-1]
    unit = {"m": "minute", "h": "hour", "d": "day"}[said[-1]]
    return f"in the last {unit}" if amount == "1" else f"in the last {amount} {unit}s"


def _option(label: str, intent: Intent) -> Option:
    return Option(label, intent, render_prompt(intent))


def _notes(candidate: Candidate) -> tuple[str, ...]:
    return tuple(f.note for f in candidate.fills.values() if f.note)


def _value_question(candidate: Candidate, slot: Slot, fill: Fill) -> Understanding:
    said = " and ".join(getattr(s, "said", "") for s in fill.sources if getattr(s, "said", ""))
    if fill.problem == "near":
        question = f"There is no {slot.kind.replace('_', ' ')} called {said}. Did you mean one of these?"
    elif fill.problem == "region":
        question = f"{said} has several zones; which one?"
    elif fill.problem == "several":
        question = f"I can {_verb(candidate.spec)} one {slot.kind.replace('_', ' ')} at a time; which one?"
    elif fill.problem == "described":
        question = f"Which {slot.kind.replace('_', ' ')} do you mean? These fit “{said}”."
    else:
        question = f"“{said}” could be several {slot.kind.replace('_', ' ')}s; which one?"
    options = tuple(_option(v, _intent(candidate, **{slot.arg: v})) for v in fill.choices[:MAX_OPTIONS])
    return Understanding(question=question, about=candidate.spec.name, missing=slot.arg, options=options,
                         notes=_notes(candidate))


def _verb(spec: ActionSpec) -> str:
    return spec.name.split("_")[0] if spec.mutates else "answer for"


def _suggested_values(candidate: Candidate, slot: Slot, inventory: Inventory) -> list[str]:
    """Values worth offering for a missing argument, from what exists."""
    if slot.kind == "instance":
        wanted_state = STATE_BEFORE.get(candidate.spec.name)
        names = [i.name for i in inventory.instances if wanted_state in (None, i.state)]
        return names
    if slot.kind == "machine_type":
        name = candidate.fills.get("name")
        current = inventory.instance(str(name.value)) if name and name.value else None
        if current and current.machine_type in inventory.machine_types:
            steps = inventory.machine_types[current.machine_type]
            return [t for t in (steps.get("downsize_to"), steps.get("upsize_to")) if t]
        return []
    if slot.kind == "zone":
        return sorted(inventory.zones)[:MAX_OPTIONS]
    return []


def _missing_question(candidate: Candidate, slot: Slot, evidence: Evidence) -> Understanding:
    excluded = _excluded_names(evidence)
    values = [v for v in _suggested_values(candidate, slot, evidence.inventory) if v not in excluded]
    options = tuple(_option(v, _intent(candidate, **{slot.arg: v})) for v in values
                    if all(s.arg == slot.arg or not s.required or s.arg in candidate.fills
                           for s in candidate.spec.slots))
    question = slot.ask or f"Which {slot.kind.replace('_', ' ')}?"
    return Understanding(question=question, about=candidate.spec.name, missing=slot.arg, options=options[:MAX_OPTIONS],
                         notes=_notes(candidate))


def _which_action(candidates: list[Candidate]) -> Understanding:
    options = []
    for c in candidates:
        if c.missing or len(c.questions) > 1:
            continue
        if not c.questions:
            options.append(_option(c.spec.summary, _intent(c)))
            continue
        slot, fill = c.questions[0]  # "stop X then delete Y": each action with each value
        options += [_option(c.spec.summary, _intent(c, **{slot.arg: v})) for v in fill.choices[:MAX_OPTIONS]]
    names = ", ".join(c.spec.summary.split(" (")[0].lower() for c in candidates)
    return Understanding(question=f"Do you mean: {names}?", options=tuple(options),
                         ranking=tuple((c.spec.name, c.score) for c in candidates))


def understand(prompt: str, inventory: Inventory) -> Understanding:
    text = normalize(prompt)
    tokens = text.tokens
    mentions = find_mentions(tokens, inventory)
    taken = {i for m in mentions for i in range(m.start, m.end)}
    ranges = _excluded_ranges(tokens)
    excluded = [m for m in mentions if any(m.start in r for r in ranges)]
    mentions = [m for m in mentions if m not in excluded]
    quantities = find_quantities(tokens, taken)
    taken |= {i for q in quantities for i in range(q.start, q.end)}
    phrases = _match_phrases(tokens, taken, ranges)
    evidence = Evidence(tokens, mentions, quantities, phrases, text.quoted, inventory, tuple(excluded))
    mentioned = tuple(r.value for m in (*mentions, *excluded) for r in m.readings
                      if r.value and r.quality in ("exact", "corrected", "partial") and r.kind != "label")
    decided = _decide(evidence, inventory)
    if excluded and decided.kind != "unknown":
        left_out = ", ".join(m.said for m in excluded)
        decided = replace(decided, notes=(*decided.notes, f"“{left_out}” was named to be left out: it is never "
                                          "the target, but no filter here excludes it, so a listing or total still "
                                          "counts it"))
    return replace(decided, mentioned=tuple(dict.fromkeys(mentioned)))


def _decide(evidence: Evidence, inventory: Inventory) -> Understanding:
    scored = [_score(spec, evidence) for spec in (*ACTIONS, OUT_OF_SCOPE)]
    candidates = sorted((c for c in scored if c.eligible), key=lambda c: -c.score)
    ranking = tuple((c.spec.name, c.score) for c in candidates[:4])
    if not candidates or candidates[0].score < MIN_SCORE or candidates[0].spec is OUT_OF_SCOPE:
        return Understanding(ranking=ranking)
    best = candidates[0]
    close = [c for c in candidates[1:] if c.score >= MIN_SCORE and best.score - c.score < CLOSE
             and c.said >= COMPETE and c.spec is not OUT_OF_SCOPE]
    if close:
        return _which_action([best, *close])
    for slot, fill in best.questions:
        return _replace(_value_question(best, slot, fill), ranking)
    for slot in best.missing:
        return _replace(_missing_question(best, slot, evidence), ranking)
    return Understanding(intent=_intent(best), notes=_notes(best), ranking=ranking)


def _replace(u: Understanding, ranking: tuple) -> Understanding:
    return replace(u, ranking=ranking)


def capabilities() -> list[dict]:
    """What can be asked: each action with its summary and a canonical example prompt."""
    return [{"agent": s.agent, "action": s.name, "description": s.summary, "mutates": s.mutates}
            for s in ACTIONS]


__all__ = ["Intent", "Option", "Understanding", "capabilities", "render_prompt", "understand"]

"""NGSI-LD query languages: ``q`` (ETSI GS CIM 009 v1.8 §4.9) and the scope query ``scopeQ``.

Why by hand: the grammar is small, a client deserves an error that names the position and
what was expected, and a query is parsed once and compiled into closures over the internal
entity form (see ``entity.py``), so evaluating it over 10,000 entities takes milliseconds.

Semantics the standard leaves open, decided here:

- A term matches when any instance of a multi-instance attribute (any datasetId) matches.
- Compared content: Property ``value``, Relationship ``object``, LanguageProperty every
  string of its ``languageMap`` (``name[en]`` picks one language), VocabProperty ``vocab``
  (string comparison values are expanded with the @context first), JsonProperty ``json``,
  ListProperty ``valueList`` and ListRelationship ``objectList`` item by item.
- When the content is a list (ListProperty, a list value, several languages), ``==``, the
  orderings and ``~=`` match if any item matches; ``!=`` and ``!~=`` match if no item does.
- Numbers compare numerically, strings as strings, booleans only with ``==``/``!=``; an
  unquoted date-time, date or time compares as a time with string content that parses as
  the same kind. Different types never satisfy ``==``, an ordering or a pattern; ``!=``
  treats them as unequal, as §4.9 says ("considered unequal"). No mismatch raises.
- Every comparison needs the attribute path to exist, ``!=`` included.
- Full IRIs containing dots cannot name an attribute in ``q`` (the dot is the path
  separator); use a term or a compact IRI.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from functools import lru_cache
from typing import Any

from urbanhub.model.errors import BadRequestData
from urbanhub.ngsild.context import TermMap, is_iri
from urbanhub.ngsild.entity import CONTENT_MEMBER, Entity

EntityTest = Callable[[Entity], bool]

#: Attribute members a path may end on (``temperature.observedAt``); never expanded.
PATH_MEMBERS = {"observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt", "lang"}

_NAME = re.compile(r"""[^\s.\[\]=!<>~;|(),"'\\]+""")
_UNQUOTED = re.compile(r"""(?:[^\s;|),"'.]|\.(?!\.))+""")
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[Zz]|[+-]\d{2}:?\d{2})?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?[Zz]?")
_SCOPE = re.compile(r"[^\s;|()]+")
_OPERATORS = ("!~=", "~=", "==", "!=", ">=", "<=", ">", "<")
_ORDERINGS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_MISSING = object()


# --- SQL prefilter hints ------------------------------------------------------------------

@dataclass(frozen=True)
class AttrHint:
    """A necessary condition SQL can check: the entity has attribute ``name``, and some row
    of it either has no numeric value or one within ``low``..``high`` or among ``values``.

    Bounds are inclusive even for ``<``/``>``: float rounding of stored numbers must never
    drop a match; the compiled predicate re-checks every candidate exactly.
    """

    name: str
    low: float | None = None
    high: float | None = None
    values: tuple[float, ...] | None = None


@dataclass(frozen=True)
class HintGroup:
    """All (``any_of`` False) or any (``any_of`` True) of the parts must hold."""

    any_of: bool
    parts: tuple[AttrHint | HintGroup, ...]


Hint = AttrHint | HintGroup


class QPredicate:
    """A compiled ``q``: call it on an internal entity. ``hint`` is what SQL may prefilter."""

    __slots__ = ("_test", "hint", "text")

    def __init__(self, test: EntityTest, hint: Hint | None, text: str) -> None:
        self._test = test
        self.hint = hint
        self.text = text

    def __call__(self, entity: Entity) -> bool:
        return self._test(entity)

    def __repr__(self) -> str:
        return f"QPredicate({self.text!r})"


# --- values -------------------------------------------------------------------------------

_KIND_NAMES = {"num": "a number", "str": "a string", "uri": "a URI", "bool": "true/false",
               "datetime": "a date-time", "date": "a date", "time": "a time"}


@dataclass(frozen=True)
class _Value:
    kind: str  # num, str, uri, bool, datetime, date, time
    value: Any

    def kind_name(self) -> str:
        return _KIND_NAMES[self.kind]


@dataclass(frozen=True)
class _Range:
    low: _Value
    high: _Value


@lru_cache(maxsize=8192)
def _as_datetime(text: str) -> datetime | None:
    if not _DATETIME.fullmatch(text):
        return None
    raw = text[:-1] + "+00:00" if text[-1] in "Zz" else text
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@lru_cache(maxsize=8192)
def _as_date(text: str) -> date | None:
    if not _DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


@lru_cache(maxsize=8192)
def _as_time(text: str) -> time | None:
    if not _TIME.fullmatch(text):
        return None
    try:
        return time.fromisoformat(text.rstrip("Zz"))
    except ValueError:
        return None


_TEXT_KINDS: dict[str, Callable[[str], Any]] = {
    "datetime": _as_datetime, "date": _as_date, "time": _as_time}
_SHAPES = {"datetime": _DATETIME, "date": _DATE, "time": _TIME}


def _unwrap(target: Any) -> Any:
    """``{"@type": "DateTime", "@value": …}`` property values compare as their @value."""
    return target.get("@value", _MISSING) if type(target) is dict else _MISSING


def _as_number(target: Any) -> Any:
    kind = type(target)
    if kind is int or kind is float:
        return target
    return _MISSING if kind is not dict else _as_number(_unwrap(target))


def _as_string(target: Any) -> Any:
    if type(target) is str:
        return target
    return _MISSING if type(target) is not dict else _as_string(_unwrap(target))


def _as_bool(target: Any) -> Any:
    return target if type(target) is bool else _MISSING


def _parsed_as(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    def coerce(target: Any) -> Any:
        if type(target) is dict:
            target = _unwrap(target)
        if type(target) is not str:
            return _MISSING
        found = parse(target)
        return _MISSING if found is None else found
    return coerce


#: For each kind of query value: the target in that type, or _MISSING when types differ.
_COERCE: dict[str, Callable[[Any], Any]] = {
    "num": _as_number, "str": _as_string, "uri": _as_string, "bool": _as_bool,
    **{kind: _parsed_as(parse) for kind, parse in _TEXT_KINDS.items()}}


def _equals(wanted: _Value | _Range) -> Callable[[Any], bool]:
    if isinstance(wanted, _Range):
        low, high, coerce = wanted.low.value, wanted.high.value, _COERCE[wanted.low.kind]

        def in_range(target: Any) -> bool:
            found = coerce(target)
            return found is not _MISSING and low <= found <= high
        return in_range
    value, coerce = wanted.value, _COERCE[wanted.kind]

    def equal(target: Any) -> bool:
        found = coerce(target)
        return found is not _MISSING and found == value
    return equal


def _atom_test(op: str, values: Sequence[_Value | _Range] | None,
               pattern: re.Pattern[str] | None) -> Callable[[Any], bool]:
    """A test on one atomic content value; list content is handled by the caller."""
    if pattern is not None:
        search = pattern.search
        if op == "~=":
            return lambda target: isinstance(target, str) and search(target) is not None
        return lambda target: isinstance(target, str) and search(target) is None
    assert values
    if op in ("==", "!="):
        tests = [_equals(v) for v in values]
        single = tests[0] if len(tests) == 1 else None
        if single is not None:
            return single if op == "==" else (lambda target: not single(target))
        if op == "==":
            return lambda target: any(test(target) for test in tests)
        return lambda target: not any(test(target) for test in tests)
    wanted = values[0]
    assert isinstance(wanted, _Value)
    compare = _ORDERINGS[op]
    value, coerce = wanted.value, _COERCE[wanted.kind]

    def ordered(target: Any) -> bool:
        found = coerce(target)
        return found is not _MISSING and bool(compare(found, value))
    return ordered


def _content_test(atom: Callable[[Any], bool], negative: bool) -> Callable[[Any], bool]:
    """Lift an atomic test to content that may be a list (any item; no item if negative)."""
    if negative:
        return lambda content: all(atom(item) for item in content) if isinstance(
            content, list) else atom(content)
    return lambda content: any(atom(item) for item in content) if isinstance(
        content, list) else atom(content)


# --- attribute paths ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Path:
    text: str
    attr: str  # expanded attribute IRI
    subs: tuple[str, ...]  # expanded sub-attribute IRIs
    member: str | None  # core member at the end of the dotted part (observedAt, …)
    keys: tuple[str, ...]  # keys inside the compound value, never expanded


def _instance_content(instance: dict[str, Any], keys: tuple[str, ...]) -> Any:
    kind = instance.get("type", "Property")
    content = instance.get(CONTENT_MEMBER.get(kind, "value"), _MISSING)
    for key in keys:
        if not isinstance(content, dict):
            return _MISSING
        content = content.get(key, _MISSING)
    if keys:
        return content
    if kind == "LanguageProperty" and isinstance(content, dict):
        strings: list[Any] = []
        for text in content.values():
            strings.extend(text if isinstance(text, list) else [text])
        return strings
    if kind == "ListRelationship" and isinstance(content, list):
        return [item.get("object") if isinstance(item, dict) else item for item in content]
    return content


def _resolver(path: _Path) -> Callable[[Entity], list[tuple[Any, bool]]]:
    """Everything a path points at in an entity, with whether it is VocabProperty content."""
    attr, subs, member, keys = path.attr, path.subs, path.member, path.keys

    def resolve(entity: Entity) -> list[tuple[Any, bool]]:
        instances = entity["attrs"].get(attr)
        if not instances:
            return []
        found: list[tuple[Any, bool]] = []
        for instance in instances.values():
            node: Any = instance
            for sub in subs:
                node = node.get(sub)
                if not isinstance(node, dict):
                    break
            else:
                if member is not None:
                    content = node.get(member, _MISSING)
                    vocab = False
                else:
                    content = _instance_content(node, keys)
                    vocab = not keys and node.get("type") == "VocabProperty"
                if content is not _MISSING and content is not None:
                    found.append((content, vocab))
        return found
    return resolve


# --- syntax tree --------------------------------------------------------------------------

@dataclass
class _Term:
    path: _Path
    op: str | None
    values: list[_Value | _Range] | None
    pattern: re.Pattern[str] | None


@dataclass
class _Bool:
    any_of: bool
    parts: list[_Node]


@dataclass
class _Scope:
    pattern: re.Pattern[str]


_Node = _Term | _Bool | _Scope


class _Parser:
    """Recursive descent over ``a;b|(c;d)`` with ``;`` binding tighter than ``|``."""

    def __init__(self, text: str, label: str, terms: TermMap | None) -> None:
        self.text = text
        self.label = label
        self.terms = terms
        self.pos = 0

    def fail(self, message: str, pos: int | None = None) -> BadRequestData:
        at = self.pos if pos is None else pos
        end = " (the end)" if at >= len(self.text) else ""
        return BadRequestData(f"{self.label}: {message} at position {at}{end}.")

    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def parse(self) -> _Node:
        if not self.text.strip():
            raise BadRequestData(f"{self.label} is empty.")
        node = self.expression("the start")
        self.skip_ws()
        char = self.peek()
        if char == ")":
            raise self.fail("')' has no matching '('")
        if char is not None:
            raise self.fail(f"unexpected {char!r}; expected ';', '|' or the end")
        return node

    def expression(self, after: str) -> _Node:
        parts = [self.conjunction(after)]
        self.skip_ws()
        while self.peek() == "|":
            self.pos += 1
            parts.append(self.conjunction("'|'"))
            self.skip_ws()
        return parts[0] if len(parts) == 1 else _Bool(True, parts)

    def conjunction(self, after: str) -> _Node:
        parts = [self.atom(after)]
        self.skip_ws()
        while self.peek() == ";":
            self.pos += 1
            parts.append(self.atom("';'"))
            self.skip_ws()
        return parts[0] if len(parts) == 1 else _Bool(False, parts)

    def atom(self, after: str) -> _Node:
        self.skip_ws()
        char = self.peek()
        if char is None or char in ";|)":
            what = "a scope or '('" if self.terms is None else "an attribute or '('"
            raise self.fail(f"expected {what} after {after}")
        if char == "(":
            opened = self.pos
            self.pos += 1
            node = self.expression("'('")
            self.skip_ws()
            if self.peek() != ")":
                raise self.fail(f"'(' at position {opened} is not closed; expected ')'")
            self.pos += 1
            return node
        return self.scope_term() if self.terms is None else self.term()

    # q terms

    def term(self) -> _Term:
        path = self.path()
        self.skip_ws()
        op = next((o for o in _OPERATORS if self.text.startswith(o, self.pos)), None)
        if op is None:
            char = self.peek()
            if char is None or char in ";|)":
                return _Term(path, None, None, None)
            if char == "=":
                raise self.fail("'=' is not an operator; use '=='")
            raise self.fail(
                f"unexpected {char!r} after {path.text!r}; expected an operator (==, !=, >, "
                ">=, <, <=, ~=, !~=), ';', '|', ')' or the end")
        self.pos += len(op)
        self.skip_ws()
        if op in ("~=", "!~="):
            return _Term(path, op, None, self.regex(op))
        return _Term(path, op, self.values(op), None)

    def name(self, what: str) -> str:
        found = _NAME.match(self.text, self.pos)
        if found is None:
            char = self.peek()
            got = f", got {char!r}" if char is not None else ""
            raise self.fail(f"expected {what}{got}")
        self.pos = found.end()
        return found.group()

    def path(self) -> _Path:
        assert self.terms is not None
        start = self.pos
        attr = self.name("an attribute name")
        subs: list[str] = []
        member: str | None = None
        while self.peek() == ".":
            self.pos += 1
            if member is not None:
                raise self.fail(f"{member!r} must be the last part of an attribute path")
            name = self.name("a sub-attribute name after '.'")
            if name in PATH_MEMBERS:
                member = name
            else:
                subs.append(self.terms.expand(name))
        keys: list[str] = []
        while self.peek() == "[":
            opened = self.pos
            if member is not None:
                raise self.fail(f"{member!r} has no keys to select with '['")
            self.pos += 1
            keys.append(self.name("a key after '['"))
            while self.peek() == ".":
                self.pos += 1
                keys.append(self.name("a key after '.'"))
            if self.peek() != "]":
                raise self.fail(f"'[' at position {opened} is not closed; expected ']'")
            self.pos += 1
        return _Path(self.text[start:self.pos], self.terms.expand(attr), tuple(subs), member,
                     tuple(keys))

    def values(self, op: str) -> list[_Value | _Range]:
        start = self.pos
        items = [self.item(op, repr(op))]
        while self.peek() == ",":
            self.pos += 1
            items.append(self.item(op, "','"))
        if len(items) > 1 and op not in ("==", "!="):
            raise self.fail(f"a list of values can only follow == or !=, not {op!r}", start)
        return items

    def item(self, op: str, after: str) -> _Value | _Range:
        start = self.pos
        low = self.single(after)
        if not self.text.startswith("..", self.pos):
            if op in _ORDERINGS and low.kind in ("bool", "uri"):
                raise self.fail(f"{low.kind_name()} can only be compared with == or !=", start)
            return low
        if op not in ("==", "!="):
            raise self.fail(f"a range a..b can only follow == or !=, not {op!r}")
        self.pos += 2
        high = self.single("'..'")
        for end in (low, high):
            if end.kind in ("bool", "uri"):
                raise self.fail(f"a range cannot have {end.kind_name()} as an end", start)
        if low.kind != high.kind:
            raise self.fail(f"both ends of a range must be of one type, got {low.kind_name()} "
                            f"and {high.kind_name()}", start)
        return _Range(low, high)

    def single(self, after: str) -> _Value:
        start = self.pos
        char = self.peek()
        if char is None or char in ";|),":
            raise self.fail(f"expected a value after {after}")
        if char == '"':
            return _Value("str", self.quoted())
        if char == "'":
            raise self.fail("strings take double quotes (\"…\"), not single quotes")
        found = _UNQUOTED.match(self.text, self.pos)
        if found is None:
            raise self.fail(f"expected a value after {after}, got {char!r}")
        token = found.group()
        self.pos = found.end()
        if token in ("true", "false"):
            return _Value("bool", token == "true")
        if _NUMBER.fullmatch(token):
            return _Value("num", float(token) if any(c in token for c in ".eE")
                                else int(token))
        for kind, parse in _TEXT_KINDS.items():
            parsed = parse(token)
            if parsed is not None:
                return _Value(kind, parsed)
            if _SHAPES[kind].fullmatch(token):
                raise self.fail(f"{token!r} is not a valid {_KIND_NAMES[kind][2:]}", start)
        if is_iri(token) and "\\" not in token:
            return _Value("uri", token)
        raise self.fail(f"the unquoted value {token!r} is not a number, date-time, date, time, "
                        f"true/false or URI; put strings in double quotes (\"{token}\")", start)

    def quoted(self) -> str:
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                chars.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            self.pos += 1
            if char == '"':
                return "".join(chars)
            chars.append(char)
        raise self.fail("the string is not closed; expected '\"'", start)

    def regex(self, op: str) -> re.Pattern[str]:
        start = self.pos
        if self.peek() == '"':
            source = self.quoted()
        else:
            depth, in_class, escaped = 0, False, False
            while self.pos < len(self.text):
                char = self.text[self.pos]
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif in_class:
                    in_class = char != "]"
                elif char == "[":
                    in_class = True
                elif char == "(":
                    depth += 1
                elif char == ")":
                    if depth == 0:
                        break
                    depth -= 1
                elif char in ";|" and depth == 0:
                    break
                self.pos += 1
            source = self.text[start:self.pos]
        if not source:
            raise self.fail(f"expected a regular expression after {op!r}", start)
        try:
            return re.compile(source)
        except re.error as exc:
            raise self.fail(f"invalid regular expression {source!r} ({exc.msg})", start) from exc

    # scopeQ terms

    def scope_term(self) -> _Scope:
        start = self.pos
        found = _SCOPE.match(self.text, self.pos)
        token = found.group() if found else ""
        if not token.startswith("/"):
            raise self.fail("expected a scope starting with '/'")
        self.pos = found.end() if found else self.pos
        segments = token[1:].split("/")
        parts: list[str] = []
        for index, segment in enumerate(segments):
            if not segment:
                raise self.fail(f"the scope {token!r} has an empty level", start)
            if segment == "#":
                if index != len(segments) - 1:
                    raise self.fail(f"'#' must be the last level of {token!r}", start)
                parts.append("(?:/.*)?" if index else "/.*")
            elif segment == "+":
                parts.append("/[^/]+")
            elif "#" in segment or "+" in segment:
                raise self.fail(f"'#' and '+' must be whole levels in {token!r}", start)
            else:
                parts.append("/" + re.escape(segment))
        return _Scope(re.compile("".join(parts)))


# --- compilation --------------------------------------------------------------------------

def _compile_term(term: _Term, terms: TermMap) -> EntityTest:
    resolve = _resolver(term.path)
    if term.op is None:
        return lambda entity: bool(resolve(entity))
    negative = term.op in ("!=", "!~=")
    plain = _content_test(_atom_test(term.op, term.values, term.pattern), negative)
    vocab = plain
    if term.values is not None and any(
            isinstance(v, _Value) and v.kind in ("str", "uri") for v in term.values):
        expanded = [_Value(v.kind, terms.expand(v.value))
                    if isinstance(v, _Value) and v.kind in ("str", "uri") else v
                    for v in term.values]
        vocab = _content_test(_atom_test(term.op, expanded, None), negative)
    path = term.path
    if path.subs or path.member or path.keys:
        return lambda entity: any((vocab if is_vocab else plain)(content)
                                  for content, is_vocab in resolve(entity))
    attr = path.attr

    def test(entity: Entity) -> bool:
        """The common case, a top-level attribute, without building the target list."""
        instances = entity["attrs"].get(attr)
        if not instances:
            return False
        for instance in instances.values():
            kind = instance.get("type")
            if kind == "Property":
                content = instance.get("value")
            elif kind == "VocabProperty":
                if vocab(instance.get("vocab")):
                    return True
                continue
            else:
                content = _instance_content(instance, ())
            if content is not None and content is not _MISSING and plain(content):
                return True
        return False
    return test


def _compile(node: _Node, terms: TermMap | None) -> EntityTest:
    if isinstance(node, _Scope):
        match = node.pattern.fullmatch
        return lambda entity: any(match(scope) for scope in entity.get("scope") or ())
    if isinstance(node, _Term):
        assert terms is not None
        return _compile_term(node, terms)
    parts = [_compile(part, terms) for part in node.parts]
    if node.any_of:
        return lambda entity: any(part(entity) for part in parts)
    if len(parts) == 2:
        first, second = parts
        return lambda entity: first(entity) and second(entity)
    return lambda entity: all(part(entity) for part in parts)


def _hint(node: _Node) -> Hint | None:
    if isinstance(node, _Scope):
        return None
    if isinstance(node, _Term):
        return _term_hint(node)
    hints = [_hint(part) for part in node.parts]
    if node.any_of:
        if any(h is None for h in hints):
            return None
        return HintGroup(True, tuple(h for h in hints if h is not None))
    kept = tuple(h for h in hints if h is not None)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else HintGroup(False, kept)


def _term_hint(term: _Term) -> AttrHint:
    """Every term needs its attribute; plain numeric comparisons also bound value_num."""
    name = term.path.attr
    path = term.path
    if path.subs or path.member or path.keys or not term.values or term.op not in (
            "==", ">", ">=", "<", "<="):
        return AttrHint(name)
    items = term.values
    if term.op == "==":
        if all(isinstance(v, _Value) and v.kind == "num" for v in items):
            return AttrHint(name, values=tuple(float(v.value) for v in items
                                               if isinstance(v, _Value)))
        if len(items) == 1 and isinstance(items[0], _Range) and items[0].low.kind == "num":
            return AttrHint(name, low=float(items[0].low.value),
                            high=float(items[0].high.value))
        return AttrHint(name)
    wanted = items[0]
    if not isinstance(wanted, _Value) or wanted.kind != "num":
        return AttrHint(name)
    bound = float(wanted.value)
    return AttrHint(name, low=bound) if term.op.startswith(">") else AttrHint(name, high=bound)


def parse_q(text: str, terms: TermMap) -> QPredicate:
    """Parse and compile ``q``; attribute names are expanded with the request's @context."""
    tree = _Parser(text, "q", terms).parse()
    return QPredicate(_compile(tree, terms), _hint(tree), text)


def parse_scope_q(text: str) -> EntityTest:
    """Parse ``scopeQ``: ``/a/b`` exact, ``/a/+`` one level below, ``/a/#`` ``/a`` and all
    below it, combined with ``;`` (and), ``|`` (or) and parentheses. Entities without a
    scope never match."""
    tree = _Parser(text, "scopeQ", None).parse()
    return _compile(tree, None)

"""The q and scopeQ parsers and evaluators, on internal entities (no database)."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from urbanhub.model.errors import BadRequestData
from urbanhub.ngsild.context import ContextLoader, ContextResolver, TermMap
from urbanhub.ngsild.q import AttrHint, HintGroup, parse_q, parse_scope_q

V = "https://uri.etsi.org/ngsi-ld/default-context/"
EX = "https://example.org/city#"
TERMS = TermMap().finish()


def entity(attrs: dict[str, Any], scope: list[str] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"id": "urn:x:1", "type": [V + "T"], "attrs": {
        (name if ":" in name else V + name): value if "" in value or any(
            k.startswith("urn:") for k in value) else {"": value}
        for name, value in attrs.items()}}
    if scope is not None:
        found["scope"] = scope
    return found


SENSOR = entity({
    "temperature": {"type": "Property", "value": 21.5, "observedAt": "2024-03-01T10:00:00Z",
                    V + "accuracy": {"type": "Property", "value": 0.5}},
    "flag": {"type": "Property", "value": True},
    "day": {"type": "Property", "value": "2024-03-01"},
    "opens": {"type": "Property", "value": "08:30:00"},
    "stamp": {"type": "Property", "value": {"@type": "DateTime",
                                            "@value": "2024-03-01T12:00:00Z"}},
    "category": {"type": "VocabProperty", "vocab": V + "green"},
    "tags": {"type": "ListProperty", "valueList": ["air", "noise"]},
    "owners": {"type": "ListRelationship", "objectList": [{"object": "urn:ngsi-ld:Org:1"}]},
    "meta": {"type": "JsonProperty", "json": {"a": {"b": 3}}},
    "quoted": {"type": "Property", "value": 'say "hi"; then | leave'},
}, scope=["/city/north/parks"])


@pytest.mark.parametrize(("q", "expected"), [
    ("flag==true", True), ("flag!=false", True), ("flag==false", False),
    ("flag==1", False),  # a boolean is not a number
    ("day==2024-03-01", True), ("day>2024-02-28", True), ("day<2024-03-01", False),
    ("opens<09:00", True), ("opens>=08:31:00", False),
    ("stamp>2024-03-01T11:59:59Z", True), ("stamp==2024-03-01T12:00:00Z", True),
    ("stamp==2024-03-01T14:00:00+02:00", True),  # compared as instants
    ("temperature>2024-01-01T00:00:00Z", False),  # number vs date-time: no match, no error
    ("category==\"green\"", True), ("category==\"red\"", False),
    (f"category=={V}green", True),
    ("tags==\"noise\"", True), ("tags!=\"noise\"", False), ("tags!=\"rain\"", True),
    ("tags~=^no", True), ("tags!~=^no", False),
    ("owners==urn:ngsi-ld:Org:1", True),
    ("meta[a.b]==3", True), ("meta[a][b]>=4", False), ("meta[x]", False), ("meta[a]", True),
    ("temperature.accuracy", True), ("temperature.accuracy==0.5", True),
    ("temperature.observedAt==2024-03-01T10:00:00Z", True),
    ("temperature.unitCode", False),
    ("quoted==\"say \\\"hi\\\"; then | leave\"", True),
    ("quoted~=\"hi.; then\"", True),
    ("temperature == 21.5 ; flag == true", True),  # blanks between tokens are allowed
    ("temperature==-1..1e3", True), ("temperature==.5", False),
    ("((temperature>30)|(flag==true;day==2024-03-01))", True),
    ("missing|flag==true", True), ("missing;flag==true", False),
    ("missing!=1", False),  # comparisons need the attribute
])
def test_terms(q: str, expected: bool) -> None:
    assert parse_q(q, TERMS)(SENSOR) is expected


def test_multi_instance_matches_if_any_instance_does() -> None:
    sensor = entity({"temperature": {
        "": {"type": "Property", "value": 15},
        "urn:ngsi-ld:Dataset:b": {"type": "Property", "value": 30,
                                  "datasetId": "urn:ngsi-ld:Dataset:b"}}})
    assert parse_q("temperature>20", TERMS)(sensor)
    assert parse_q("temperature<20", TERMS)(sensor)
    assert parse_q("temperature.datasetId==urn:ngsi-ld:Dataset:b", TERMS)(sensor)
    assert not parse_q("temperature==20..25", TERMS)(sensor)


def test_names_are_expanded_with_the_context_but_keys_are_not() -> None:
    resolver = ContextResolver(ContextLoader(fetch=lambda url, timeout: {}))
    terms = resolver.resolve({"temp": EX + "temperature", "ex": EX})
    sensor = entity({EX + "temperature": {"type": "Property", "value": {"temp": 4}}})
    assert parse_q("temp[temp]==4", terms)(sensor)
    assert parse_q("ex:temperature[temp]==4", terms)(sensor)
    assert not parse_q("temperature[temp]==4", terms)(sensor)


def test_hints_follow_and_or() -> None:
    temp = V + "temperature"
    assert parse_q("temperature>20", TERMS).hint == AttrHint(temp, low=20.0)
    assert parse_q("temperature==1,2", TERMS).hint == AttrHint(temp, values=(1.0, 2.0))
    assert parse_q("temperature==1..2", TERMS).hint == AttrHint(temp, low=1.0, high=2.0)
    assert parse_q("temperature!=5", TERMS).hint == AttrHint(temp)
    assert parse_q("temperature.observedAt>2024-01-01", TERMS).hint == AttrHint(temp)
    assert parse_q("a|b", TERMS).hint == HintGroup(True, (AttrHint(V + "a"),
                                                          AttrHint(V + "b")))
    assert parse_q("a;temperature<3", TERMS).hint == HintGroup(
        False, (AttrHint(V + "a"), AttrHint(temp, high=3.0)))


@pytest.mark.parametrize(("q", "detail"), [
    ("", "q is empty"),
    ("   ", "q is empty"),
    ("price>=", "q: expected a value after '>=' at position 7 (the end)."),
    ("(a;b", "'(' at position 0 is not closed; expected ')' at position 4"),
    ("a;b)", "')' has no matching '(' at position 3"),
    ("a|", "expected an attribute or '(' after '|' at position 2"),
    (";a", "after the start at position 0"),
    ("a;;b", "after ';' at position 2"),
    ("()", "after '(' at position 1"),
    ("a=1", "'=' is not an operator; use '==' at position 1"),
    ("a<>1", "the unquoted value '>1'"),
    ("a b", "unexpected 'b' after 'a'"),
    ("a\"b==1", "unexpected '\"' after 'a'"),
    ("a.==1", "expected a sub-attribute name after '.', got '='"),
    ("a[==1", "expected a key after '['"),
    ("a[b==1", "'[' at position 1 is not closed; expected ']'"),
    ("a.observedAt.b", "'observedAt' must be the last part"),
    ("a.observedAt[b]", "'observedAt' has no keys"),
    ("a==hello", "put strings in double quotes (\"hello\")"),
    ("a=='x'", "double quotes"),
    ("a==\"open", "the string is not closed"),
    ("a~=[", "invalid regular expression '['"),
    ("a~=", "expected a regular expression after '~='"),
    ("a>true", "true/false can only be compared with == or !="),
    ("a>urn:x:y", "a URI can only be compared with == or !="),
    ("a>1,2", "a list of values can only follow == or !="),
    ("a>1..2", "a range a..b can only follow == or !="),
    ("a==1..\"z\"", "both ends of a range must be of one type"),
    ("a==true..false", "a range cannot have true/false as an end"),
    ("a==2024-02-30", "'2024-02-30' is not a valid date"),
    ("a==1,", "expected a value after ','"),
])
def test_syntax_errors_name_the_position(q: str, detail: str) -> None:
    with pytest.raises(BadRequestData) as caught:
        parse_q(q, TERMS)
    assert detail in caught.value.detail, caught.value.detail


@pytest.mark.parametrize(("scope_q", "expected"), [
    ("/city/north/parks", True), ("/city/north", False), ("/city/#", True), ("/city", False),
    ("/city/north/parks/#", True), ("/city/+", False), ("/city/+/parks", True), ("/#", True),
    ("/city/south;/city/#", False), ("/city/south|/city/+/parks", True),
    ("(/x|/city/#);/city/north/+", True),
])
def test_scope_q(scope_q: str, expected: bool) -> None:
    assert parse_scope_q(scope_q)(SENSOR) is expected


def test_scope_q_needs_a_scope_and_valid_syntax() -> None:
    assert not parse_scope_q("/#")(entity({}))
    for text, detail in [("city", "expected a scope starting with '/'"),
                         ("/a//b", "empty level"), ("/a/#/b", "'#' must be the last level"),
                         ("/a/b+", "must be whole levels"), ("/a;", "after ';'"),
                         ("(/a", "not closed"), ("", "scopeQ is empty")]:
        with pytest.raises(BadRequestData) as caught:
            parse_scope_q(text)
        assert detail in caught.value.detail, caught.value.detail


def test_ten_thousand_entities_evaluate_in_milliseconds() -> None:
    rng = random.Random(7)
    sensors = [entity({"temperature": {"type": "Property", "value": rng.uniform(0, 40)},
                       "status": {"type": "Property", "value": rng.choice(["ok", "broken"])}})
               for _ in range(10_000)]
    predicate = parse_q("temperature>20;status==\"ok\"", TERMS)
    expected = sum(1 for s in sensors if s["attrs"][V + "temperature"][""]["value"] > 20
                   and s["attrs"][V + "status"][""]["value"] == "ok")
    started = time.perf_counter()
    matched = sum(1 for s in sensors if predicate(s))
    elapsed = time.perf_counter() - started
    assert matched == expected
    assert elapsed < 0.2, f"{elapsed * 1000:.1f} ms for 10,000 entities"

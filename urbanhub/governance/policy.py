"""The policy decision point: one answer, permit or deny with obligations, for every read.

The split between Cedar and Python, so each rule lives in exactly one place:

* Cedar (policies/*.cedar, checked against policies/schema.json) decides permit or deny and
  names the policies that determined it. Everything a privacy board signs off is there:
  who may use which classification, for which kind of purpose, what is forbidden outright.
* Python prepares the facts Cedar reasons over (caller, dataset or attribute, purpose
  register lookup) and looks up the grant that covers the request: grants are data
  produced by approved data-use requests, not policy, and Cedar has no "exists a grant
  such that" quantifier. It passes the grant (or its absence) in `context.grant`.
* Obligations are computed in Python from the permitting policy's @obligations annotation
  ("grant_conditions" expands to the grant's pseudonymisation, aggregation and DP noise;
  "watermark" marks exports), from attribute-level decisions (a stricter attribute the
  caller may not see is dropped) and from the dataset's legal basis (consent).

When several policies permit, the one leaving the fewest obligations is used: any one of
them alone would have allowed the request. Decisions are pure given their inputs; the
shipped policy files are read once, at construction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import cedarpy

from urbanhub.model.caller import Caller
from urbanhub.model.errors import UrbanhubError
from urbanhub.model.governance import (
    Action,
    Aggregate,
    Classification,
    Dataset,
    Decision,
    DpNoise,
    DropAttributes,
    Effect,
    ExcludeWithoutConsent,
    Grant,
    LegalBasis,
    Obligation,
    PseudonymiseAttributes,
    Purpose,
    Role,
    Watermark,
)

POLICY_DIR = Path(__file__).parent / "policies"
SCHEMA_FILE = POLICY_DIR / "schema.json"
KNOWN_OBLIGATIONS = frozenset({"grant_conditions", "watermark"})
_ROLES = frozenset(Role)


class InvalidPolicy(UrbanhubError):
    """A policy set that does not parse, validate or carry the annotations the PDP needs."""

    problem_type = "https://urbanhub.dev/problems/InvalidPolicy"
    title = "Invalid policy"
    status = 400


def shipped_policy_text() -> str:
    """The shipped policy files, concatenated in name order (the text that gets versioned)."""
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(POLICY_DIR.glob("*.cedar")))


@dataclass(frozen=True)
class Rule:
    """What the PDP needs from one policy's annotations."""

    id: str
    forbid: bool
    reason: str
    obligations: frozenset[str]


@dataclass(frozen=True)
class CompiledPolicies:
    """Parsed and validated policies with the entities every request shares."""

    text: str
    version: str
    policies: cedarpy.PolicySet
    rules: dict[str, Rule]  # by Cedar's positional policy id (policy0, ...)
    base: cedarpy.Entities  # roles, the classification order, the action groups


@lru_cache(maxsize=8)
def compile_policies(text: str, schema_text: str) -> CompiledPolicies:
    """Parse, validate and index a policy set; cached, as a policy set changes rarely."""
    try:
        schema = cedarpy.Schema.from_json_str(schema_text)
    except ValueError as exc:
        raise InvalidPolicy(f"The Cedar schema does not parse: {exc}") from exc
    try:
        policies = cedarpy.PolicySet.from_str(text)
        est = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise InvalidPolicy(f"The policy text does not parse: {exc}") from exc
    if est.get("templates"):
        raise InvalidPolicy("Policy templates are not supported; grants are passed as data.")
    if not est.get("staticPolicies"):
        raise InvalidPolicy("The policy text contains no policies.")
    validation = cedarpy.validate_policies(text, schema)
    if not validation.validation_passed:
        names = validation.id_annotations_by_policy_id
        problems = [f"{names.get(e.policy_id, e.policy_id) or 'policy text'}: {e.error}"
                    for e in validation.errors]
        raise InvalidPolicy("The policies do not validate against the schema: "
                            + "; ".join(problems), errors=problems)
    rules = {cedar_id: _rule(cedar_id, body) for cedar_id, body in est["staticPolicies"].items()}
    seen: set[str] = set()
    for rule in rules.values():
        if rule.id in seen:
            raise InvalidPolicy(f"Two policies share the @id {rule.id!r}.")
        seen.add(rule.id)
    return CompiledPolicies(text=text, version=policy_version(text), policies=policies,
                            rules=rules, base=_base_entities(schema))


def policy_version(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _rule(cedar_id: str, body: dict[str, Any]) -> Rule:
    notes: dict[str, str] = body.get("annotations") or {}
    rule_id = notes.get("id")
    if not rule_id:
        number = int(cedar_id.removeprefix("policy")) + 1
        raise InvalidPolicy(f"Policy number {number} in the text has no @id annotation; every "
                            "rule needs a name for decisions and the audit trail.")
    forbid = body["effect"] == "forbid"
    reason = notes.get("reason", "")
    if forbid and not reason:
        raise InvalidPolicy(f"Forbid policy {rule_id!r} has no @reason annotation.")
    obligations = frozenset(o.strip() for o in notes.get("obligations", "").split(",")
                            if o.strip())
    unknown = obligations - KNOWN_OBLIGATIONS
    if unknown:
        raise InvalidPolicy(f"Policy {rule_id!r} names unknown obligations "
                            f"{sorted(unknown)}; known: {sorted(KNOWN_OBLIGATIONS)}.")
    if forbid and obligations:
        raise InvalidPolicy(f"Forbid policy {rule_id!r} cannot carry obligations.")
    return Rule(rule_id, forbid, reason, obligations)


def _base_entities(schema: cedarpy.Schema) -> cedarpy.Entities:
    order = list(Classification)
    entities: list[dict[str, Any]] = [
        {"uid": {"type": "Role", "id": role.value}, "attrs": {}, "parents": []} for role in Role]
    entities += [{"uid": {"type": "Classification", "id": c.value}, "attrs": {},
                  "parents": [{"type": "Classification", "id": order[i + 1].value}]
                  if i + 1 < len(order) else []} for i, c in enumerate(order)]
    # Built with the schema so the action groups (read in reading) are part of the store.
    return cedarpy.Entities.from_json_str(json.dumps(entities), schema)


def _entity(kind: str, ident: str) -> dict[str, dict[str, str]]:
    return {"__entity": {"type": kind, "id": ident}}


def _resource_json(kind: str, ident: str, dataset: Dataset,
                   classification: Classification) -> str:
    return json.dumps({"uid": {"type": kind, "id": ident}, "parents": [], "attrs": {
        "classification": _entity("Classification", classification.value),
        "owner": dataset.owner,
        "steward": _entity("User", dataset.steward),
        "purposes": sorted(dataset.purposes)}})


@lru_cache(maxsize=4096)
def _dataset_entities(dataset: Dataset) -> tuple[str, dict[str, str]]:
    """Cedar JSON of a dataset and of its stricter attributes, built once per dataset."""
    return (_resource_json("Dataset", dataset.id, dataset, dataset.classification),
            {name: _resource_json("Attribute", _attribute_id(dataset, name), dataset, cls)
             for name, cls in dataset.attribute_classes.items()})


def _attribute_id(dataset: Dataset, attribute: str) -> str:
    return f"{dataset.id}#{attribute}"


@dataclass(frozen=True)
class _Check:
    """One Cedar request: a dataset (attribute None) or one attribute of it."""

    dataset: Dataset
    attribute: str | None
    grant: Grant | None


class PolicyDecisionPoint:
    """Decides every read, export and share; construct once, call from every read path."""

    def __init__(self, purposes: Iterable[Purpose] = (), *, pseudonym_key_id: str = "default",
                 policy_text: str | None = None, schema_text: str | None = None) -> None:
        self.purposes = {p.id: p for p in purposes}
        self.pseudonym_key_id = pseudonym_key_id
        text = shipped_policy_text() if policy_text is None else policy_text
        schema = SCHEMA_FILE.read_text(encoding="utf-8") if schema_text is None else schema_text
        self._compiled = compile_policies(text, schema)
        # Entity stores repeat (the same caller reading the same datasets): parse each once.
        self._store = lru_cache(maxsize=1024)(self._build_store)

    @property
    def policy_text(self) -> str:
        return self._compiled.text

    @property
    def policy_version(self) -> str:
        return self._compiled.version

    def decide(self, caller: Caller, action: Action, dataset: Dataset, purpose: str | None,
               *, attribute: str | None = None, now: datetime,
               grants: Iterable[Grant] = ()) -> Decision:
        """Decide one request; `grants` are the grants that might apply (any superset)."""
        return self.decide_many(caller, action, [(dataset, attribute)], purpose, now=now,
                                grants=grants)[0]

    def decide_many(self, caller: Caller, action: Action,
                    targets: Sequence[tuple[Dataset, str | None]], purpose: str | None, *,
                    now: datetime, grants: Iterable[Grant] = ()) -> list[Decision]:
        """Decide a request for several datasets or attributes in one Cedar batch call.

        A dataset target also evaluates its stricter attributes, to drop those the caller
        may not see; an attribute target is decided like a dataset of its classification.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        action = Action(action)
        usable = _usable_grants(grants, caller, action, purpose, now)
        checks: list[_Check] = []
        entities: dict[tuple[str, str], str] = {}
        spans: list[tuple[int, int]] = []  # the checks of each target
        for dataset, attribute in targets:
            start = len(checks)
            dataset_json, stricter = _dataset_entities(dataset)
            if attribute is None:
                entities[("Dataset", dataset.id)] = dataset_json
                checks.append(_Check(dataset, None, _covering(usable, dataset, None)))
                for name, text in stricter.items():
                    entities[("Attribute", _attribute_id(dataset, name))] = text
                    checks.append(_Check(dataset, name, _covering(usable, dataset, name)))
            else:
                entities[("Attribute", _attribute_id(dataset, attribute))] = stricter.get(
                    attribute) or _resource_json("Attribute", _attribute_id(dataset, attribute),
                                                 dataset, dataset.classification)
                checks.append(_Check(dataset, attribute, _covering(usable, dataset, attribute)))
            spans.append((start, len(checks)))
        results = self._evaluate(caller, action, purpose, checks, entities)
        decided = [self._decision(caller, action, purpose, check, result)
                   for check, result in zip(checks, results, strict=True)]
        return [self._finish(decided[start], checks[start].dataset, purpose,
                             list(zip(checks[start + 1:end], decided[start + 1:end],
                                      strict=True)))
                for start, end in spans]

    def _evaluate(self, caller: Caller, action: Action, purpose: str | None,
                  checks: list[_Check], entities: dict[tuple[str, str], str]
                  ) -> list[cedarpy.AuthzResult]:
        registered = self.purposes.get(purpose) if purpose else None
        principal = {"type": "User", "id": caller.subject}
        store = self._store(_caller_json(caller), tuple(entities.values()))
        base_context = {"purpose": purpose or "", "purpose_registered": registered is not None,
                        "purpose_kind": registered.kind.value if registered else ""}
        cedar_action = {"type": "Action", "id": action.value}
        requests = []
        for check in checks:
            context = base_context
            if check.grant is not None:
                g = check.grant
                context = {**base_context, "grant": {
                    "id": g.id, "pseudonymised": g.requires_pseudonymisation,
                    "aggregate_only": g.min_group_size is not None,
                    "dp": g.dp_epsilon is not None}}
            resource = ({"type": "Dataset", "id": check.dataset.id} if check.attribute is None
                        else {"type": "Attribute",
                              "id": _attribute_id(check.dataset, check.attribute)})
            requests.append({"principal": principal, "action": cedar_action,
                             "resource": resource, "context": context})
        return cedarpy.is_authorized_batch(requests, self._compiled.policies, store)

    def _build_store(self, caller_json: str, resources: tuple[str, ...]) -> cedarpy.Entities:
        return self._compiled.base.with_added_json_str(
            "[" + ",".join((caller_json, *resources)) + "]")

    def _decision(self, caller: Caller, action: Action, purpose: str | None, check: _Check,
                  result: cedarpy.AuthzResult) -> Decision:
        """One Cedar answer as a Decision, with the obligations of the permitting policy."""
        target = check.dataset.id + (f"#{check.attribute}" if check.attribute else "")
        if result.diagnostics.errors:
            # Validated policies cannot fail on well-formed input: fail closed if they do.
            return Decision(Effect.DENY, f"{target}: policy evaluation failed: "
                            + "; ".join(map(str, result.diagnostics.errors)))
        rules = [self._compiled.rules[cedar_id] for cedar_id in result.diagnostics.reasons]
        ids = tuple(sorted(rule.id for rule in rules))
        if not result.allowed:
            if rules:
                because = "; ".join(f"{r.reason} ({r.id})" for r in sorted(rules,
                                                                            key=lambda r: r.id))
            else:
                classification = (check.dataset.classification if check.attribute is None
                                  else check.dataset.classification_of(check.attribute))
                because = (f"no policy permits {_describe(caller)} to {action} "
                           f"{classification} data for purpose {purpose or '(none)'}")
            return Decision(Effect.DENY, f"{target}: {because}", ids)
        obligations, rule = min(((self._obligations(rule, check, caller), rule)
                                 for rule in rules),
                                key=lambda option: (len(option[0]), option[1].id))
        used = check.grant if "grant_conditions" in rule.obligations else None
        reason = f"{target}: permitted by {rule.id}"
        if used is not None:
            reason += f" under grant {used.id}"
        return Decision(Effect.PERMIT, reason, ids, obligations, used.id if used else None)

    def _obligations(self, rule: Rule, check: _Check, caller: Caller
                     ) -> tuple[Obligation, ...]:
        found: list[Obligation] = []
        grant = check.grant
        if "grant_conditions" in rule.obligations and grant is not None:
            if grant.requires_pseudonymisation:
                personal = (frozenset({check.attribute}) if check.attribute is not None
                            else check.dataset.identifiers)
                if personal:
                    found.append(PseudonymiseAttributes(personal, self.pseudonym_key_id))
            if grant.min_group_size is not None:
                found.append(Aggregate(grant.min_group_size))
            if grant.dp_epsilon is not None:
                found.append(DpNoise(grant.dp_epsilon))
        if "watermark" in rule.obligations:
            found.append(Watermark(caller.subject))
        return tuple(found)

    def _finish(self, decision: Decision, dataset: Dataset, purpose: str | None,
                attributes: list[tuple[_Check, Decision]]) -> Decision:
        """Fold the stricter attributes' decisions and the legal basis into a permit."""
        if not decision.permitted:
            return decision
        dropped = frozenset(c.attribute for c, d in attributes
                            if not d.permitted and c.attribute is not None)
        obligations = [*decision.obligations]
        for _, attribute_decision in attributes:
            if attribute_decision.permitted:
                obligations.extend(attribute_decision.obligations)
        if dropped:
            obligations.append(DropAttributes(dropped))
        if dataset.legal_basis is LegalBasis.CONSENT and purpose:
            obligations.append(ExcludeWithoutConsent(purpose))
        reason = decision.reason
        if dropped:
            reason += f"; attributes dropped: {', '.join(sorted(dropped))}"
        return Decision(decision.effect, reason, decision.policy_ids, _merge(obligations),
                        decision.grant_id)


@lru_cache(maxsize=4096)
def _caller_json(caller: Caller) -> str:
    return json.dumps({"uid": {"type": "User", "id": caller.subject}, "attrs": {
        "organisation": caller.organisation or "",
        "organisation_kind": caller.organisation_kind or ""},
        "parents": [{"type": "Role", "id": r} for r in sorted(caller.roles & _ROLES)]})


def _describe(caller: Caller) -> str:
    roles = ",".join(sorted(caller.roles)) or "no role"
    return f"{caller.subject} ({roles}; {caller.organisation or 'no organisation'})"


def _usable_grants(grants: Iterable[Grant], caller: Caller, action: Action,
                   purpose: str | None, now: datetime) -> dict[str, list[Grant]]:
    """The grants for this caller, action, purpose and moment, by dataset id."""
    usable: dict[str, list[Grant]] = {}
    if purpose is None:
        return usable
    for grant in grants:
        if (grant.purpose == purpose and grant.action.covers(action) and grant.active(now)
                and (grant.grantee_organisation is None
                     or grant.grantee_organisation == caller.organisation)
                and (grant.grantee_role is None or grant.grantee_role.value in caller.roles)):
            usable.setdefault(grant.dataset, []).append(grant)
    return usable


def _covering(usable: dict[str, list[Grant]], dataset: Dataset, attribute: str | None
              ) -> Grant | None:
    """The least restrictive grant covering the dataset, or the stricter attribute."""
    candidates = usable.get(dataset.id, [])
    if attribute is not None and attribute in dataset.attribute_classes:
        candidates = [g for g in candidates if attribute in g.attributes]
    return min(candidates, key=lambda g: (g.condition_count, g.id), default=None)


def _merge(obligations: list[Obligation]) -> tuple[Obligation, ...]:
    """One obligation of each kind, keeping the strictest values, in a stable order."""
    dropped: set[str] = set()
    pseudonymised: dict[str, set[str]] = {}
    group_sizes: list[int] = []
    epsilons: list[float] = []
    others: list[Obligation] = []
    for ob in obligations:
        match ob:
            case DropAttributes(attributes=attrs):
                dropped |= attrs
            case PseudonymiseAttributes(attributes=attrs, key_id=key):
                pseudonymised.setdefault(key, set()).update(attrs)
            case Aggregate(min_group_size=k):
                group_sizes.append(k)
            case DpNoise(epsilon=eps):
                epsilons.append(eps)
            case _ if ob not in others:
                others.append(ob)
    merged: list[Obligation] = []
    if dropped:
        merged.append(DropAttributes(frozenset(dropped)))
    for key, names in sorted(pseudonymised.items()):
        if names - dropped:
            merged.append(PseudonymiseAttributes(frozenset(names - dropped), key))
    if group_sizes:
        merged.append(Aggregate(max(group_sizes)))
    if epsilons:
        merged.append(DpNoise(min(epsilons)))
    return (*merged, *others)

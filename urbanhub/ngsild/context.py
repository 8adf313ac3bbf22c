"""JSON-LD @context resolution and term expansion/compaction for NGSI-LD payloads.

Why by hand: an NGSI-LD broker only needs the term <-> IRI map of a context to expand
attribute names and entity types (ETSI GS CIM 009 §5.5.7); a full JSON-LD processor
(pyld) is slow on every request and fails offline on the v1.9 core context, whose scoped
``ngsildproof`` term references a remote security context. We read term definitions,
prefixes and ``@vocab``, and nothing else.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import httpx

from urbanhub.model.errors import BadRequestData, LdContextNotAvailable

CORE_CONTEXT_URL = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
DEFAULT_VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
NGSI_LD = "https://uri.etsi.org/ngsi-ld/"

_CORE_FILE = "ngsi-ld-core-context-v1.9.jsonld"
_SDM = "https://raw.githubusercontent.com/smart-data-models/dataModel.{}/master/context.jsonld"

#: Context URLs answered from the package instead of the network.
SHIPPED_CONTEXTS: dict[str, str] = {
    CORE_CONTEXT_URL: _CORE_FILE,
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld": _CORE_FILE,
    **{
        f"https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.{minor}.jsonld": _CORE_FILE
        for minor in range(3, 9)
    },
    **{
        _SDM.format(subject): f"sdm-{subject}.jsonld"
        for subject in ("Environment", "Parking", "Streetlighting", "Transportation",
                        "WasteManagement")
    },
}

_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_KEYWORD = re.compile(r"^@")


def is_iri(text: str) -> bool:
    """True for an absolute IRI or a compact IRI (``scheme:rest``)."""
    return bool(_IRI.match(text))


class ContextLoader:
    """Fetches remote context documents once and keeps them; shipped ones never hit the net."""

    def __init__(self, timeout_s: float = 5.0,
                 fetch: Callable[[str, float], Any] | None = None) -> None:
        self._timeout_s = timeout_s
        self._fetch = fetch or _http_fetch
        self._documents: dict[str, Any] = {}
        self._lock = threading.Lock()

    def load(self, url: str) -> Any:
        cached = self._documents.get(url)
        if cached is not None:
            return cached
        shipped = SHIPPED_CONTEXTS.get(url)
        if shipped is not None:
            text = resources.files("urbanhub.ngsild").joinpath("contexts", shipped).read_text(
                encoding="utf-8")
            document = json.loads(text)
        else:
            if not url.startswith(("http://", "https://")):
                # Nothing to fetch: a client error, not an unavailable context.
                raise BadRequestData(f"The @context {url[:200]!r} is neither an http(s) URL "
                                     "nor a context object.")
            try:
                document = self._fetch(url, self._timeout_s)
            except LdContextNotAvailable:
                raise
            except Exception as exc:  # network errors of every kind mean the same to the client
                raise LdContextNotAvailable(
                    f"The @context {url!r} could not be retrieved: {exc}") from exc
        with self._lock:
            self._documents[url] = document
        return document

    def preload(self, url: str, document: Any) -> None:
        """Install a context document under a URL (for tests and offline deployments)."""
        with self._lock:
            self._documents[url] = document


def _http_fetch(url: str, timeout_s: float) -> Any:
    response = httpx.get(url, timeout=timeout_s, follow_redirects=True,
                         headers={"Accept": "application/ld+json, application/json"})
    if response.status_code != 200:
        raise LdContextNotAvailable(
            f"The @context {url!r} answered HTTP {response.status_code}.")
    try:
        return response.json()
    except ValueError as exc:
        raise LdContextNotAvailable(f"The @context {url!r} is not JSON.") from exc


@dataclass
class TermMap:
    """The term definitions in force for one request's @context."""

    terms: dict[str, str] = field(default_factory=dict)
    vocab: str = DEFAULT_VOCAB
    _reverse: dict[str, str] = field(default_factory=dict)
    _prefixes: list[tuple[str, str]] = field(default_factory=list)

    def expand(self, term: str) -> str:
        """Expand a term, a compact IRI or an absolute IRI to an absolute IRI."""
        iri = self.terms.get(term)
        if iri is not None:
            return iri
        if ":" in term:
            prefix, _, suffix = term.partition(":")
            base = self.terms.get(prefix)
            if base is not None and not suffix.startswith("//"):
                return base + suffix
            if is_iri(term):
                return term
        return self.vocab + term

    def compact(self, iri: str) -> str:
        """The shortest name this context gives an IRI; the IRI itself when it has none."""
        term = self._reverse.get(iri)
        if term is not None:
            return term
        if iri.startswith(self.vocab) and "/" not in iri[len(self.vocab):]:
            return iri[len(self.vocab):]
        for base, prefix in self._prefixes:
            if iri.startswith(base) and len(iri) > len(base):
                return f"{prefix}:{iri[len(base):]}"
        return iri

    def finish(self) -> TermMap:
        """Resolve compact IRIs inside definitions and build the reverse (compaction) map."""
        for _ in range(3):  # definitions may chain through prefixes ("a": "b:x", "b": "http…")
            changed = False
            for term, iri in self.terms.items():
                if ":" in iri and not iri.startswith(("http://", "https://", "urn:")):
                    prefix, _, suffix = iri.partition(":")
                    base = self.terms.get(prefix)
                    if base is not None:
                        self.terms[term] = base + suffix
                        changed = True
                elif ":" not in iri and iri in self.terms and self.terms[iri] != iri:
                    self.terms[term] = self.terms[iri]
                    changed = True
            if not changed:
                break
        reverse: dict[str, str] = {}
        for term, iri in self.terms.items():
            best = reverse.get(iri)
            if best is None or len(term) < len(best):
                reverse[iri] = term
        self._reverse = reverse
        self._prefixes = sorted(
            ((iri, term) for term, iri in self.terms.items() if iri.endswith(("/", "#"))),
            key=lambda pair: -len(pair[0]))
        return self


class ContextResolver:
    """Turns a request's @context (URL, object or list of both) into a TermMap, cached."""

    def __init__(self, loader: ContextLoader, cache_size: int = 256) -> None:
        self.loader = loader
        self._cache: OrderedDict[str, TermMap] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def resolve(self, context: Any) -> TermMap:
        key = json.dumps(context, sort_keys=True)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        term_map = TermMap()
        for definition in self._flatten(context, depth=0):
            _apply(term_map, definition)
        for definition in self._flatten(CORE_CONTEXT_URL, depth=0):
            _apply(term_map, definition)  # the core context is always last and wins
        term_map.finish()
        with self._lock:
            self._cache[key] = term_map
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return term_map

    def _flatten(self, context: Any, depth: int) -> Iterable[dict[str, Any]]:
        if depth > 8:
            raise BadRequestData("The @context nests remote contexts more than 8 deep.")
        if context is None:
            return
        if isinstance(context, str):
            document = self.loader.load(context)
            inner = document.get("@context") if isinstance(document, dict) else None
            if inner is None:
                raise LdContextNotAvailable(f"The document at {context!r} has no @context.")
            yield from self._flatten(inner, depth + 1)
        elif isinstance(context, list):
            for item in context:
                yield from self._flatten(item, depth)
        elif isinstance(context, dict):
            yield context
        else:
            raise BadRequestData("@context must be a URL, an object or a list of them.")


def _apply(term_map: TermMap, definition: dict[str, Any]) -> None:
    vocab = definition.get("@vocab")
    if isinstance(vocab, str):
        term_map.vocab = vocab
    for term, value in definition.items():
        if _KEYWORD.match(term):
            continue
        if isinstance(value, str):
            iri = value
        elif isinstance(value, dict):
            iri = value.get("@id") or ""
            if not iri:
                continue
        elif value is None:
            term_map.terms.pop(term, None)
            continue
        else:
            continue
        if iri.startswith("@"):
            continue  # keyword aliases ("id": "@id") are structural, not vocabulary
        term_map.terms[term] = iri

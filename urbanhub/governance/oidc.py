"""OIDC bearer tokens: verify a JWT's signature and claims against the configured JWKS.

PyJWT does the cryptography and the claim checks; this module decides what is accepted:
asymmetric signatures only (RS256, ES256), so ``none`` and HMAC algorithms (a classic way
to forge a token with the public key as the HMAC secret) are refused before any key is
touched; the token must name its key (``kid``), be unexpired, and carry the configured
issuer and audience. Keys come from a local JWKS file (re-read when it changes) and/or a
JWKS URL, fetched and cached by PyJWT's ``PyJWKClient``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet

from urbanhub.config import Settings
from urbanhub.model.errors import Unauthenticated, UrbanhubError

ALGORITHMS = frozenset({"RS256", "ES256"})
LEEWAY_S = 30  # clock skew tolerated on exp, nbf and iat
JWKS_CACHE_S = 300  # how long a fetched JWKS is used before it is fetched again
JWKS_FETCH_TIMEOUT_S = 5.0
log = logging.getLogger("urbanhub.oidc")


class OidcConfigError(ValueError):
    """The OIDC settings are incomplete or name a JWKS that cannot be read."""


class OidcUnavailable(UrbanhubError):
    """The identity provider's keys cannot be fetched: the hub's problem, not the caller's."""

    problem_type = "https://urbanhub.dev/problems/IdentityProviderUnavailable"
    title = "Identity provider unavailable"
    status = 503


@dataclass(frozen=True)
class TokenIdentity:
    """Who a verified token says the caller is, at which identity provider."""

    issuer: str
    subject: str


def _invalid(detail: str) -> Unauthenticated:
    return Unauthenticated(detail, scheme="Bearer")


def _signing_keys(keys: PyJWKSet) -> dict[str, PyJWK]:
    return {key.key_id: key for key in keys.keys
            if key.key_id and key.public_key_use in ("sig", None)
            and key.algorithm_name in ALGORITHMS}


class OidcVerifier:
    """Verifies bearer tokens of one identity provider (issuer) meant for this hub."""

    def __init__(self, issuer: str, audience: str, *, jwks_file: Path | None = None,
                 jwks_url: str | None = None) -> None:
        if jwks_file is None and jwks_url is None:
            raise OidcConfigError("OIDC needs URBANHUB_OIDC_JWKS_FILE or URBANHUB_OIDC_JWKS_URL.")
        self.issuer = issuer
        self.audience = audience
        self._file = jwks_file
        self._file_keys: tuple[int, dict[str, PyJWK]] = (-1, {})
        self._client: PyJWKClient | None = None
        if jwks_url is not None:
            try:
                self._client = PyJWKClient(jwks_url, lifespan=JWKS_CACHE_S,
                                           timeout=JWKS_FETCH_TIMEOUT_S)
            except jwt.PyJWKClientError as exc:
                raise OidcConfigError(f"URBANHUB_OIDC_JWKS_URL: {exc}") from exc
        if jwks_file is not None:
            try:
                self._keys_in_file(jwks_file)
            except OidcUnavailable as exc:
                raise OidcConfigError(exc.detail) from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcVerifier | None:
        """The verifier the settings describe; None when OIDC is not configured."""
        named = {"URBANHUB_OIDC_ISSUER": settings.oidc_issuer,
                 "URBANHUB_OIDC_AUDIENCE": settings.oidc_audience,
                 "URBANHUB_OIDC_JWKS_FILE or _URL": settings.oidc_jwks_file
                 or settings.oidc_jwks_url}
        if not any(named.values()):
            return None
        missing = [name for name, value in named.items() if not value]
        if missing:
            raise OidcConfigError(f"OIDC is partly configured; also set {', '.join(missing)}.")
        return cls(settings.oidc_issuer or "", settings.oidc_audience or "",
                   jwks_file=Path(settings.oidc_jwks_file) if settings.oidc_jwks_file else None,
                   jwks_url=settings.oidc_jwks_url or None)

    def verify(self, token: str) -> TokenIdentity:
        """The identity a valid token proves; Unauthenticated naming what is wrong otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _invalid(f"The bearer token is not a well-formed JWT: {exc}.") from exc
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise _invalid(f"The bearer token's algorithm {str(algorithm)[:20]!r} is not "
                           f"accepted; tokens must be signed with "
                           f"{' or '.join(sorted(ALGORITHMS))}.")
        kid = header.get("kid")
        if not kid:
            raise _invalid("The bearer token names no signing key (kid header).")
        key = self._key(kid)
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], audience=self.audience,
                                issuer=self.issuer, leeway=LEEWAY_S,
                                options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError as exc:
            raise _invalid("The bearer token has expired.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise _invalid("The bearer token is not valid yet (nbf or iat in the future).") from exc
        except jwt.InvalidAudienceError as exc:
            raise _invalid(f"The bearer token is not meant for this service: its audience "
                           f"must be {self.audience}.") from exc
        except jwt.InvalidIssuerError as exc:
            raise _invalid(f"The bearer token was not issued by {self.issuer}.") from exc
        except jwt.InvalidSignatureError as exc:
            raise _invalid("The bearer token's signature does not verify.") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"The bearer token lacks the {exc.claim} claim.") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise _invalid("The bearer token's algorithm does not match its signing key.") from exc
        except jwt.PyJWTError as exc:
            raise _invalid(f"The bearer token is not valid: {exc}.") from exc
        return TokenIdentity(claims["iss"], claims["sub"])

    def _key(self, kid: str) -> PyJWK:
        key = self._keys_in_file(self._file).get(kid) if self._file is not None else None
        if key is None and self._client is not None:
            key = self._key_at_url(self._client, kid)
        if key is None:
            raise _invalid(f"The bearer token's signing key {kid[:64]!r} is not one of the "
                           "identity provider's keys.")
        return key

    def _keys_in_file(self, path: Path) -> dict[str, PyJWK]:
        """The file's signing keys, read again whenever the file changes (key rotation)."""
        try:
            modified = path.stat().st_mtime_ns
            if modified != self._file_keys[0]:
                self._file_keys = (modified, _signing_keys(PyJWKSet.from_json(path.read_text())))
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise OidcUnavailable(f"The JWKS file {path} cannot be read: {exc}") from exc
        return self._file_keys[1]

    @staticmethod
    def _key_at_url(client: PyJWKClient, kid: str) -> PyJWK | None:
        try:
            key = client.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as exc:
            raise OidcUnavailable(f"The identity provider's keys cannot be fetched from "
                                  f"{client.uri}: {exc}") from exc
        except (jwt.PyJWKSetError, ValueError) as exc:
            raise OidcUnavailable(f"The identity provider's JWKS at {client.uri} is not "
                                  f"usable: {exc}") from exc
        except jwt.PyJWKClientError as exc:
            log.info("bearer token with unknown signing key: %s", exc)
            return None
        return key if key.algorithm_name in ALGORITHMS else None

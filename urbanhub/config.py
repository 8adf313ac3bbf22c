"""Settings read from ``URBANHUB_*`` environment variables (see README)."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="URBANHUB_", extra="ignore")

    database_url: str = "sqlite:///urbanhub.db"
    mqtt_url: str | None = "mqtt://127.0.0.1:1883"
    mqtt_topic_root: str = "urbanhub"
    mqtt_client_id: str = "urbanhub-hub"
    mqtt_session_expiry_s: int = 7 * 24 * 3600  # how long the broker keeps our queue offline
    mqtt_keepalive_s: int = 30
    mqtt_max_pending: int = 20000  # unacknowledged messages in the hub (MQTT Receive Maximum)
    max_body_bytes: int = 16 * 1024 * 1024
    max_page_size: int = 1000
    default_page_size: int = 20
    context_fetch_timeout_s: float = 5.0
    ingest_batch_size: int = 5000
    ingest_flush_interval_s: float = 0.2
    disposal_interval_s: float = 3600.0  # disposal inside `serve`; 0 disables it
    compaction_interval_s: float = 3600.0  # rollup compaction inside `serve`; 0 disables it
    log_format: str = "auto"  # "json", "console" or "auto" (console when a terminal)
    log_level: str = "INFO"
    # OpenID Connect: bearer tokens of this issuer, for this audience, signed by a key of the
    # JWKS file and/or URL, authenticate members linked to their account (README).
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_file: str | None = None
    oidc_jwks_url: str | None = None
    # Pseudonymisation keys (id -> secret, hex or text, JSON in the environment) and the one
    # new reads use; without keys, one is created in pseudonym_key_file (README).
    pseudonym_keys: dict[str, str] = {}
    pseudonym_key_id: str | None = None
    pseudonym_key_file: str = "urbanhub-pseudonym.key"
    # Access decisions are appended to the audit trail in batches this often.
    decision_audit_interval_s: float = 0.5


@lru_cache
def get_settings() -> Settings:
    return Settings()

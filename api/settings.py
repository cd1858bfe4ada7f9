"""Configuration from the environment, read once at start-up."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters import tracing
from adapters.credentials import check_jwt_key
from adapters.event_store import StreamSettings
from api.client_address import TrustedProxies
from domain.access import Role

LOG_FORMATS = ("auto", "json", "console")
# Where a seed adapter is served: "on" (the seed's own paths, at the root), "off", or a prefix.
SEED_PREFIX = re.compile(r"^(/[A-Za-z0-9._-]+)+$")
ROLES = tuple(role.value for role in Role)


def seed_mount(name: str, value: str) -> str | None:
    """The path prefix a seed adapter is mounted under ("" for the root), or None when off."""
    if value == "on":
        return ""
    if value == "off":
        return None
    if SEED_PREFIX.match(value):
        return value
    raise ValueError(f"{name} must be on, off or a path prefix such as /idle, not {value!r}")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _path(name: str) -> Path | None:
    return Path(value) if (value := os.environ.get(name)) else None


def _byte_limit(name: str) -> int:
    """A positive number of bytes, or -1 (no limit) when unset: a limit of 0 or less would
    refuse every event, so it stops the service at start instead."""
    raw = os.environ.get(name)
    if not raw:
        return -1
    if not (raw.isascii() and raw.isdigit()) or int(raw) <= 0:
        raise ValueError(f"{name} must be a positive number of bytes, not {raw!r}")
    return int(raw)


def _jwt_key() -> str | None:
    """HS256 takes a shared secret; RS256 a PEM public key, inline or from a file."""
    if secret := os.environ.get("JETFLOW_JWT_SECRET"):
        return secret
    if path := os.environ.get("JETFLOW_JWT_PUBLIC_KEY_FILE"):
        return Path(path).read_text()
    return os.environ.get("JETFLOW_JWT_PUBLIC_KEY") or None


def _tracing() -> str:
    """Off unless asked for: by name, or by the standard OTLP endpoint variables."""
    if mode := os.environ.get("JETFLOW_TRACING"):
        return mode
    otlp = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return "otlp" if any(os.environ.get(name) for name in otlp) else "off"


@dataclass(frozen=True)
class Settings:
    nats_url: str | None = None
    # The service's own credentials on an external server (NATS_URL); the embedded server's
    # are generated into the data folder.
    nats_seed_file: Path | None = None
    nats_creds: Path | None = None
    data_dir: Path = Path("data")
    db_url: str | None = None
    stream: str = "JETFLOW"
    stream_replicas: int = 1
    # The event stream's own byte limit (-1: none); past it appends answer 507, and the rest of
    # the server's store stays free for the idempotency bucket and other streams.
    stream_max_bytes: int = -1
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    lease_grace_s: float = 30.0
    node_silence_s: float = 30.0
    timer_interval_s: float = 1.0
    wait_max_s: float = 5.0
    projection_batch: int = 500
    embedded_nats_port: int = -1
    hardware_configs: Path | None = None
    secret_key: str | None = None
    max_concurrent_deployments: int = 3
    max_deployments_per_user: int = 2
    deployment_reservation_s: float = 60.0
    webhook_secret: str | None = None
    webhook_max_attempts: int = 6
    webhook_backoff_s: float = 0.5
    webhook_timeout_s: float = 5.0
    webhook_concurrency: int = 64
    # Networks and hosts webhooks may reach besides public addresses (comma-separated).
    webhook_allow: str = ""
    upload_expires_s: float = 86_400.0
    upload_max_size: int = 10 * 1024**3
    # Bytes one owner's uploads may hold, unfinished and stored; 0: no quota.
    user_storage_quota_bytes: int = 0
    live_queue: int = 1000
    # Live feeds (SSE, WebSocket) open at once per credential and in all; each holds a consumer.
    live_feeds_per_key: int = 20
    live_feeds_total: int = 1000
    jwt_algorithm: str = "HS256"
    jwt_key: str | None = None
    jwt_audience: str | None = None
    jwt_max_lifetime_s: float = 86_400.0
    rate_limit_per_minute: int = 600
    # Failed authentications per client address and minute before it is refused (429).
    auth_failures_per_minute: int = 30
    # Peers whose X-Forwarded-For names the client (comma-separated addresses and CIDRs).
    trusted_proxies: str = ""
    refer_rotate_s: float = 90.0
    refer_max_s: float = 600.0
    refer_max_holders: int = 10
    violations_file: Path | None = None
    key_cache_s: float = 5.0
    # /api/v1/health/ready fails while any projection has more events than this to apply.
    ready_max_lag_events: int = 1000
    # An event whose apply fails this many times on its own is parked (or halts a projection
    # whose policy is "halt"); a database that does not answer counts no attempt.
    park_after_attempts: int = 5
    # Where spans go: "off", "console" (stdout) or "otlp" (OTEL_EXPORTER_OTLP_ENDPOINT).
    tracing: str = "off"
    # An embedding program's own OpenTelemetry TracerProvider (the tests' in-memory exporter):
    # traces even with tracing "off", and stays the embedder's to shut down. Never read from the
    # environment. ``Any``: the extra may be absent, and Litestar resolves these annotations.
    tracer_provider: Any = None
    # `jetflow serve`'s log lines: "json", "console" (for people) or "auto" (console on a TTY).
    log_format: str = "auto"
    # The idle-compute seed's routes: "on" (its own paths at the root), "off", or a prefix.
    seed_idle_compute: str = "on"
    # The role unauthenticated callers get, as user "anonymous" (None: they are refused); for
    # the seeds' clients, which ran without credentials in development.
    anonymous_role: str | None = None

    def __post_init__(self) -> None:
        check_jwt_key(self.jwt_algorithm, self.jwt_key)
        TrustedProxies.parse(self.trusted_proxies)
        for name, least in (
            ("JETFLOW_LIVE_FEEDS_PER_KEY", self.live_feeds_per_key),
            ("JETFLOW_LIVE_FEEDS_TOTAL", self.live_feeds_total),
            ("JETFLOW_AUTH_FAILURES_PER_MINUTE", self.auth_failures_per_minute),
            ("JETFLOW_PARK_AFTER_ATTEMPTS", self.park_after_attempts),
        ):
            if least < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.user_storage_quota_bytes < 0:
            raise ValueError("JETFLOW_USER_STORAGE_QUOTA_BYTES must be 0 (no quota) or more")
        for name, value, allowed in (
            ("JETFLOW_TRACING", self.tracing, tracing.MODES),
            ("JETFLOW_LOG_FORMAT", self.log_format, LOG_FORMATS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        seed_mount("JETFLOW_SEED_IDLE_COMPUTE", self.seed_idle_compute)
        if self.anonymous_role is not None and self.anonymous_role not in ROLES:
            raise ValueError(
                f"JETFLOW_ANONYMOUS_ROLE must be one of {', '.join(ROLES)}, "
                f"not {self.anonymous_role!r}"
            )
        if self.ready_max_lag_events < 0:
            raise ValueError("JETFLOW_READY_MAX_LAG_EVENTS must be 0 or more")

    def stream_settings(self) -> StreamSettings:
        """The event stream as every jetflow command must declare it: the stream is updated to
        this at each start, so a command given other values would change it."""
        return StreamSettings(
            name=self.stream, replicas=self.stream_replicas, max_bytes=self.stream_max_bytes
        )

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            nats_url=os.environ.get("NATS_URL") or None,
            nats_seed_file=_path("JETFLOW_NATS_NKEY_SEED_FILE"),
            nats_creds=_path("JETFLOW_NATS_CREDS"),
            data_dir=Path(_env("JETFLOW_DATA_DIR", "data")),
            db_url=os.environ.get("JETFLOW_DB_URL") or None,
            stream=_env("JETFLOW_STREAM", "JETFLOW"),
            stream_replicas=int(_env("JETFLOW_STREAM_REPLICAS", "1")),
            stream_max_bytes=_byte_limit("JETFLOW_STREAM_MAX_BYTES"),
            http_host=_env("JETFLOW_HOST", "127.0.0.1"),
            http_port=int(_env("JETFLOW_PORT", "8000")),
            lease_grace_s=float(_env("JETFLOW_LEASE_GRACE_S", "30")),
            node_silence_s=float(_env("JETFLOW_NODE_SILENCE_S", "30")),
            timer_interval_s=float(_env("JETFLOW_TIMER_INTERVAL_S", "1")),
            wait_max_s=float(_env("JETFLOW_WAIT_MAX_S", "5")),
            projection_batch=int(_env("JETFLOW_PROJECTION_BATCH", "500")),
            embedded_nats_port=int(_env("JETFLOW_NATS_PORT", "-1")),
            hardware_configs=Path(p) if (p := os.environ.get("JETFLOW_HARDWARE_CONFIGS")) else None,
            secret_key=os.environ.get("JETFLOW_SECRET_KEY") or None,
            max_concurrent_deployments=int(_env("JETFLOW_MAX_CONCURRENT_DEPLOYMENTS", "3")),
            max_deployments_per_user=int(_env("JETFLOW_MAX_DEPLOYMENTS_PER_USER", "2")),
            deployment_reservation_s=float(_env("JETFLOW_DEPLOYMENT_RESERVATION_S", "60")),
            webhook_secret=os.environ.get("JETFLOW_WEBHOOK_SECRET") or None,
            webhook_max_attempts=int(_env("JETFLOW_WEBHOOK_MAX_ATTEMPTS", "6")),
            webhook_backoff_s=float(_env("JETFLOW_WEBHOOK_BACKOFF_S", "0.5")),
            webhook_timeout_s=float(_env("JETFLOW_WEBHOOK_TIMEOUT_S", "5")),
            webhook_concurrency=int(_env("JETFLOW_WEBHOOK_CONCURRENCY", "64")),
            webhook_allow=_env("JETFLOW_WEBHOOK_ALLOW", ""),
            upload_expires_s=float(_env("JETFLOW_UPLOAD_EXPIRES_S", "86400")),
            upload_max_size=int(_env("JETFLOW_UPLOAD_MAX_SIZE", str(10 * 1024**3))),
            user_storage_quota_bytes=int(_env("JETFLOW_USER_STORAGE_QUOTA_BYTES", "0")),
            live_queue=int(_env("JETFLOW_LIVE_QUEUE", "1000")),
            live_feeds_per_key=int(_env("JETFLOW_LIVE_FEEDS_PER_KEY", "20")),
            live_feeds_total=int(_env("JETFLOW_LIVE_FEEDS_TOTAL", "1000")),
            jwt_algorithm=_env("JETFLOW_JWT_ALGORITHM", "HS256"),
            jwt_key=_jwt_key(),
            jwt_audience=os.environ.get("JETFLOW_JWT_AUDIENCE") or None,
            jwt_max_lifetime_s=float(_env("JETFLOW_JWT_MAX_LIFETIME_S", "86400")),
            rate_limit_per_minute=int(_env("JETFLOW_RATE_LIMIT_PER_MINUTE", "600")),
            auth_failures_per_minute=int(_env("JETFLOW_AUTH_FAILURES_PER_MINUTE", "30")),
            trusted_proxies=_env("JETFLOW_TRUSTED_PROXIES", ""),
            refer_rotate_s=float(_env("JETFLOW_REFER_ROTATE_S", "90")),
            refer_max_s=float(_env("JETFLOW_REFER_MAX_S", "600")),
            refer_max_holders=int(_env("JETFLOW_REFER_MAX_HOLDERS", "10")),
            violations_file=Path(p) if (p := os.environ.get("JETFLOW_VIOLATIONS")) else None,
            key_cache_s=float(_env("JETFLOW_KEY_CACHE_S", "5")),
            ready_max_lag_events=int(_env("JETFLOW_READY_MAX_LAG_EVENTS", "1000")),
            park_after_attempts=int(_env("JETFLOW_PARK_AFTER_ATTEMPTS", "5")),
            tracing=_tracing(),
            log_format=_env("JETFLOW_LOG_FORMAT", "auto"),
            seed_idle_compute=_env("JETFLOW_SEED_IDLE_COMPUTE", "on"),
            anonymous_role=os.environ.get("JETFLOW_ANONYMOUS_ROLE") or None,
        )

"""Who may connect to NATS and what each identity may publish: nkey users in a generated config.

The embedded server authenticates every connection by an nkey (an Ed25519 key pair): the client
signs the server's nonce with its seed and the server checks the signature against the public
keys in ``authorization.conf``, so the server's files hold no secret at all. nkeys rather than
decentralised JWTs because jetflow runs one account on a server it configures itself: JWTs
would add an operator, an account and a resolver to say the same per-user permissions, while a
users list is reloaded in place (SIGHUP) when a user is added or revoked.

Identities, all in ``<data dir>/nats-auth/`` (files 0600, folder 0700):

* the service (``service.nk``): the only one that may publish ``ev.>`` (the event log) and use the
  JetStream API, and that may subscribe to ``cmd.>``; it answers requests through
  ``allow_responses`` instead of a publish permission on other users' inboxes;
* NATS users made by ``jetflow nats-users create`` (``users.json``: public key and role, never
  the seed): each may publish only its role's command subjects with its own name as the last
  token (``cmd.task.submit.alice``) and subscribe only its own inbox prefix (``_INBOX_alice.>``),
  so the service reads the sender from the subject and no user can read another's replies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import nats
import nkeys
from nats.aio.client import Client

AUTH_DIR_NAME = "nats-auth"
SERVICE_SEED = "service.nk"
USERS_FILE = "users.json"
AUTHORIZATION_FILE = "authorization.conf"
_REGISTRY_LOCK = ".users.lock"
_USER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class NatsRole(StrEnum):
    worker = "worker"  # worker and render nodes: lease, report, heartbeat
    producer = "producer"  # submit and cancel its own tasks


# The command subjects (without the user token) each role may publish. The service checks the
# same table when a request arrives, so a server configured by hand cannot widen it.
COMMANDS: dict[NatsRole, tuple[str, ...]] = {
    NatsRole.worker: (
        "cmd.task.lease",
        "cmd.task.progress",
        "cmd.task.result",
        "cmd.task.heartbeat",
        "cmd.render.lease",
        "cmd.render.finish",
        "cmd.render.fail",
    ),
    NatsRole.producer: ("cmd.task.submit", "cmd.task.cancel"),
}

SERVICE_PUBLISH = ("ev.>", "$JS.>", "$KV.>")
SERVICE_SUBSCRIBE = ("cmd.>", "_INBOX.>")


class NatsAuthError(ValueError):
    """A NATS user cannot be created or revoked as asked."""


def inbox_prefix(user: str) -> str:
    """The only inbox a user may subscribe to; its requests must use it for their replies."""
    return f"_INBOX_{user}"


def command_subject(prefix: str, user: str) -> str:
    return f"{prefix}.{user}"


def valid_user_name(name: str) -> bool:
    """A single subject token: no dots, wildcards or spaces."""
    return bool(_USER_NAME.fullmatch(name))


@dataclass(frozen=True)
class NatsCredentials:
    """How one client authenticates: an nkey seed file, or a ``.creds`` file (user JWT and
    seed) for a server run with decentralised auth; neither for an open server."""

    seed_file: Path | None = None
    creds_file: Path | None = None
    inbox_prefix: str | None = None

    @classmethod
    def configured(cls, seed_file: Path | None, creds_file: Path | None) -> NatsCredentials | None:
        """The service's identity on a server it does not run (``NATS_URL``), if one is set."""
        if seed_file is None and creds_file is None:
            return None
        return cls(seed_file=seed_file, creds_file=creds_file)

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` and FastStream's ``NatsBroker``."""
        options: dict[str, Any] = {}
        if self.seed_file is not None:
            options["nkeys_seed"] = str(self.seed_file)
        if self.creds_file is not None:
            options["user_credentials"] = str(self.creds_file)
        if self.inbox_prefix is not None:
            options["inbox_prefix"] = self.inbox_prefix
        return options


async def connect(
    servers: list[str], credentials: NatsCredentials | None, name: str, **options: Any
) -> Client:
    extra = credentials.options() if credentials is not None else {}
    return await nats.connect(servers, name=name, **extra, **options)


@dataclass(frozen=True)
class NatsUser:
    name: str
    role: NatsRole
    public_key: str
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def new_seed() -> tuple[bytes, str]:
    """A fresh user seed and its public key."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed, public_key_of(seed)


def public_key_of(seed: bytes) -> str:
    pair = nkeys.from_seed(bytearray(seed.strip()))
    try:
        return str(pair.public_key.decode())
    finally:
        pair.wipe()


def write_private(path: Path, data: bytes) -> None:
    """Written whole under a temporary name, readable by the owner only, then renamed: a
    reader (nats-server on reload) never sees half a file, and no other user ever can."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


class NatsAuthDir:
    """The NATS identities of one data folder and the server config generated from them."""

    def __init__(self, root: Path, service_seed_file: Path | None = None) -> None:
        # ``service_seed_file`` is a seed from the settings (an external server); by default the
        # service's own key lives in this folder and is generated on first use.
        self.root = Path(root).resolve()
        self._service_seed_file = service_seed_file
        self._cache: tuple[tuple[int, int], dict[str, NatsUser]] | None = None

    @property
    def service_seed_file(self) -> Path:
        return self._service_seed_file or self.root / SERVICE_SEED

    @property
    def users_file(self) -> Path:
        return self.root / USERS_FILE

    @property
    def authorization_file(self) -> Path:
        return self.root / AUTHORIZATION_FILE

    def _ensure_root(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def service_credentials(self) -> NatsCredentials:
        """The service's credentials, generating its own seed the first time (a configured
        seed file is never created: a missing one is an error nats-py reports at connect)."""
        if self._service_seed_file is None and not self.service_seed_file.exists():
            self._ensure_root()
            seed, _ = new_seed()
            write_private(self.service_seed_file, seed)
        return NatsCredentials(seed_file=self.service_seed_file)

    def users(self) -> dict[str, NatsUser]:
        """Every user ever created (revoked ones too), re-read only when the file changed, so
        the command path can ask on each request and see a revocation at once."""
        try:
            stat = self.users_file.stat()
        except FileNotFoundError:
            return {}
        version = (stat.st_mtime_ns, stat.st_size)
        if self._cache is not None and self._cache[0] == version:
            return self._cache[1]
        raw = json.loads(self.users_file.read_text())
        users = {
            name: NatsUser(
                name=name,
                role=NatsRole(entry["role"]),
                public_key=entry["public_key"],
                created_at=entry["created_at"],
                revoked_at=entry.get("revoked_at"),
            )
            for name, entry in raw["users"].items()
        }
        self._cache = (version, users)
        return users

    def active(self, name: str) -> NatsUser | None:
        user = self.users().get(name)
        return user if user is not None and user.active else None

    def create(self, name: str, role: NatsRole) -> bytes:
        """Record a user and return its seed, which is not kept anywhere: shown once."""
        if not valid_user_name(name):
            raise NatsAuthError(
                f"user name {name!r} must be 1-64 letters, digits, '_' or '-' (a subject token)"
            )
        with self._locked():
            users = dict(self.users())
            if name in users and users[name].active:
                raise NatsAuthError(f"NATS user {name} already exists (revoke it first)")
            seed, public = new_seed()
            users[name] = NatsUser(name, role, public, _now())
            self._save(users)
        return seed

    def revoke(self, name: str) -> NatsUser:
        with self._locked():
            users = dict(self.users())
            user = users.get(name)
            if user is None or not user.active:
                raise NatsAuthError(f"there is no active NATS user {name}")
            users[name] = NatsUser(user.name, user.role, user.public_key, user.created_at, _now())
            self._save(users)
        return users[name]

    def write_authorization(self) -> Path:
        """Generate ``authorization.conf`` from the service key and the active users."""
        self.service_credentials()
        service = public_key_of(self.service_seed_file.read_bytes())
        text = authorization_block(service, [u for u in self.users().values() if u.active])
        write_private(self.authorization_file, text.encode())
        return self.authorization_file

    def _save(self, users: dict[str, NatsUser]) -> None:
        body = {"users": {name: _entry(user) for name, user in sorted(users.items())}}
        write_private(self.users_file, json.dumps(body, indent=2).encode())
        self._cache = None
        self.write_authorization()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Two ``nats-users`` commands at once must not lose each other's change."""
        self._ensure_root()
        fd = os.open(self.root / _REGISTRY_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._cache = None
            yield
        finally:
            os.close(fd)


def authorization_block(service_public_key: str, users: list[NatsUser]) -> str:
    """The nats-server ``authorization`` block: public keys and permissions only."""
    entries = [
        _user_entry(
            "jetflow service: the event log, the JetStream API, every command subject",
            service_public_key,
            {
                "publish": {"allow": list(SERVICE_PUBLISH)},
                "subscribe": {"allow": list(SERVICE_SUBSCRIBE)},
                "allow_responses": True,
            },
        )
    ]
    for user in sorted(users, key=lambda u: u.name):
        entries.append(
            _user_entry(
                f"{user.name} ({user.role})",
                user.public_key,
                {
                    "publish": {
                        "allow": [command_subject(p, user.name) for p in COMMANDS[user.role]]
                    },
                    "subscribe": {"allow": [f"{inbox_prefix(user.name)}.>"]},
                },
            )
        )
    body = "\n".join(entries)
    return (
        "# Generated by jetflow from nats-auth/users.json; `jetflow nats-users` rewrites it.\n"
        f"authorization {{\n  users = [\n{body}\n  ]\n}}\n"
    )


def _user_entry(comment: str, public_key: str, permissions: dict[str, Any]) -> str:
    # JSON is valid nats-server config syntax, and quoting every subject keeps "$JS.>" literal.
    entry = f"{{ nkey: {json.dumps(public_key)}, permissions: {json.dumps(permissions)} }}"
    return f"    # {comment}\n    {entry}"


def _entry(user: NatsUser) -> dict[str, Any]:
    entry = asdict(user)
    del entry["name"]
    return entry


def _now() -> str:
    return datetime.now(UTC).isoformat()

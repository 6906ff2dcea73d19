"""Console accounts: scrypt password hashes (salted, memory-hard), read from the settings or a file.

A hash reads `scrypt$N$r$p$salt$hash` (salt and hash in base64), so the cost can rise later without
invalidating the hashes already issued. Passwords are never stored, logged or compared in the clear.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from gateway.config import ConfigError, ConsoleAccount, ConsoleSettings

ROLES = ("viewer", "operator")
_COST = (2 ** 14, 8, 1)  # N, r, p: about 16 MiB and a few tens of milliseconds per check
DEMO_ACCOUNT = "demo"


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: str
    password_hash: str

    @property
    def may_act(self) -> bool:
        """Operators change queues and see content; viewers only look."""
        return self.role == "operator"


def hash_password(password: str) -> str:
    """A new salted scrypt hash of a password, to put in the settings."""
    n, r, p = _COST
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether a password matches a stored hash, in constant time; a malformed hash matches nothing."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r),
                                p=int(p), maxmem=256 * 1024 * 1024, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


def _from_file(path: Path) -> list[ConsoleAccount]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"console.accounts_file {path}: not found"]) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"console.accounts_file {path}: {exc}"]) from None
    try:
        return [ConsoleAccount.model_validate(entry) for entry in data.get("accounts", [])]
    except ValueError as exc:
        raise ConfigError([f"console.accounts_file {path}: {exc}".splitlines()[0]]) from None


def demo_password(folder: Path) -> tuple[str, Path]:
    """The demo account's password: made once, kept (mode 0600) beside the store, so `make run` can log in."""
    path = folder / "console-demo-password"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(12) + "\n")
    return path.read_text(encoding="utf-8").strip(), path


def load_accounts(settings: ConsoleSettings, data_folder: Path) -> dict[str, Account]:
    """Every account by name: the settings', the accounts file's and, in demo, the demo operator."""
    entries = list(settings.accounts) + (_from_file(settings.accounts_file) if settings.accounts_file else [])
    accounts = {entry.name: Account(entry.name, entry.role, entry.password_hash.get_secret_value())
                for entry in entries}
    if len(accounts) < len(entries):
        raise ConfigError(["console.accounts: an account name appears twice"])
    if settings.demo_account and DEMO_ACCOUNT not in accounts:
        password, _ = demo_password(data_folder)
        accounts[DEMO_ACCOUNT] = Account(DEMO_ACCOUNT, "operator", hash_password(password))
    return accounts

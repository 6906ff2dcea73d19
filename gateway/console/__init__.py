"""The operator console: a web page served by the gateway on its own port, behind operator accounts."""
from __future__ import annotations

from gateway.console.accounts import Account, hash_password, load_accounts
from gateway.console.app import create_console_app

__all__ = ["Account", "create_console_app", "hash_password", "load_accounts"]

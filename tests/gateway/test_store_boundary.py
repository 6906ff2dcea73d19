"""The store boundary holds: only gateway/store knows the database, and SqliteStore is a Store."""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from gateway.encryption import PayloadCipher
from gateway.store import SqliteStore, Store, StoreUnavailable

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("adapters", "gateway", "mappings")
STORE_PACKAGE = ROOT / "gateway" / "store"
DATABASE_MODULES = {"sqlite3", "aiosqlite", "asyncpg", "psycopg", "psycopg2", "sqlalchemy"}
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE)\b",
                 re.DOTALL)


def modules_outside_the_store() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
            if not path.is_relative_to(STORE_PACKAGE)]


def database_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in names
                  if name.split(".")[0] in DATABASE_MODULES]
    return found


def sql_strings(path: Path) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{node.lineno}"
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value)]


def test_the_checks_see_what_they_look_for() -> None:
    """A check that cannot fail proves nothing: both find the store's own database code."""
    assert database_imports(STORE_PACKAGE / "sqlite.py")
    assert sql_strings(STORE_PACKAGE / "sqlite_admin.py")


def test_no_module_outside_the_store_imports_a_database_driver() -> None:
    assert [found for path in modules_outside_the_store() for found in database_imports(path)] == []


def test_no_module_outside_the_store_writes_sql() -> None:
    assert [found for path in modules_outside_the_store() for found in sql_strings(path)] == []


def test_the_store_interface_speaks_no_database_types() -> None:
    """Another database implements the same Protocol, so its signatures name no SQLite type."""
    tree = ast.parse((STORE_PACKAGE / "interface.py").read_text(encoding="utf-8"))
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert {"Document", "Receipt", "asyncio"} <= names
    assert database_imports(STORE_PACKAGE / "interface.py") == []
    assert {name for name in names if "sqlite" in name.lower() or name in {"Connection", "Cursor", "Row"}} == set()


def test_sqlite_store_has_every_store_method_with_the_same_signature() -> None:
    """mypy checks this statically (open_store returns a SqliteStore as a Store); this checks it at run time."""
    members = [name for name, value in vars(Store).items() if inspect.iscoroutinefunction(value)]
    assert "store_inbound" in members and "purge_expired" in members
    for name in members:
        implemented = getattr(SqliteStore, name)
        assert inspect.iscoroutinefunction(implemented), name
        assert inspect.signature(implemented) == inspect.signature(getattr(Store, name)), name


async def test_a_database_failure_reaches_callers_as_a_store_error(tmp_path: Path) -> None:
    store: Store = await SqliteStore(tmp_path / "gw.db", PayloadCipher(b"k" * 32)).open()
    await store.close()
    (tmp_path / "gw.db").write_bytes(b"not a database, as after a disk fault" * 100)
    with pytest.raises(StoreUnavailable, match="cannot open store"):
        await SqliteStore(tmp_path / "gw.db", PayloadCipher(b"k" * 32)).open()

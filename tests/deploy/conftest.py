"""Shared paths and tool lookups for the deployment tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"


def require_tool(name: str) -> str:
    """The tool's path; a missing tool fails the test, since `make test` installs it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make system-deps` (Debian package prometheus)")
    return path


def load_yaml(path: Path) -> object:
    """A YAML file of the repository, parsed."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))

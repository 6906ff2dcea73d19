"""The installed gateway's version, for `--version`, the logs, metrics and the FHIR capability statement."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def gateway_version() -> str:
    """The version of the installed package, so every report names the exact build."""
    try:
        return version("healthbook-gateway")
    except PackageNotFoundError:
        return "0.0.0+unknown"

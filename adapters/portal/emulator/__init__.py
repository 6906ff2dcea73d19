"""Emulator of both national portals for tests, benchmarks and the demo: validates, answers, counts, fails on demand."""
from __future__ import annotations

from adapters.portal.emulator.app import create_emulator_app
from adapters.portal.emulator.cli import main
from adapters.portal.emulator.state import EmulatorConfig, Faults

__all__ = ["EmulatorConfig", "Faults", "create_emulator_app", "main"]

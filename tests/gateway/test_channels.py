"""The channel registry is the one place that names a channel; settings and clients follow it."""
from __future__ import annotations

from pathlib import Path

from gateway.channels import CHANNELS, channel_settings, open_channels
from gateway.config import ChannelSettings, HubChannelSettings, PortalSettings
from gateway.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def test_every_portal_settings_section_has_its_channels() -> None:
    sections = [spec.section for spec in CHANNELS]  # BHXH is two: check-ins and the episode files
    assert set(sections) == set(PortalSettings.model_fields)
    assert len({spec.name for spec in CHANNELS}) == len(CHANNELS)
    for spec in CHANNELS:
        assert isinstance(channel_settings(PortalSettings(), spec), ChannelSettings)


def test_channel_names_are_spelled_only_in_the_registry() -> None:
    registry = ROOT / "gateway" / "channels.py"
    for spec in CHANNELS:
        spelled = sorted(str(path.relative_to(ROOT)) for layer in ("gateway", "adapters", "mappings")
                         for path in (ROOT / layer).rglob("*.py") if spec.name in path.read_text(encoding="utf-8"))
        assert spelled == [str(registry.relative_to(ROOT))], spec.name


async def test_only_enabled_channels_are_opened_each_under_its_registered_name() -> None:
    opened = open_channels(PortalSettings(hub=HubChannelSettings(enabled=False)), Metrics())
    try:
        hub = next(spec for spec in CHANNELS if spec.section == "hub")
        assert set(opened) == {spec.name for spec in CHANNELS} - {hub.name}
        assert all(channel.name == name for name, channel in opened.items())
    finally:
        for channel in opened.values():
            await channel.close()

"""The demo facility and its site mappings (deploy's demo configuration), as the builder tests use them."""
from __future__ import annotations

from gateway.config import DEMO_SITE_MAPPINGS, SiteMappingSettings
from mappings.model import FacilityInfo

FACILITY = FacilityInfo(name="Benh vien Demo", bhxh_code="40001", moh_facility_id="4000000000123")
SITE = SiteMappingSettings(file=DEMO_SITE_MAPPINGS).as_mapping()

"""XML 130 (QĐ 130/4750/3176) tables and the GIAMDINHHS envelope for the BHXH reception portal."""
from mappings.xml130.envelope import build_envelope
from mappings.xml130.tables import ClaimResult, build_claim, build_tables

__all__ = ["ClaimResult", "build_claim", "build_envelope", "build_tables"]

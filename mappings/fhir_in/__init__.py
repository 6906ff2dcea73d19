"""FHIR R4 input: Bundles and single resources into health-book fragments; OperationOutcome for errors."""
from mappings.fhir_in.mapper import map_fhir
from mappings.fhir_in.outcome import operation_outcome

__all__ = ["map_fhir", "operation_outcome"]

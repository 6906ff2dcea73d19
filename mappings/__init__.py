"""Pure mappings from HL7 v2 and FHIR inputs to health-book documents and national encodings."""

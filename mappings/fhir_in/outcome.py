"""Issues as a FHIR OperationOutcome for the HTTP adapter."""
from __future__ import annotations

from typing import Any

from mappings.model import Issue

ISSUE_SYSTEM = "urn:hbgw:issue"
ISSUE_TYPE = {"required": "required", "unsupported-message-type": "not-supported",
              "unsupported-resource": "not-supported", "unsupported-bundle": "not-supported",
              "unsupported-version": "not-supported", "no-episode": "informational",
              "implausible-value": "value", "invalid-number": "value", "discharge-before-admission": "invariant",
              "unresolved-reference": "not-found", "duplicate-control-id": "duplicate"}


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """The OperationOutcome answering a FHIR request: one issue per Issue, `expression` = its path."""
    if not issues:
        return {"resourceType": "OperationOutcome",
                "issue": [{"severity": "information", "code": "informational", "diagnostics": "accepted"}]}
    return {"resourceType": "OperationOutcome", "issue": [{
        "severity": issue.severity, "code": ISSUE_TYPE.get(issue.code, "invalid"),
        "details": {"coding": [{"system": ISSUE_SYSTEM, "code": issue.code}], "text": issue.message},
        "expression": [issue.location],
    } for issue in issues]}

"""What the FHIR intake keeps of an answer beside the stored message, and the HTTP answer rebuilt from it.

The kept answer is stored unencrypted, as the HL7 ACKs are, so it holds only the status, a server-generated
id, the version and time, and the OperationOutcome or response Bundle (element paths and issue texts), never
the resource. `Prefer: return=representation` is answered by rebuilding the resource from the request in
hand (a retransmission carries it again) with the kept id, version and time: the resource itself stays only
in the encrypted payload. A client-assigned id (PUT) is not kept either: it may be a personal number, and
every request for it names it in its URL.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

from adapters.fhir_api import FhirAnswer, FhirRequest, to_json

_MARK = "hbgw-fhir-answer"


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    """The answer to one stored FHIR request: `body` is the outcome or response Bundle (None: no body)."""

    status: int
    body: dict[str, Any] | None
    resource_id: str = ""  # a server-assigned id; "" for transactions, batches and client-assigned ids
    version: str = ""
    at: float = 0.0  # when it was committed (epoch seconds)

    def seal(self) -> bytes:
        """The bytes kept in the store's ack column."""
        return to_json({_MARK: 1, "status": self.status, "body": self.body, "id": self.resource_id,
                        "version": self.version, "at": self.at})


def unseal(kept: bytes) -> KeptAnswer:
    """The kept answer; bytes stored before answers were kept so are the body itself."""
    try:
        value = json.loads(kept) if kept else None
    except ValueError:
        value = None
    if isinstance(value, dict) and value.get(_MARK) == 1:
        return KeptAnswer(int(value["status"]), value.get("body"), str(value.get("id", "")),
                          str(value.get("version", "")), float(value.get("at", 0.0)))
    return KeptAnswer(200, value if isinstance(value, dict) else None)


def respond(kept: KeptAnswer, request: FhirRequest, *, replay: bool = False) -> FhirAnswer:
    """The HTTP answer as the client's Prefer asks; a replay answers 200 with the original id and version."""
    resource_type = request.resource["resourceType"]
    resource_id = request.resource_id or kept.resource_id
    location = ""
    if resource_id:
        location = f"{resource_type}/{resource_id}" + (f"/_history/{kept.version}" if kept.version else "")
    body = to_json(kept.body) if kept.body is not None else b""
    if request.prefer_minimal:
        body = b""
    elif request.prefer_representation and resource_id:
        meta = {**(request.resource.get("meta") or {}), "versionId": kept.version or "1",
                "lastUpdated": datetime.fromtimestamp(kept.at, UTC).isoformat(timespec="milliseconds")}
        body = to_json({**request.resource, "id": resource_id, "meta": meta})
    return FhirAnswer(200 if replay else kept.status, body, location,
                      etag=f'W/"{kept.version}"' if kept.version else "",
                      last_modified=formatdate(kept.at, usegmt=True) if kept.at else "")

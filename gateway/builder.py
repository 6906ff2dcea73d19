"""What the signing stage calls: each document signed with the facility that treated the patient.

SubmissionBuilder pickles as its settings alone, so each signing process (signing_stage.py) loads the
facilities' and practitioners' keys from the same settings on first use, instead of receiving keys.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.portal.base import Submission
from gateway.channels import build_submissions
from gateway.config import PortalSettings, Settings
from gateway.facilities import Facilities, UnknownFacility
from gateway.signing import Signer, load_signer
from gateway.signing_stage import BuildSubmissions
from gateway.submissions import SubmissionBuildError
from mappings.model import Document


def submissions_builder(facilities: Facilities, portal: PortalSettings,
                        practitioners: Mapping[str, Signer] | None = None,
                        site: Mapping[str, Any] | None = None) -> BuildSubmissions:
    """Sign each document with the facility that treated the patient, its codes in what is signed; `site`
    holds the site mappings ([site_mappings]) its XML 130 tables need."""
    def build(document: Document, previous: Document | None) -> list[Submission]:
        try:
            facility = facilities.of_document(document)
        except UnknownFacility as exc:  # the settings lost the facility: park it, naming why
            raise SubmissionBuildError(str(exc)) from None
        return build_submissions(document, facility.info, facility.signer, portal, practitioners=practitioners,
                                 previous=previous, site=site)
    return build


class SubmissionBuilder:
    """submissions_builder from the settings, its keys loaded where it is first called."""

    def __init__(self, settings: Settings, facilities: Facilities | None = None,
                 practitioners: Mapping[str, Signer] | None = None) -> None:
        self._settings = settings
        self._facilities = facilities
        self._practitioners = practitioners
        self._build: BuildSubmissions | None = None

    @property
    def uses_token(self) -> bool:
        """Whether a key is on a hardware token, whose session cannot be shared with another process."""
        s = self._settings
        sources = [s.signing, *(getattr(entry, "signing", None) for entry in s.facilities),
                   *s.portal.hub.practitioner_signers]
        return any(source is not None and source.source == "pkcs11" for source in sources)

    def __call__(self, document: Document, previous: Document | None) -> list[Submission]:
        """The document signed for each channel that has something for this version."""
        if self._build is None:
            facilities = self._facilities or Facilities(self._settings, load_signer)
            practitioners = self._practitioners if self._practitioners is not None else {
                doctor.licence: load_signer(doctor) for doctor in self._settings.portal.hub.practitioner_signers}
            self._build = submissions_builder(facilities, self._settings.portal, practitioners,
                                              self._settings.site_mappings.as_mapping())
        return self._build(document, previous)

    def __getstate__(self) -> Settings:
        return self._settings

    def __setstate__(self, settings: Settings) -> None:
        self._settings = settings
        self._facilities = None
        self._practitioners = None
        self._build = None

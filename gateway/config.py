"""All settings in one typed object: one TOML file plus HBGW_-prefixed environment variables.

Environment variables name a setting by its path with `__` between levels, for example
`HBGW_MLLP__PORT=2576` or `HBGW_PORTAL__BHXH__PASSWORD=...`. Values are parsed as JSON where they
can be (numbers, booleans, lists), and taken as plain strings otherwise.
"""
from __future__ import annotations

import codecs
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from mappings.vn import codes
from mappings.vn.identifiers import bhxh_facility_code_issues, moh_facility_id_issues

ENV_PREFIX = "HBGW_"
DEMO_SITE_MAPPINGS = Path(__file__).with_name("demo_site_mappings.toml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class TlsSettings(_Section):
    """TLS for a listener; client certificates are verified against `client_ca_file`, required on request."""

    enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    require_client_cert: bool = False

    @model_validator(mode="after")
    def _complete(self) -> TlsSettings:
        if self.enabled and (self.cert_file is None or self.key_file is None):
            raise ValueError("enabled TLS needs cert_file and key_file")
        if self.require_client_cert and self.client_ca_file is None:
            raise ValueError("require_client_cert needs client_ca_file, the CA that issues client certificates")
        return self


def _sender_name(value: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", value):
        raise ValueError("must be 1 to 64 letters, digits or _ . : - (it becomes a metrics label)")
    if value == "other":
        raise ValueError('"other" is reserved for senders not named in the settings')
    return value


class SenderRule(_Section):
    """One allowed MLLP sender: any field left empty matches anything."""

    name: str = ""  # for metrics; empty: the first field set among the four below
    address: str = ""  # IP address or CIDR network of the sending host
    sending_application: str = ""  # MSH-3.1
    sending_facility: str = ""  # MSH-4.1 (or MSH-4.2, the facility id)
    client_cert_cn: str = ""  # subject CN of the sender's verified TLS client certificate
    silent_after_minutes: float = Field(0, ge=0)  # alert when nothing came for this long; 0: never

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _sender_name(value)

    @property
    def label(self) -> str:
        """The sender's name in metrics: set in the settings, so the label values stay few."""
        return (self.name or self.sending_application or self.sending_facility or self.client_cert_cn
                or self.address or "other")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError("must be an IP address or a CIDR network such as 10.1.2.0/24") from None
        return value


def _known_codec(value: str) -> str:
    try:
        codecs.lookup(value)
    except LookupError:
        raise ValueError(f"unknown character set {value!r} (use a Python codec name such as cp1258)") from None
    return value


class FacilitySettings(_Section):
    """The facility as the two national portals know it; the two codes are different things."""

    name: str = "Demo hospital (not for production)"
    bhxh_code: str = "40001"
    moh_facility_id: str = "4000000000123"
    tax_code: str = ""
    # XML 130 MA_TTDV: the health id (BHXH number) of the facility head or delegate; BHXH refuses it empty.
    head_code: str = ""
    # BHXH form field maTinh: the facility's 2-digit province code; empty: the first two characters of
    # bhxh_code, as public clients derive it (tracnn/qlbv_public BHYTXmlSubmitService::getMaTinhFromConfig).
    province_code: str = ""

    @field_validator("province_code")
    @classmethod
    def _province(cls, value: str) -> str:
        if value and not re.fullmatch(r"\d{2}", value):
            raise ValueError("must be the 2-digit province code (maTinh), e.g. \"01\"")
        return value

    @field_validator("bhxh_code")
    @classmethod
    def _bhxh_code(cls, value: str) -> str:
        if bhxh_facility_code_issues(value, "facility.bhxh_code"):
            raise ValueError("must be the 5-character BHXH facility code (MACSKCB), not the 13-digit MoH id")
        return value

    @field_validator("moh_facility_id")
    @classmethod
    def _moh_id(cls, value: str) -> str:
        if moh_facility_id_issues(value, "facility.moh_facility_id"):
            raise ValueError("must be the 13-digit Ministry of Health facility id, not the BHXH code")
        return value


class MllpSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(2575, ge=0, le=65535)
    max_message_bytes: int = Field(4 * 1024 * 1024, gt=0)
    idle_timeout_seconds: float = Field(600.0, gt=0)
    # A connection must complete its first frame, and each frame it starts, within this time.
    frame_timeout_seconds: float = Field(30.0, gt=0)
    max_connections: int = Field(256, gt=0)
    max_connections_per_host: int = Field(16, gt=0)
    default_charset: str = "utf-8"
    # Per-sender legacy charset, keyed by MSH-3.1 or MSH-4.1 (e.g. cp1258): used when MSH-18 is empty,
    # unknown, or does not match the bytes; a message that fits its declared MSH-18 is read as declared.
    sender_charsets: dict[str, str] = Field(default_factory=dict)
    allowed_senders: list[SenderRule] = Field(default_factory=list)  # empty: everyone may send
    # MSH-11 processing ids taken; test (T) and debugging (D) messages are refused so that test
    # patients never reach a citizen's health book.
    accepted_processing_ids: list[str] = Field(default_factory=lambda: ["P"])
    # MSH-15 NE/ER/SU withhold commit ACKs as HL7 table 0155 says; false answers every message whatever
    # MSH-15 asks, for a sender that sets NE yet waits for an answer.
    honour_accept_ack_type: bool = False
    tls: TlsSettings = Field(default_factory=TlsSettings)

    @field_validator("default_charset")
    @classmethod
    def _default_charset(cls, value: str) -> str:
        return _known_codec(value)

    @field_validator("sender_charsets")
    @classmethod
    def _sender_charsets(cls, value: dict[str, str]) -> dict[str, str]:
        for codec in value.values():
            _known_codec(codec)
        return value


class FhirSender(_Section):
    """One FHIR client: a bearer token (kept as its SHA-256) or a client-certificate subject CN."""

    name: str
    token_sha256: str = ""
    client_cert_cn: str = ""
    resource_types: list[str] = Field(default_factory=list)  # empty: every type the FHIR API accepts
    silent_after_minutes: float = Field(0, ge=0)  # alert when nothing came for this long; 0: never

    @field_validator("token_sha256")
    @classmethod
    def _token_digest(cls, value: str) -> str:
        if value and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("must be the SHA-256 of the token as 64 hex digits, never the token itself")
        return value.lower()


class HttpSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_connections: int = Field(256, gt=0)
    max_connections_per_host: int = Field(32, gt=0)
    # A connection must send each request's head within this time of connecting or of its last answer.
    request_timeout_seconds: float = Field(30.0, gt=0)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    # FHIR clients; empty means no authentication (demo only, logged as a warning at start).
    fhir_senders: list[FhirSender] = Field(default_factory=list)


class StoreSettings(_Section):
    # sqlite: one file, one serving gateway; postgresql: several gateway nodes on one database server.
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    path: Path = Path("var/gateway.db")
    # postgresql: a libpq connection URI (postgresql://user:password@host:5432/db?sslmode=verify-full), in
    # HBGW_STORE__DSN or in a file readable only by the gateway's user (dsn_file), never in the TOML file.
    dsn: SecretStr | None = None
    dsn_file: Path | None = None
    pool_size: int = Field(10, gt=0)  # postgresql: connections per gateway node
    # AES-256-GCM key for payloads at rest: base64 of 32 bytes, from a file or HBGW_STORE__ENCRYPTION_KEY.
    encryption_key_file: Path | None = None
    encryption_key: SecretStr | None = None
    group_commit_max_batch: int = Field(512, gt=0)
    # Extra wait for more writes before a commit when only one is queued; 0: a batch is whatever arrived
    # while the previous commit ran, which needs no waiting and measured as fast at every load.
    group_commit_max_delay_ms: float = Field(0.0, ge=0)
    # sqlite: fsync also the commits that hold only the pipeline's bookkeeping (claims, finished mappings,
    # retries). Off: they wait for no disk, so an acknowledgement never waits behind their fsync; a power cut
    # (not a crash of the process) may then undo the newest of that bookkeeping, and the pipeline does it
    # again. Acknowledged messages, portal receipts and operators' actions are always fsynced.
    fsync_every_commit: bool = False
    lease_seconds: float = Field(120.0, gt=0)
    retention_days: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _backend(self) -> StoreSettings:
        if self.backend == "postgresql":
            if self.dsn is None and self.dsn_file is None:
                raise ValueError("backend postgresql needs dsn (HBGW_STORE__DSN) or dsn_file")
            if self.encryption_key is None and self.encryption_key_file is None:
                raise ValueError("backend postgresql needs encryption_key or encryption_key_file: every node"
                                 " must seal and open payloads with the same key, so none is generated")
        return self

    def location(self) -> str:
        """Where the store is, for logs and `check-config`: the file, or the backend (the DSN holds a password)."""
        return str(self.path) if self.backend == "sqlite" else "postgresql (store.dsn)"

    def postgres_dsn(self) -> str:
        """The connection URI, read from the file at start so a rotated password needs only a restart."""
        if self.dsn is not None:
            return self.dsn.get_secret_value()
        assert self.dsn_file is not None
        return self.dsn_file.read_text(encoding="utf-8").strip()


class PipelineSettings(_Section):
    workers: int = Field(16, gt=0)  # submissions in flight at once, never two of one patient
    mapping_processes: int = Field(1, ge=0)  # 0 maps in a thread of this process
    signing_processes: int = Field(1, ge=0)  # 0 signs in a thread of this process (always so for pkcs11)
    # 1: the portal clients (HTTP exchanges) run in a process of their own (hbgw-send); 0: in this process
    delivery_processes: int = Field(1, ge=0, le=1)
    poll_interval_seconds: float = Field(0.5, gt=0)
    # After a batch smaller than the mapping batch (the stage has caught up), wait this long before the next
    # claim so that messages arriving one by one are mapped, signed and committed together; 0: at once.
    mapping_linger_seconds: float = Field(0.05, ge=0, le=5)
    backoff_base_seconds: float = Field(2.0, gt=0)
    backoff_max_seconds: float = Field(600.0, gt=0)


class SigningSettings(_Section):
    """Where the facility's certificate and key come from; `dev` generates a self-signed pair."""

    source: Literal["dev", "pem", "pkcs12", "pkcs11"] = "dev"
    dev_dir: Path = Path("var/dev-cert")
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: SecretStr | None = None
    pkcs12_file: Path | None = None
    pkcs12_password: SecretStr | None = None
    pkcs11_module: Path | None = None
    pkcs11_token_label: str = ""
    pkcs11_pin: SecretStr | None = None
    pkcs11_key_label: str = ""
    pkcs11_cert_file: Path | None = None


class PractitionerSigner(SigningSettings):
    """A doctor who signs their own blocks of a health-check form: their licence and where their key is."""

    licence: str  # as the HIS sends it: OBX-16, OBR-16, PV1-7, FHIR performer / resultsInterpreter

    @field_validator("licence")
    @classmethod
    def _licence(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be the practitioner's licence number")
        return value.strip()


class ChannelSettings(_Section):
    """One national channel's endpoint and credentials; every URL path is configurable."""

    enabled: bool = True
    base_url: str = "http://127.0.0.1:8090"
    username: str = "demo"
    password: SecretStr = SecretStr("demo")
    timeout_seconds: float = Field(30.0, gt=0)
    max_concurrency: int = Field(4, gt=0)
    batch_size: int = Field(1, gt=0)
    ca_bundle: Path | None = None
    proxy: str = ""


class BhxhChannelSettings(ChannelSettings):
    """The BHXH portal's paths and form values, as the public references show them (adapters.portal.bhxh_wire)."""

    token_path: str = "/api/token/take"
    checkin_path: str = "/api/qd130/checkInKcbQd3176"
    submit_path: str = "/api/qd130/guiHoSoXmlQD3176"
    checkin_file_type: str = "0"  # form field loaiHoSo of an XML0 check-in
    submit_file_type: str = "130"  # form field loaiHoSo of an episode's XML 130 files
    checkin_enabled: bool = True  # send XML0 check-ins at all
    # "finished": an episode's files go once it is finished (discharge, visit end), then again for each
    # correction; "every_version": every version goes at once (for tests and load runs, not for BHXH).
    send_files: Literal["finished", "every_version"] = "finished"
    # Hold a finished episode's files this long for late charges; a newer version restarts the wait.
    claim_delay_seconds: float = Field(0.0, ge=0)


class HubChannelSettings(ChannelSettings):
    """The Ministry of Health hub (QĐ 1551 PL02 as amended by QĐ 2062); the open points are settings."""

    login_path: str = "/api/auth/login"
    push_path: str = "/api/platform/data-sync/push"
    service_type: str = "100"
    # QĐ 1551 PL02 §4.2 example "TDLBYT"; a vendor's sandbox request (VIMES Postman_example.txt) sent "TTYQG".
    receiver_id: str = "TDLBYT"
    txn_type: str = "sync_checkup"
    # Immunizations: PORTAL_API.md names no channel, so they go through the same signed data-sync push
    # carrying the canonical FHIR document; confirm the transaction type with the Ministry before go-live.
    immunization_txn_type: str = "sync_immunization"
    # header.version: PL02 §4.1 answer example "1.0.3"; the VIMES sandbox request sent "1.0.6".
    message_version: str = "1.0.3"
    msg_type: str = "101"  # PL02 §4.2: 101 = a sender's data-sync message
    # `data`: the Base64 text itself (PL02 §4.2, the VIMES request), or {"file_content": Base64} (VIMES notes
    # for QĐ 2062, not seen in a primary text).
    data_shape: Literal["base64", "file_content"] = "base64"
    # What `data` carries: the single form (QĐ 1551 PL02 §5) or a KHAMSUCKHOE envelope of sub-files XML1, XML2,
    # ... with CHUKYDONVI (QĐ 2062 as vendor docs describe it; mappings/checkup/packaging.json).
    packaging: Literal["form", "khamsuckhoe"] = "form"
    # Header keys in the checksum: in the order sent (PL02: hash the JSON as sent, without whitespace) or sorted.
    checksum_key_order: Literal["as_sent", "sorted"] = "as_sent"
    # DOI_TUONG (1-14) and NGUON_KINH_PHI (1-5, 9) when the HIS sends none (OBX HBGW-KSK-DOI_TUONG,
    # HBGW-KSK-NGUON_KINH_PHI): 14 "other" and 9 "other" until the site sets its usual ones.
    default_doi_tuong: str = "14"
    default_nguon_kinh_phi: str = "9"
    # Doctors who sign their CKS_NGUOI_KHAM / CKS_NGUOI_KET_LUAN; those elements stay empty (as QĐ 1551
    # allows) for anyone not listed.
    practitioner_signers: list[PractitionerSigner] = Field(default_factory=list)

    @field_validator("default_doi_tuong")
    @classmethod
    def _doi_tuong(cls, value: str) -> str:
        if value not in {str(n) for n in range(1, 15)}:
            raise ValueError("must be a QĐ 1551 DOI_TUONG code, 1 to 14")
        return value

    @field_validator("default_nguon_kinh_phi")
    @classmethod
    def _nguon(cls, value: str) -> str:
        if value not in {"1", "2", "3", "4", "5", "9"}:
            raise ValueError("must be a QĐ 1551 NGUON_KINH_PHI code: 1, 2, 3, 4, 5 or 9")
        return value


class SiteItem(_Section):
    """One HIS charge or drug code as BHXH knows it (national code, cost group, catalogue data)."""

    code: str = Field(min_length=1, max_length=255)  # MA_DICH_VU, MA_VAT_TU or MA_THUOC
    group: str  # MA_NHOM
    name: str = ""
    unit: str = ""
    price: str = ""  # hospital price; a drug's tender price (used when the message carries none)
    price_bh: str = ""  # the BHYT price when it differs from `price`
    scope: Literal["1", "2", "3"] = "1"  # PHAM_VI: 1 within BHYT scope
    ratio: str = ""  # TYLE_TT_BH, percent; empty: 100 within scope
    strength: str = ""
    route: str = ""  # DUONG_DUNG, the national route code (e.g. 1.01)
    form: str = ""
    registration: str = ""
    tender: str = ""  # TT_THAU

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        if value not in codes.xml130("MA_NHOM"):
            raise ValueError("must be an XML 130 MA_NHOM cost group (1-18)")
        return value

    @field_validator("price", "price_bh", "ratio")
    @classmethod
    def _number(cls, value: str) -> str:
        if value and not re.fullmatch(r"\d{1,12}(\.\d{1,3})?", value):
            raise ValueError("must be a plain number with '.' before at most 3 decimals")
        return value


class LabTest(_Section):
    service: str = Field(min_length=1, max_length=15)  # XML4 MA_DICH_VU: the test's national service code
    indicator: str = Field(min_length=1, max_length=50)  # XML4 MA_CHI_SO: QĐ 1227 indicator code


def _entry(model: type[_Section], code: str, entry: dict[str, str]) -> dict[str, str]:
    """One site-mapping entry checked against its model; a problem names the HIS code and the field."""
    try:
        checked: dict[str, str] = model.model_validate(entry).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{code}.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    return checked


class SiteMappingSettings(_Section):
    """HIS codes to the national XML 130 codes; a code missing here parks the episode until it is added.

    `file` names a TOML file with the same four tables (a hospital's catalogue is long); tables written
    here are read after it and win.
    """

    file: Path | None = None
    wards: dict[str, str] = Field(default_factory=dict)  # PV1-3.1 / FT1-13 ward -> MA_KHOA K-code
    items: dict[str, dict[str, str]] = Field(default_factory=dict)  # HIS charge/drug code -> SiteItem fields
    lab_tests: dict[str, dict[str, str]] = Field(default_factory=dict)  # result code -> LabTest fields
    patient_categories: dict[str, str] = Field(default_factory=dict)  # PV1-20 -> MA_DOITUONG_KCB
    dispositions: dict[str, Literal["1", "2", "3", "4", "5"]] = Field(default_factory=dict)  # PV1-36 -> MA_LOAI_RV

    @field_validator("items")
    @classmethod
    def _items(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        return {code: _entry(SiteItem, code, entry) for code, entry in value.items()}

    @field_validator("lab_tests")
    @classmethod
    def _lab_tests(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        return {code: _entry(LabTest, code, entry) for code, entry in value.items()}

    @model_validator(mode="before")
    @classmethod
    def _from_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("file"):
            return data
        try:
            loaded = tomllib.loads(Path(data["file"]).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"site mappings file {data['file']}: {exc}") from None
        return _merge(loaded, data)

    @field_validator("wards")
    @classmethod
    def _wards(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [ward for ward, code in value.items() if not re.fullmatch(r"K[0-9]{2}[0-9A-Z.]{0,12}", code)]
        if bad:
            raise ValueError(f"wards {', '.join(sorted(bad)[:5])}: MA_KHOA must be a K-code (K01-K99, sub-codes)")
        return value

    @field_validator("patient_categories")
    @classmethod
    def _categories(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [key for key, code in value.items() if not codes.is_patient_category(code)]
        if bad:
            raise ValueError(f"patient_categories {', '.join(sorted(bad)[:5])}: not a QĐ 3276 code (1.1, 2, 3.12...)")
        return value

    def as_mapping(self) -> dict[str, Any]:
        """The plain dict the XML 130 mapping takes."""
        return self.model_dump(exclude={"file"}, exclude_defaults=False)


class PortalSettings(_Section):
    bhxh: BhxhChannelSettings = Field(default_factory=BhxhChannelSettings)
    hub: HubChannelSettings = Field(default_factory=HubChannelSettings)


class EmulatorSettings(_Section):
    """The portal emulator started inside `demo`; never in `serve`."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8090, ge=0, le=65535)


class ConsoleAccount(_Section):
    """One operator of the web console: viewers look, operators also act (retry, discard, show content)."""

    name: str = Field(min_length=1, pattern=r"^[\w.@-]+$")
    role: Literal["viewer", "operator"] = "viewer"
    # `healthbook-gateway console-password` prints one: scrypt$N$r$p$salt$hash (base64), never the password.
    password_hash: SecretStr

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: SecretStr) -> SecretStr:
        if not re.fullmatch(r"scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+", value.get_secret_value()):
            raise ValueError("must be a hash from `healthbook-gateway console-password`, never the password itself")
        return value


class ConsoleSettings(_Section):
    """The operator console: a web page on its own port, behind operator accounts."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    accounts: list[ConsoleAccount] = Field(default_factory=list)
    # A TOML file of [[accounts]] tables (name, role, password_hash), read at start, kept apart from settings.
    accounts_file: Path | None = None
    # `demo` only: an operator account "demo" with a random password written beside the store.
    demo_account: bool = False
    session_idle_minutes: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _someone_can_log_in(self) -> ConsoleSettings:
        if self.enabled and not (self.accounts or self.accounts_file or self.demo_account):
            raise ValueError("an enabled console needs accounts or accounts_file (see `console-password`)")
        return self


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class SecuritySettings(_Section):
    """Unsafe settings `serve` refuses unless allowed here on purpose; each allowed one is warned at every start."""

    allow_anonymous_fhir: bool = False  # no http.fhir_senders while listening beyond this host
    allow_dev_certificate: bool = False  # signing.source = "dev"
    allow_plain_http_portal: bool = False  # a portal base_url without https (other than this host)
    allow_demo_passwords: bool = False  # a portal password still "demo"
    allow_empty_head_code: bool = False  # facility.head_code empty while the BHXH channel is on


class FacilityEntry(FacilitySettings):
    """One of several facilities behind one gateway: its codes, who sends for it, its account and certificate."""

    # What names this facility in what it sends: MSH-4.1 or MSH-4.2 values, the MoH id of a FHIR
    # Encounter.serviceProvider, the namespace of its FHIR visit identifiers. Its moh_facility_id always counts.
    senders: list[str] = Field(default_factory=list)
    portal_username: str = ""  # its BHXH account; empty: [portal.bhxh] username and password
    portal_password: SecretStr | None = None
    signing: SigningSettings | None = None  # its certificate; none: the gateway's [signing]


class Settings(_Section):
    facility: FacilitySettings = Field(default_factory=FacilitySettings)
    # Several facilities (a hospital group, a provincial hub): when any is listed, [facility] is not used
    # and every message must name one of them.
    facilities: list[FacilityEntry] = Field(default_factory=list)
    mllp: MllpSettings = Field(default_factory=MllpSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    signing: SigningSettings = Field(default_factory=SigningSettings)
    portal: PortalSettings = Field(default_factory=PortalSettings)
    emulator: EmulatorSettings = Field(default_factory=EmulatorSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    site_mappings: SiteMappingSettings = Field(default_factory=SiteMappingSettings)

    @model_validator(mode="after")
    def _distinct_facilities(self) -> Settings:
        codes = [entry.bhxh_code for entry in self.facilities]
        if len(codes) != len(set(codes)):
            raise ValueError("facilities: two facilities share a bhxh_code")
        keys = [key for entry in self.facilities for key in {entry.moh_facility_id, *entry.senders}]
        if len(keys) != len(set(keys)):
            raise ValueError("facilities: a sender or moh_facility_id names two facilities")
        return self


class ConfigError(Exception):
    """Settings that cannot start the gateway; `problems` holds one line per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


_TEXT_TYPES = (str, SecretStr, Path)
_SECRET_WORDS = ("password", "pin", "secret", "token", "key")


def _field_type(path: list[str]) -> Any:
    """The annotation of the setting at `path`, unwrapped from Optional; None when there is no such setting."""
    model: Any = Settings
    annotation: Any = None
    for part in path:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        annotation = fields[part].annotation
        options = [arg for arg in get_args(annotation) if arg is not type(None)]
        if get_origin(annotation) in (Union, UnionType) and len(options) == 1:
            annotation = options[0]
        model = annotation
    return annotation


def _parse_env_value(path: list[str], text: str) -> Any:
    """Text settings (ids, passwords, PINs, paths) stay text; others are read as JSON when they parse."""
    if _field_type(path) in _TEXT_TYPES:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__") if part]
        if not path:
            continue
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = _parse_env_value(path, value)
    return tree


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: Mapping[str, Any]) -> str:
    """One line naming the setting; its value is shown only when it is neither unknown nor secret-like."""
    path = [str(part) for part in error["loc"]]
    location = ".".join(path) or "(top level)"
    message = error["msg"]
    unknown = error["type"] == "extra_forbidden"
    if unknown:
        message = "unknown setting (check the spelling against the example config)"
    value = error.get("input")
    secret = _field_type(path) is SecretStr or any(word in location.lower() for word in _SECRET_WORDS)
    hidden = unknown or secret or value is None or isinstance(value, (dict, list))
    return f"{location}: {message}" + ("" if hidden else f" (got {value!r})")


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, merge and validate the settings, raising ConfigError with one line per problem."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([f"config file {path}: not found"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"config file {path}: not valid TOML: {exc}"]) from None
    data = _merge(data, _env_overrides(environ))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(error) for error in exc.errors()]) from None


def demo_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The embedded demo defaults: everything on 127.0.0.1, data in ./var, emulator on 8090."""
    environ = dict(os.environ if environ is None else environ)
    environ.setdefault("HBGW_EMULATOR__ENABLED", "true")
    environ.setdefault("HBGW_CONSOLE__ENABLED", "true")
    environ.setdefault("HBGW_CONSOLE__DEMO_ACCOUNT", "true")
    environ.setdefault("HBGW_LOGGING__FORMAT", "console")
    environ.setdefault("HBGW_SITE_MAPPINGS__FILE", str(DEMO_SITE_MAPPINGS))
    return load_settings(None, environ)

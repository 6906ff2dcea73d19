"""The BHXH reception portal's wire (XML 130 API as amended by QĐ 4750/3176), shared by client and emulator.

Every shape here follows a public reference, named by its tag where it is used:
- [GUIDE] BHXH "Hướng dẫn liên thông dữ liệu phục vụ việc quản lý, giám định, thanh toán chi phí KCB" v1.0
  (QĐ 4750, 2024-05-03), its request and response tables for §1 token/take, §3 checkInKcbQd4750 and
  §4 guiHoSoXmlQD4750, as transcribed in a public TypeScript documentation file (found with code search);
  the 3176 endpoints keep the same parameters with the `...Qd3176` paths.
- [QLBV] tracnn/qlbv_public app/Services/BHYTLoginService.php (login) and BHYTXmlSubmitService.php
  (submission) and docs/quy-trinh-tien-giam-dinh-3176-va-order-check.md (token take, guiHoSoXmlQD3176).
- [HISNM] the Inventec hisnguonmo check-in sender (SendXmlCheckIn, RegisToken): form login, APIKey,
  `maKetQua` "200" plus `thongDiep` "Tiếp nhận thành công", `maGiaoDich` kept.
- [KB] nguyen2887/vn-healthcare research/deep/BHYT-DATA.md R03 (check-in rules) and R22 (endpoints and
  answer fields, citing the BHXH 3176 interconnection guide, section II).
- [NODE] a public Node.js BHYT client that parses `APIKey.expires_in` as an ISO UTC instant
  ("2025-09-05T07:31:44.6200586Z"); [GUIDE] names it "Thời gian hết hạn token (UTC)".
Where the references are silent (the code for a malformed request, how each code should be retried) the
choice is ours and marked [I]; the paths and the two `loaiHoSo` values are settings (gateway.config).
"""
from __future__ import annotations

from datetime import UTC, datetime

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"  # [GUIDE §1, §3, §4], [QLBV] form_params

# Login: POST token_path with a form of these two fields; password = UPPER(MD5(password)) [GUIDE §1], [QLBV].
TOKEN_FORM_FIELDS = ("username", "password")
# The answer: {"maKetQua": "200", "APIKey": {access_token, id_token, token_type, username, expires_in}}
# [GUIDE §1 response table], [QLBV] $result['APIKey'], [HISNM] plv.APIKey.access_token.
TOKEN_KEY = "APIKey"
TOKEN_FIELDS = ("access_token", "id_token", "token_type", "username", "expires_in")

# Check-in and submission: headers with the session and the password hash [GUIDE §3, §4], [QLBV] $headers.
HEADER_ACCESS_TOKEN = "accessToken"
HEADER_TOKEN_ID = "tokenId"
HEADER_PASSWORD_HASH = "passwordHash"
# ... and a form body of these five fields [GUIDE §3, §4], [QLBV] $body, [KB R22].
SUBMIT_FORM_FIELDS = ("username", "loaiHoSo", "maTinh", "maCSKCB", "fileHSBase64")
CHECKIN_FILE_TYPE = "0"  # loaiHoSo of a check-in: "mặc định điền 0" [GUIDE §3], [KB R03]
CLAIM_FILE_TYPE = "130"  # loaiHoSo of the episode files: "mặc định điền 130" [GUIDE §4], [QLBV]

# The roots the two documents carry, and the element holding the facility code in each [GUIDE §3, §4].
CHECKIN_ROOT = "CHI_TIEU_TRANG_THAI_KCB"
CLAIM_ROOT = "GIAMDINHHS"
FACILITY_ELEMENT = {CHECKIN_ROOT: "MA_CSKCB", CLAIM_ROOT: "MACSKCB"}
FILE_TYPE_OF_ROOT = {CHECKIN_ROOT: CHECKIN_FILE_TYPE, CLAIM_ROOT: CLAIM_FILE_TYPE}

# The answer to both: maKetQua, maGiaoDich ("lưu lại để đối chiếu"), thoiGianTiepNhan (yyyyMMddHHmmss),
# thongDiep [GUIDE §3, §4 response tables], [KB R22].
RESULT_CODE = "maKetQua"
TRANSACTION_ID = "maGiaoDich"
RECEIVED_AT = "thoiGianTiepNhan"
MESSAGE = "thongDiep"
RECEIVED_AT_FORMAT = "%Y%m%d%H%M%S"
ACCEPTED_MESSAGE = "Tiếp nhận thành công"  # [HISNM] compares thongDiep with it

# maKetQua values: 200 success, 401 unauthenticated, 403 unauthorised [GUIDE §3, §4]; 500 and 101 server
# errors, 205 "Lỗi sai định dạng tham số" [GUIDE error table; KB token codes 200/401/402/403/500].
ACCEPTED = "200"
TOKEN_INVALID = "401"
FORBIDDEN = "403"
BAD_PARAMETERS = "205"
SERVER_ERROR = "500"
# How the client treats each refusal [I]: these mean the account, the session or the portal, never the
# document, so the document waits and is sent again; every other code refuses the document for good.
TRANSIENT_RESULT_CODES = frozenset({TOKEN_INVALID, "402", FORBIDDEN, SERVER_ERROR, "101"})

DEFAULT_TOKEN_LIFETIME_SECONDS = 3600.0  # [QLBV] caches a token without expiry for 60 minutes
_EPOCH_SECONDS_THRESHOLD = 1_000_000_000  # [QLBV parseExpiresIn]: larger numbers are instants, not durations


def token_lifetime(expires_in: object, now: datetime | None = None) -> float:
    """Seconds a session lasts, from `expires_in` as the portal writes it (an ISO UTC instant, or a number)."""
    now = now or datetime.now(UTC)
    if isinstance(expires_in, (int, float)) or (isinstance(expires_in, str) and expires_in.strip().isdigit()):
        number = float(expires_in)
        if number > _EPOCH_SECONDS_THRESHOLD:
            return max(0.0, number - now.timestamp())
        return max(0.0, number)
    if isinstance(expires_in, str) and expires_in.strip():
        text = expires_in.strip()
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return DEFAULT_TOKEN_LIFETIME_SECONDS
        if when.tzinfo is None:  # [GUIDE]: the instant is in UTC
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    return DEFAULT_TOKEN_LIFETIME_SECONDS


def dotnet_utc(moment: datetime) -> str:
    """An instant written as the portal writes `expires_in` ([NODE]: seven fractional digits and Z)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"

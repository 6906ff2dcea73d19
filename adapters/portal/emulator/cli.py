"""`healthbook-gateway portal-emulator ARGS...`: run the emulator of both national portals on one port.

Without --cert, XML signatures are verified against the certificate embedded in their own X509Data
(proving integrity, not the signer's identity) and hub message signatures are only checked to be base64;
a warning says so at start. Give --cert with the facility certificate to verify both for real.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aiohttp import web

from adapters.portal.emulator.app import create_emulator_app
from adapters.portal.emulator.state import BhxhEmulatorAccount, EmulatorConfig, Faults

log = logging.getLogger("portal-emulator")


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _bhxh_account(text: str) -> BhxhEmulatorAccount:
    username, _, rest = text.partition(":")
    password, _, facilities = rest.partition(":")
    if not username or not password:
        raise argparse.ArgumentTypeError("must be USERNAME:PASSWORD or USERNAME:PASSWORD:MACSKCB[,MACSKCB...]")
    return BhxhEmulatorAccount(username, password, tuple(code for code in facilities.split(",") if code))


def build_parser() -> argparse.ArgumentParser:
    """The emulator's command line, documented by --help."""
    parser = argparse.ArgumentParser(prog="healthbook-gateway portal-emulator",
                                     description="Emulator of the BHXH reception portal and the MoH data hub.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--cert", type=Path, help="facility certificate (PEM) signatures must verify against")
    parser.add_argument("--username", default="demo")
    parser.add_argument("--password", default="demo")
    parser.add_argument("--bhxh-account", type=_bhxh_account, action="append", default=[],
                        help="a BHXH account USERNAME:PASSWORD[:MACSKCB,...] (repeatable); default: the"
                             " --username/--password account, for any facility")
    parser.add_argument("--service-type", default="100", help="expected hub service-type header")
    parser.add_argument("--hub-checksum-sorted", action="store_true",
                        help="hash the hub header with sorted keys (portal.hub.checksum_key_order = sorted)")
    parser.add_argument("--fail-rate", type=_rate, default=0.0, help="share of calls answered with HTTP 500")
    parser.add_argument("--rate-limit-rate", type=_rate, default=0.0, help="share answered 429 + Retry-After")
    parser.add_argument("--retry-after", type=_non_negative, default=1.0, help="Retry-After seconds on 429")
    parser.add_argument("--slow-rate", type=_rate, default=0.0, help="share of calls answered slowly")
    parser.add_argument("--slow-seconds", type=_non_negative, default=5.0, help="delay of a slow answer")
    parser.add_argument("--drop-rate", type=_rate, default=0.0,
                        help="share of calls processed but whose connection is dropped without an answer")
    parser.add_argument("--token-ttl", type=_non_negative, default=3600.0, help="token lifetime in seconds")
    parser.add_argument("--seed", type=int, help="seed of the fault draws, to repeat a run")
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Turn parsed flags into the emulator's configuration."""
    cert_pem = args.cert.read_bytes() if args.cert is not None else None
    faults = Faults(fail_rate=args.fail_rate, rate_limit_rate=args.rate_limit_rate, retry_after=args.retry_after,
                    slow_rate=args.slow_rate, slow_seconds=args.slow_seconds, drop_rate=args.drop_rate,
                    token_ttl=args.token_ttl)
    return EmulatorConfig(host=args.host, port=args.port, cert_pem=cert_pem, username=args.username,
                          password=args.password, service_type=args.service_type,
                          hub_sorted_keys=args.hub_checksum_sorted, faults=faults, seed=args.seed,
                          bhxh_accounts=tuple(args.bhxh_account))


def main(argv: list[str]) -> int:
    """Run the emulator until interrupted; 2 on bad flags or an unreadable certificate."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    try:
        config = config_from_args(args)
    except OSError as exc:
        print(f"portal-emulator: --cert {args.cert}: {exc.strerror}", file=sys.stderr)
        return 2
    if config.cert_pem is None:
        log.warning("no --cert: XML signatures are checked against their embedded certificate only, "
                    "hub signatures are not verified")
    web.run_app(create_emulator_app(config), host=config.host, port=config.port, print=None)
    return 0

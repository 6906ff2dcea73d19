"""The `healthbook-gateway` command: run the gateway, check settings, and operate the queues."""
from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.config import ConfigError, Settings, demo_settings, load_settings
from gateway.logs import configure_logging, get_logger
from gateway.parked_cli import add_parked_commands
from gateway.queue_cli import add_queue_commands
from gateway.safety import allowed_risks, refusals
from gateway.version import gateway_version

EXIT_CONFIG = 2


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if args.config else None)


EXIT_STARTUP = 1


def _serve(settings: Settings, allowed: Sequence[str] = ()) -> int:
    from gateway.app import Gateway
    from gateway.delivery_workers import DeliveryStartError
    from gateway.encryption import EncryptionKeyError
    from gateway.signing import SigningError
    from gateway.store import StoreError

    configure_logging(settings.logging.level, settings.logging.format)
    for risk in allowed:
        get_logger(__name__).warning("unsafe_setting_allowed", risk=risk)
    try:
        asyncio.run(Gateway(settings).run_until_signalled())
    except (SigningError, EncryptionKeyError) as exc:  # a setting to fix: restarting cannot help
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (StoreError, DeliveryStartError) as exc:
        print(f"startup error: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except OSError as exc:
        print(f"startup error: cannot listen or open a file: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    finally:
        gc.freeze()  # the process ends next: skip the final collections over every module (0.3 s of a stop)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    problems = refusals(settings)
    if problems:
        raise ConfigError(problems)
    return _serve(settings, allowed_risks(settings))


def cmd_demo(_args: argparse.Namespace) -> int:
    return _serve(demo_settings())


def _runtime_problems(settings: Settings) -> list[str]:
    """What start-up would refuse beyond the settings' shape: the payload key and the signing material."""
    from gateway.encryption import EncryptionKeyError, check_key_settings
    from gateway.signing import SigningError, load_signer

    problems = []
    if settings.console.enabled and settings.console.accounts_file:
        from gateway.console import load_accounts

        try:
            load_accounts(settings.console, settings.store.path.parent)
        except ConfigError as exc:
            problems += exc.problems
    try:
        check_key_settings(settings.store)
    except EncryptionKeyError as exc:
        problems.append(str(exc))
    if settings.store.backend == "postgresql" and settings.store.dsn is None:
        try:
            settings.store.postgres_dsn()
        except OSError as exc:
            problems.append(f"store.dsn_file {settings.store.dsn_file}: {exc.strerror}")
    sources = [settings.signing] if settings.signing.source != "dev" else []  # dev creates its pair on start
    sources += [doctor for doctor in settings.portal.hub.practitioner_signers if doctor.source != "dev"]
    for source in sources:
        try:
            load_signer(source).close()
        except SigningError as exc:
            problems.append(str(exc))
    return problems


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    problems = refusals(settings) + _runtime_problems(settings)
    if problems:
        raise ConfigError(problems)
    for risk in allowed_risks(settings):
        print(f"config warning: {risk}", file=sys.stderr)
    print(f"config OK: MLLP {settings.mllp.host}:{settings.mllp.port}, HTTP {settings.http.host}:{settings.http.port},"
          f" store {settings.store.location()}, signing {settings.signing.source}")
    return 0


def cmd_console_password(_args: argparse.Namespace) -> int:
    """Print a console password hash for the settings, so the password itself is never written down."""
    import getpass

    from gateway.console.accounts import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("new console password: ")
        if getpass.getpass("again: ") != password:
            print("error: the two passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 10:
        print("error: use at least 10 characters", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def run_portal_emulator(argv: Sequence[str]) -> int:
    """The emulator parses its own options (--port, --cert, faults...), so they pass through untouched."""
    from adapters.portal.emulator import main as emulator_main

    return emulator_main(list(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="healthbook-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {gateway_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", metavar="PATH", help="TOML settings file (HBGW_ variables override it)")
        return sub

    with_config("serve", "run the gateway").set_defaults(func=cmd_serve)
    commands.add_parser("demo", help="run with the embedded demo defaults and a local portal emulator"
                        ).set_defaults(func=cmd_demo)
    with_config("check-config", "validate settings and print one line per problem").set_defaults(
        func=cmd_check_config)
    commands.add_parser("portal-emulator", add_help=False,
                        help="run the national portal emulator (--port N; --help lists its options)")
    commands.add_parser("console-password", help="hash a console password for console.accounts (reads it"
                        " from the terminal or one line of stdin)").set_defaults(func=cmd_console_password)
    add_queue_commands(commands, with_config)
    add_parked_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["portal-emulator"]:
        return run_portal_emulator(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())

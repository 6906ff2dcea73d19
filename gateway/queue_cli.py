"""The operator's queue commands: `status`, `dlq list|show|retry|discard`, `replay FILE`.

Exit status: 0 done, 1 refused (no such item, not dead, a message the screen refused), 2 bad settings.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gateway.config import Settings, load_settings
from gateway.logs import configure_logging

EXIT_REFUSED = 1
WithConfig = Callable[[str, str], argparse.ArgumentParser]


def _settings(args: argparse.Namespace) -> Settings:
    """The settings, with log lines sent to stderr so stdout carries only the command's answer."""
    settings = load_settings(Path(args.config) if args.config else None)
    configure_logging(settings.logging.level, settings.logging.format)
    return settings


def _run(work: Coroutine[Any, Any, int]) -> int:
    """Run one operation; an operator error or an unusable store becomes one line on stderr and exit 1."""
    from gateway.encryption import EncryptionKeyError  # noqa: PLC0415 (keeps `--help` fast)
    from gateway.store import StoreError  # noqa: PLC0415
    from gateway.store.admin import AdminError  # noqa: PLC0415

    try:
        return asyncio.run(work)
    except (AdminError, StoreError, EncryptionKeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED


def cmd_status(args: argparse.Namespace) -> int:
    """How much waits where, for an operator without Grafana at hand."""
    from gateway.queue_admin import queue_status  # noqa: PLC0415

    async def status() -> int:
        print(json.dumps(await queue_status(_settings(args)), indent=2))
        return 0
    return _run(status())


def cmd_dlq_list(args: argparse.Namespace) -> int:
    """What needs an operator, safe to paste into a ticket."""
    from gateway.queue_admin import admin_session, format_table, item_record  # noqa: PLC0415

    async def listing() -> int:
        async with admin_session(_settings(args)) as admin:
            items = await admin.dead_letters(include_discarded=args.all)
        print(json.dumps([item_record(i) for i in items], indent=2) if args.json else format_table(items))
        return 0
    return _run(listing())


def cmd_dlq_show(args: argparse.Namespace) -> int:
    """Everything about one item an operator needs to decide; the payload only on request."""
    from gateway.queue_admin import admin_session, item_record  # noqa: PLC0415
    from gateway.store.admin import ItemRef  # noqa: PLC0415

    async def show() -> int:
        ref = ItemRef.parse(args.item)
        async with admin_session(_settings(args)) as admin:
            record = item_record(await admin.item(ref), full_reason=True)
            record["history"] = [{"at": at, "operator": who, "action": action, "detail": detail}
                                 for at, who, action, _, detail in await admin.actions(ref)]
            payload = await admin.payload(ref) if args.payload else None
        print(json.dumps(record, indent=2, ensure_ascii=False))
        if payload is not None:
            print("payload follows: it holds personal data; this view is recorded in the audit trail",
                  file=sys.stderr)
            sys.stdout.write(payload.decode("utf-8", errors="replace").replace("\r", "\n"))
        return 0
    return _run(show())


def cmd_dlq_change(args: argparse.Namespace) -> int:
    """Retry or discard one dead item, audited."""
    from gateway.queue_admin import admin_session  # noqa: PLC0415
    from gateway.store.admin import ItemRef  # noqa: PLC0415

    async def change() -> int:
        ref = ItemRef.parse(args.item)
        async with admin_session(_settings(args)) as admin:
            if args.dlq_command == "retry":
                outcome = f"{await admin.retry(ref)}; the gateway takes it at its next poll"
            else:
                await admin.discard(ref, args.note)
                outcome = "discarded (kept, with its reason, in the audit trail)"
        print(f"{ref}: {outcome}")
        return 0
    return _run(change())


def cmd_replay(args: argparse.Namespace) -> int:
    """Feed a corrected message back without asking the hospital system to resend it."""
    from gateway.queue_admin import replay_file  # noqa: PLC0415

    async def replay() -> int:
        try:
            answers = await replay_file(_settings(args), Path(args.file))
        except OSError as exc:
            print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return EXIT_REFUSED
        if not answers:
            print(f"error: no HL7 message (a line starting with MSH) in {args.file}", file=sys.stderr)
            return EXIT_REFUSED
        for number, answer in enumerate(answers, 1):
            if answer.message_id is None:
                problems = "; ".join(f"{i.location} {i.code}: {i.message}" for i in answer.issues)
                print(f"message {number}: {answer.code} refused: {problems}")
            elif answer.duplicate:
                print(f"message {number}: {answer.code} already replayed as inbox:{answer.message_id}")
            else:
                print(f"message {number}: {answer.code} stored as inbox:{answer.message_id}")
        return 0 if all(answer.message_id is not None for answer in answers) else EXIT_REFUSED
    return _run(replay())


def add_queue_commands(commands: Any, with_config: WithConfig) -> None:
    """Register the queue commands on the main parser's subcommands."""
    with_config("status", "queue counts by state and the oldest pending age").set_defaults(func=cmd_status)
    dlq = commands.add_parser("dlq", help="dead letters: list, show, retry, discard")
    actions = dlq.add_subparsers(dest="dlq_command", required=True)

    def dlq_command(name: str, help_text: str, func: Callable[[argparse.Namespace], int],
                    item: bool = True) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument("--config", metavar="PATH", help="TOML settings file (HBGW_ variables override it)")
        if item:
            sub.add_argument("item", metavar="ITEM", help="inbox:ID or outbox:ID, as `dlq list` shows")
        sub.set_defaults(func=func)
        return sub

    listing = dlq_command("list", "dead inbox messages and dead outbox submissions, no personal data",
                          cmd_dlq_list, item=False)
    listing.add_argument("--all", action="store_true", help="include discarded items")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    show = dlq_command("show", "one item's metadata, full reason and history", cmd_dlq_show)
    show.add_argument("--payload", action="store_true",
                      help="also print the decrypted payload (personal data; the view is audited)")
    dlq_command("retry", "put a dead item back in its queue", cmd_dlq_change)
    discard = dlq_command("discard", "give up on a dead item; it is kept and marked, never deleted",
                          cmd_dlq_change)
    discard.add_argument("--note", default="", help="why, for the audit trail")
    replay = with_config("replay", "ingest a corrected HL7 file through the intake, as new messages")
    replay.add_argument("file", metavar="FILE")
    replay.set_defaults(func=cmd_replay)

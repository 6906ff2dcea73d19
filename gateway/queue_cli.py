"""The operator's queue commands: `status`, `dlq list|show|retry|discard`, `retry-now`, `replay FILE`.

Reads never take the store's write lock, so they answer beside a gateway draining a backlog; a change waits
politely (up to BUSY_WAIT_SECONDS) while the gateway holds the lock, then says so in one line.
Exit status: 0 done, 1 refused (no such item, not dead, a message the screen refused, a busy store), 2 bad
settings.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gateway.config import Settings, load_settings
from gateway.logs import configure_logging

EXIT_REFUSED = 1
BUSY_WAIT_SECONDS = 60.0
WithConfig = Callable[[str, str], argparse.ArgumentParser]
Work = Callable[[], Coroutine[Any, Any, int]]


def _settings(args: argparse.Namespace) -> Settings:
    """The settings, with log lines sent to stderr so stdout carries only the command's answer."""
    settings = load_settings(Path(args.config) if args.config else None)
    configure_logging(settings.logging.level, settings.logging.format)
    return settings


def _run(work: Work) -> int:
    """Run one operation; an operator error or an unusable store becomes one line on stderr and exit 1.
    A store busy with the gateway's writes is waited for: nothing was changed by the attempt that met it."""
    from gateway.encryption import EncryptionKeyError
    from gateway.store import StoreBusy, StoreError
    from gateway.store.admin import AdminError

    deadline = time.monotonic() + BUSY_WAIT_SECONDS
    while True:
        try:
            return asyncio.run(work())
        except StoreBusy:
            if time.monotonic() >= deadline:
                print(f"error: the store stayed busy for {BUSY_WAIT_SECONDS:.0f} s (the gateway is writing a"
                      " backlog); nothing was changed: try again in a few minutes", file=sys.stderr)
                return EXIT_REFUSED
            print("the store is busy (the gateway is writing); waiting...", file=sys.stderr)
            time.sleep(1.0)
        except (AdminError, StoreError, EncryptionKeyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_REFUSED


def cmd_status(args: argparse.Namespace) -> int:
    """How much waits where, for an operator without Grafana at hand."""
    from gateway.queue_admin import queue_status

    async def status() -> int:
        print(json.dumps(await queue_status(_settings(args)), indent=2))
        return 0
    return _run(status)


def cmd_dlq_list(args: argparse.Namespace) -> int:
    """What needs an operator, safe to paste into a ticket."""
    from gateway.queue_admin import admin_session, format_table, item_record

    async def listing() -> int:
        async with admin_session(_settings(args)) as admin:
            items = await admin.dead_letters(include_discarded=args.all)
        print(json.dumps([item_record(i) for i in items], indent=2) if args.json else format_table(items))
        return 0
    return _run(listing)


def cmd_dlq_show(args: argparse.Namespace) -> int:
    """Everything about one item an operator needs to decide; the payload only on request. For a refused
    submission the payload is the HL7 message it was built from: what an operator corrects and replays."""
    from gateway.queue_admin import admin_session, attempt_record, item_record
    from gateway.store.admin import ItemRef

    async def show() -> int:
        ref = ItemRef.parse(args.item)
        async with admin_session(_settings(args)) as admin:
            item = await admin.item(ref)
            record = item_record(item, full_reason=True)
            record["attempts_history"] = [attempt_record(a) for a in await admin.attempts(ref)]
            record["history"] = [{"at": at, "operator": who, "action": action, "detail": detail}
                                 for at, who, action, _, detail in await admin.actions(ref)]
            shown = ItemRef.parse(item.source) if ref.queue == "outbox" and item.source else ref
            payload = await admin.payload(shown) if args.payload else None
        print(json.dumps(record, indent=2, ensure_ascii=False))
        if payload is not None:
            built_from = f" ({shown}, the HL7 message {ref} was built from: correct it, then `replay` it)" \
                if shown != ref else ""
            print(f"payload{built_from} follows: it holds personal data; this view is recorded in the audit trail",
                  file=sys.stderr)
            sys.stdout.write(payload.decode("utf-8", errors="replace").replace("\r", "\n"))
        return 0
    return _run(show)


def cmd_dlq_change(args: argparse.Namespace) -> int:
    """Retry or discard dead items, named or picked by a filter, audited one by one."""
    from gateway.queue_admin import admin_session, selection_of
    from gateway.store.admin import AdminError, ItemRef

    async def change() -> int:
        refs = [ItemRef.parse(item) for item in args.items]
        selection = selection_of(args)
        if not refs and selection is None:
            raise AdminError("name the items (inbox:ID outbox:ID ...) or pick them with --queue, --kind,"
                             " --reason or --all-dead")
        async with admin_session(_settings(args)) as admin:
            if selection is not None:
                refs += [item.ref for item in await admin.select_dead(selection) if item.ref not in refs]
            if args.dry_run or not refs:
                print("\n".join(str(ref) for ref in refs) or "no dead item matches")
                return 0
            outcomes = await admin.change_many(args.dlq_command, refs, args.note)
        for ref, done, what in outcomes:
            print(f"{ref}: {what}" if done else f"error: {ref}: {what}", file=sys.stdout if done else sys.stderr)
        changed = sum(done for _, done, _ in outcomes)
        verb = "re-queued (the gateway takes them at its next poll)" if args.dlq_command == "retry" else "discarded"
        print(f"{changed} of {len(outcomes)} {verb}")
        return 0 if changed == len(outcomes) else EXIT_REFUSED
    return _run(change)


def cmd_retry_now(args: argparse.Namespace) -> int:
    """After a portal outage: send the waiting submissions now instead of at their backoff."""
    from gateway.channels import CHANNELS
    from gateway.queue_admin import admin_session
    from gateway.store.admin import AdminError

    known = [spec.name for spec in CHANNELS]

    async def retry_now() -> int:
        channels = known if args.all else args.channels
        unknown = [name for name in channels if name not in known]
        if unknown or not channels:
            raise AdminError(f"name a channel ({', '.join(known)}) or use --all (unknown: {', '.join(unknown)})")
        async with admin_session(_settings(args)) as admin:
            for channel in channels:
                print(f"{channel}: {await admin.retry_now(channel)} pending submissions due now")
        return 0
    return _run(retry_now)


def _progress(done: int, total: int) -> None:
    """A progress line on stderr: redrawn on a terminal, every tenth part in a log."""
    if sys.stderr.isatty():
        print(f"\rreplaying: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
    elif done == total or done % max(1, total // 10) == 0:
        print(f"replaying: {done}/{total}", file=sys.stderr, flush=True)


def cmd_replay(args: argparse.Namespace) -> int:
    """Feed a corrected message back without asking the hospital system to resend it."""
    from gateway.queue_admin import control_id_of, replay_file, split_messages

    async def replay() -> int:
        try:
            messages = split_messages(Path(args.file).read_bytes())
            answers = await replay_file(_settings(args), Path(args.file), _progress)
        except OSError as exc:
            print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return EXIT_REFUSED
        if not answers:
            print(f"error: no HL7 message (a line starting with MSH) in {args.file}", file=sys.stderr)
            return EXIT_REFUSED
        counts = {"stored": 0, "duplicates": 0, "refused": 0}
        for number, (message, answer) in enumerate(zip(messages, answers, strict=True), 1):
            name = f"message {number} ({control_id_of(message) or 'no MSH-10'})"
            if answer.message_id is None:
                counts["refused"] += 1
                problems = "; ".join(f"{i.location} {i.code}: {i.message}" for i in answer.issues)
                print(f"{name}: {answer.code} refused: {problems}")
            elif answer.duplicate:
                counts["duplicates"] += 1
                print(f"{name}: {answer.code} already replayed as inbox:{answer.message_id}")
            else:
                counts["stored"] += 1
                print(f"{name}: {answer.code} stored as inbox:{answer.message_id}")
        print(f"replayed {len(answers)} messages: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
        return 0 if not counts["refused"] else EXIT_REFUSED
    return _run(replay)


def add_queue_commands(commands: Any, with_config: WithConfig) -> None:
    """Register the queue commands on the main parser's subcommands."""
    with_config("status", "queue counts by state and the oldest pending age").set_defaults(func=cmd_status)
    dlq = commands.add_parser("dlq", help="dead letters: list, show, retry, discard")
    actions = dlq.add_subparsers(dest="dlq_command", required=True)

    def dlq_command(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument("--config", metavar="PATH", help="TOML settings file (HBGW_ variables override it)")
        sub.set_defaults(func=func)
        return sub

    listing = dlq_command("list", "dead inbox messages and dead outbox submissions, no personal data", cmd_dlq_list)
    listing.add_argument("--all", action="store_true", help="include discarded items")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    show = dlq_command("show", "one item's metadata, full reason, delivery attempts and history", cmd_dlq_show)
    show.add_argument("item", metavar="ITEM", help="inbox:ID or outbox:ID, as `dlq list` shows")
    show.add_argument("--payload", action="store_true",
                      help="also print the HL7 message (for outbox:ID the one it was built from; personal data;"
                           " the view is audited)")
    for name, help_text in (("retry", "put dead items back to be mapped and signed again"),
                            ("discard", "give up on dead items; they are kept and marked, never deleted")):
        change = dlq_command(name, help_text, cmd_dlq_change)
        change.add_argument("items", metavar="ITEM", nargs="*", help="inbox:ID or outbox:ID, as `dlq list` shows")
        change.add_argument("--queue", choices=("inbox", "outbox"), help="only dead items of this queue")
        change.add_argument("--kind", help="only this message type (inbox, e.g. ADT^A03) or channel (outbox)")
        change.add_argument("--reason", help="only items whose reason contains these words")
        change.add_argument("--all-dead", action="store_true", help="every dead item (with no other filter)")
        change.add_argument("--dry-run", action="store_true", help="list what would be changed, change nothing")
        change.add_argument("--note", default="", help="why, for the audit trail")
    retry_now = with_config("retry-now", "send a channel's waiting submissions now (after a portal outage)")
    retry_now.add_argument("channels", metavar="CHANNEL", nargs="*", help="a channel name, as `dlq list` shows it")
    retry_now.add_argument("--all", action="store_true", help="every channel")
    retry_now.set_defaults(func=cmd_retry_now)
    replay = with_config("replay", "ingest a corrected HL7 file through the intake, as new messages")
    replay.add_argument("file", metavar="FILE")
    replay.set_defaults(func=cmd_replay)

"""The operator's `parked` commands: which episodes wait for a site mapping, and rebuilding them once added.

`parked rebuild` reads [site_mappings] from the settings given, so an operator can add a mapping and
queue the episodes that waited for it without restarting; the gateway also rebuilds them when it starts.
Exit status: 0 done, 1 an unusable store or signing material, 2 bad settings.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gateway.queue_cli import _run, _settings


def cmd_parked_list(args: argparse.Namespace) -> int:
    """The waiting episodes and the codes each waits for (hospital codes, no personal data)."""
    from gateway.store import open_store

    async def listing() -> int:
        store = await open_store(_settings(args).store)
        try:
            waiting = await store.parked()
        finally:
            await store.close()
        print(json.dumps([{"document_id": w.document_id, "version": w.version, "channel": w.channel,
                           "waits_for": list(w.codes)} for w in waiting], indent=2, ensure_ascii=False))
        return 0
    return _run(listing)


def cmd_parked_rebuild(args: argparse.Namespace) -> int:
    """Build every waiting episode with the current settings; queue what is complete now."""
    from gateway.builder import submissions_builder
    from gateway.facilities import Facilities
    from gateway.parking import rebuild_parked
    from gateway.signing import SigningError, load_signer
    from gateway.store import open_store

    async def rebuild() -> int:
        settings = _settings(args)
        try:
            facilities = Facilities(settings, load_signer)
            practitioners = {doctor.licence: load_signer(doctor) for doctor in settings.portal.hub.practitioner_signers}
        except SigningError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        build = submissions_builder(facilities, settings.portal, practitioners, settings.site_mappings.as_mapping())
        store = await open_store(settings.store)
        try:
            report = await rebuild_parked(store, build)
        finally:
            await store.close()
            for signer in [*facilities.signers, *practitioners.values()]:
                signer.close()
        print(json.dumps({"queued": report.queued, "refused": report.refused,
                          "still_waiting": {w.document_id: list(w.codes) for w in report.waiting}},
                         indent=2, ensure_ascii=False))
        return 0
    return _run(rebuild)


def add_parked_commands(commands: Any) -> None:
    """Register `parked list` and `parked rebuild` on the main parser's subcommands."""
    parked = commands.add_parser("parked", help="episodes waiting for a site mapping: list, rebuild")
    actions = parked.add_subparsers(dest="parked_command", required=True)
    for name, help_text, func in (("list", "waiting episodes and the codes they wait for", cmd_parked_list),
                                  ("rebuild", ("rebuild them with the current [site_mappings] and queue the "
                                               "complete ones"), cmd_parked_rebuild)):
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument("--config", metavar="PATH", help="TOML settings file (HBGW_ variables override it)")
        sub.set_defaults(func=func)

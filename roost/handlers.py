"""What each roost command does: read its arguments, call the engine, print.

Shared by the argparse command line (roost.cli) and the fast dispatcher for
the commands build tools run thousands of times a day (roost.fastpath), so
both behave identically; those commands themselves, and the frame every
command runs in (Context, execute), are in roost.session_commands. Arguments arrive as attributes of a namespace with
argparse's names. This module imports neither argparse nor typing.
"""

from __future__ import annotations

import sys

from .session_commands import PROG as PROG
from .session_commands import Context as Context
from .session_commands import _command_argv as _command_argv
from .session_commands import _isolation_options as _isolation_options
from .session_commands import cmd_run as cmd_run
from .session_commands import cmd_session_begin as cmd_session_begin
from .session_commands import cmd_session_end as cmd_session_end
from .session_commands import cmd_session_enter as cmd_session_enter
from .session_commands import cmd_session_run as cmd_session_run
from .session_commands import execute as execute
from .session_commands import mode_of as mode_of

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and argparse cost milliseconds at start-up
    from typing import Any


def cmd_image_create(ctx: Context) -> int:
    from core.importers import Source

    a = ctx.args
    if a.mmdebstrap:
        source = Source(
            "mmdebstrap", suite=a.mmdebstrap, variant=a.variant, mirror=a.mirror, include=a.include, arch=a.arch
        )
    else:
        if a.variant or a.mirror or a.include or a.arch:
            from core.errors import BadInput

            raise BadInput("--variant, --mirror, --include and --arch go with --mmdebstrap")
        source = Source("dir", path=a.from_dir) if a.from_dir else Source("tar", path=a.from_tar)
    try:
        info = ctx.engine.create_image(a.name, source, backend=a.backend, profile=a.profile, description=a.description)
    finally:
        ctx.progress.done()
    if ctx.json:
        from .output import emit_json

        emit_json(info.to_json())
    elif not ctx.quiet:
        print(f"created image {info.name} (generation 1, {info.backend})", file=sys.stderr)
    return 0


def cmd_image_convert(ctx: Context) -> int:
    a = ctx.args
    try:
        info = ctx.engine.convert_image(a.name, a.backend, new_name=a.to)
    finally:
        ctx.progress.done()
    if ctx.json:
        from .output import emit_json

        emit_json(info.to_json())
    elif not ctx.quiet:
        print(f"converted {a.name} into image {info.name} (generation 1, {info.backend})", file=sys.stderr)
    return 0


def cmd_image_import_schroot(ctx: Context) -> int:
    from core import schrootimport as importer

    a = ctx.args
    eng = ctx.engine
    plans, skipped = importer.plan_import(eng, a.files or None, schroot_dir=a.schroot_dir, chroots=a.chroot)
    if not a.dry_run:
        try:
            importer.run(eng, plans, backend=a.backend)
        finally:
            ctx.progress.done()
    if ctx.json:
        from .output import emit_json

        emit_json({"chroots": [p.to_json() for p in plans], "skipped": skipped})
    else:
        for p in plans:
            source = p.source.describe() if p.source else "-"
            if p.error is not None:
                print(f"not imported: {p.chroot} ({p.where}): {p.error}")
            elif p.imported:
                where = f"generation {p.generation}, profile {p.profile}"
                print(f"imported: {p.chroot} as image {p.image} ({where}) from {source}")
            else:
                print(f"would import: {p.chroot} as image {p.image} (profile {p.profile}) from {source}")
            for note in p.notes:
                print(f"  note: {note}")
        for path in skipped:
            print(f"skipped: {path} (schroot does not read it either)")
    if not plans and not ctx.quiet:
        print(f"{PROG}: no schroot chroots found", file=sys.stderr)
    failed = [p for p in plans if p.error is not None]
    return failed[0].error_code if failed else 0


def cmd_image_list(ctx: Context) -> int:
    from core.units import human_size

    from .output import emit_json, table

    images = ctx.engine.list_images()
    if ctx.json:
        emit_json([i.to_json() for i in images])
    else:
        table(
            ["NAME", "BACKEND", "CURRENT", "PROFILE", "SESSIONS", "SIZE"],
            [[i.name, i.backend, i.current, i.profile, i.sessions, human_size(i.size)] for i in images],
        )
    return 0


def cmd_image_info(ctx: Context) -> int:
    from core.limits import describe
    from core.units import human_size

    from .output import emit_json, fields

    i = ctx.engine.image_info(ctx.args.name)
    if ctx.json:
        emit_json(i.to_json())
        return 0
    c = i.config
    fields(
        [
            ("Name", i.name),
            ("Description", i.description or None),
            ("Backend", i.backend),
            ("Architecture", c.architecture if c else None),
            ("Storage", i.storage or None),
            ("Current generation", i.current),
            ("Generations", i.generations),
            ("Size", human_size(i.size)),
            ("Profile", i.profile),
            ("Sessions", i.sessions),
            ("Maintained by", i.writer),
            ("Users", ", ".join(c.users) if c and c.users else None),
            ("Groups", ", ".join(c.groups) if c and c.groups else None),
            ("Root users", ", ".join(c.root_users) if c and c.root_users else None),
            ("Aliases", ", ".join(c.aliases) if c and c.aliases else None),
            ("Network", c.network if c and c.network else None),
            ("Limits", describe(c.limits) if c and c.limits is not None else None),
        ]
    )
    return 0


def cmd_image_history(ctx: Context) -> int:
    from core.units import human_size

    from .output import emit_json, table

    gens = ctx.engine.image_history(ctx.args.name)
    if ctx.json:
        emit_json([g.to_json() for g in gens])
        return 0
    rows = []
    for g in reversed(gens):
        mark = "*" if g.current else ""
        use = "in use" if g.in_use else ""
        rows.append(
            [f"{g.generation}{mark}", g.parent, g.created, g.author, human_size(g.size), g.session, use, g.message]
        )
    table(["GEN", "PARENT", "CREATED", "AUTHOR", "SIZE", "SESSION", "USE", "MESSAGE"], rows)
    return 0


def cmd_image_diff(ctx: Context) -> int:
    from core.names import check_generation

    from .diffs import show

    a = ctx.args
    old = check_generation(a.generation) if a.generation is not None else None
    new = check_generation(a.against) if a.against is not None else None
    return show(ctx, ctx.engine.image_diff(a.name, old, new))


def cmd_image_rollback(ctx: Context) -> int:
    from core.names import check_generation

    gen = check_generation(ctx.args.generation) if ctx.args.generation is not None else None
    number = ctx.engine.rollback(ctx.args.name, gen)
    if not ctx.quiet:
        print(f"{ctx.args.name} is now at generation {number}", file=sys.stderr)
    return 0


def cmd_image_remove(ctx: Context) -> int:
    ctx.engine.remove_image(ctx.args.name, force=ctx.args.force)
    return 0


def cmd_image_gc(ctx: Context) -> int:
    from core.units import human_size

    from .output import emit_json

    results = ctx.engine.gc(ctx.args.name, keep=ctx.args.keep, dry_run=ctx.args.dry_run)
    if ctx.json:
        emit_json([r.to_json() for r in results])
        return 0
    verb = "would remove" if ctx.args.dry_run else "removed"
    for r in results:
        gens = ", ".join(map(str, r.removed)) or "nothing"
        print(f"{r.image}: {verb} {gens} ({human_size(r.freed)})")
    return 0


def cmd_image_export(ctx: Context) -> int:
    from core.names import check_generation
    from core.units import human_size

    from .output import emit_json

    a = ctx.args
    gen = check_generation(a.generation) if a.generation is not None else None
    try:
        r = ctx.engine.export_image(a.name, a.file, generation=gen, force=a.force)
    finally:
        ctx.progress.done()
    if ctx.json:
        emit_json(r.to_json())
    elif not ctx.quiet:
        print(
            f"exported {r.image} generation {r.generation} to {r.path} ({human_size(r.size)}, {r.compression})",
            file=sys.stderr,
        )
    return 0


def cmd_image_publish(ctx: Context) -> int:
    from core.names import check_generation
    from core.units import human_size

    from .output import emit_json

    a = ctx.args
    gen = check_generation(a.generation) if a.generation is not None else None
    try:
        r = ctx.engine.publish_sbuild_tarball(
            a.name, a.sbuild_tarball or None, tarball_name=a.tarball_name, compression=a.compression, generation=gen
        )
    finally:
        ctx.progress.done()
    if ctx.json:
        emit_json(r.to_json())
    elif not ctx.quiet:
        print(f"published {r.image} generation {r.generation} as {r.path} ({human_size(r.size)})", file=sys.stderr)
    return 0


def cmd_session_promote(ctx: Context) -> int:
    number = ctx.engine.promote(ctx.args.id, ctx.args.message)
    if not ctx.quiet:
        print(f"promoted {ctx.args.id} as generation {number}", file=sys.stderr)
    return 0


def cmd_session_list(ctx: Context) -> int:
    from .output import emit_json, table

    infos = ctx.engine.list_sessions(ctx.args.image)
    if ctx.json:
        emit_json([i.to_json() for i in infos])
        return 0
    table(
        ["ID", "IMAGE", "GEN", "KIND", "OWNER", "CREATED", "STATE"],
        [
            [
                i.session.id,
                i.session.image,
                i.session.generation,
                i.session.kind,
                i.session.owner,
                i.session.created,
                i.state,
            ]
            for i in infos
        ],
    )
    return 0


def cmd_session_info(ctx: Context) -> int:
    from core.units import human_size

    from .isolation import info_rows
    from .output import emit_json, fields

    i = ctx.engine.session_info(ctx.args.id)
    if ctx.json:
        emit_json(i.to_json())
        return 0
    s = i.session
    fields(
        [
            ("Id", s.id),
            ("Image", s.image),
            ("Generation", s.generation),
            ("Kind", s.kind),
            ("Owner", s.owner),
            ("Created", s.created),
            ("State", i.state),
            ("Backend", s.backend),
            ("Profile", s.profile),
            ("Mount point", s.mountpoint),
            ("Processes", i.processes),
            ("Changes", human_size(i.changes)),
            *info_rows(i),
        ]
    )
    return 0


def cmd_session_diff(ctx: Context) -> int:
    from .diffs import show

    return show(ctx, ctx.engine.session_diff(ctx.args.id))


def cmd_session_recover(ctx: Context) -> int:
    from .output import emit_json

    report = ctx.engine.recover(None if ctx.args.all else ctx.args.id)
    if ctx.json:
        emit_json(report)
    else:
        for line in report:
            print(line)
    return 0


def cmd_locks(ctx: Context) -> int:
    from .output import emit_json, table

    states = ctx.engine.locks()
    if ctx.json:
        emit_json([s.to_json() for s in states])
        return 0
    table(
        ["LOCK", "MODE", "PID", "USER", "OPERATION", "SINCE", "STATE"],
        [[s.lock, s.mode, s.pid, s.user, s.operation, s.since, "stale" if s.stale else "live"] for s in states],
    )
    return 0


def cmd_doctor(ctx: Context) -> int:
    from .output import emit_json, table

    a = ctx.args
    report = [] if a.check else ctx.engine.backends()
    default = None if a.check else ctx.engine.default_backend()
    problems = [] if a.backends else ctx.engine.check()
    from .isolation import doctor_table

    isolation = [] if a.check or a.backends else doctor_table(ctx)
    if ctx.json:
        out: dict[str, Any] = {}
        if not a.check:
            out["backends"] = [
                {"name": n, "available": why is None, "why": why, "summary": what} for n, why, what in report
            ]
            out["default"] = default
        if isolation:
            out["isolation"] = isolation
        if not a.backends:
            out["problems"] = problems
        emit_json(out)
    else:
        if report:
            table(
                ["BACKEND", "AVAILABLE", "WHY NOT / WHAT IT IS"],
                [
                    [n, "no" if why else ("yes (default)" if n == default else "yes"), why or what]
                    for n, why, what in report
                ],
            )
            if not a.backends:
                print()
        if isolation:
            table(
                ["ISOLATION", "AVAILABLE", "HOW / WHY NOT"],
                [[r["feature"], r["available"], r["how"]] for r in isolation],
            )
            print()
        for line in problems:
            print(line)
    if a.backends:
        return 0
    if problems:
        print(f"{PROG}: {len(problems)} problem(s) found", file=sys.stderr)
        return 5
    if not ctx.json and not ctx.quiet:
        print("no problems found", file=sys.stderr)
    return 0


def cmd_profile_list(ctx: Context) -> int:
    from core.profiles import load_profile, profile_names

    from .output import emit_json, table

    site = ctx.engine.settings.profiles_dir
    profiles = [load_profile(n, site) for n in profile_names(site)]
    if ctx.json:
        emit_json([{"name": p.name, "description": p.description, "path": p.path} for p in profiles])
    else:
        table(["NAME", "DESCRIPTION", "FILE"], [[p.name, p.description, p.path] for p in profiles])
    return 0


def cmd_profile_show(ctx: Context) -> int:
    from core.profiles import load_profile

    from .output import emit_json

    p = load_profile(ctx.args.name, ctx.engine.settings.profiles_dir)
    if ctx.json:
        emit_json(
            {
                "name": p.name,
                "path": p.path,
                "description": p.description,
                "dev": p.dev,
                "mounts": [m.to_json() for m in p.mounts],
                "copy-files": list(p.copy_files),
                "nss-databases": list(p.nss_databases),
                "environment": {"keep": list(p.env_keep), "set": dict(p.env_set)},
            }
        )
    else:
        with open(p.path, encoding="utf-8") as f:
            sys.stdout.write(f.read())
    return 0


def cmd_batch(ctx: Context) -> int:
    import signal

    from core.callerfs import CallerFiles

    from . import plans
    from .output import emit_json

    if getattr(ctx.args, "host", None):
        from .fleet import batch_hosts

        return batch_hosts(ctx, ctx.args.host)  # the plan runs on each host, over ssh
    path = ctx.args.plan
    if path == "-":  # the plan on standard input (batch on several hosts sends it so)
        data = sys.stdin.buffer.read(plans.MAX_PLAN_BYTES + 1)
    else:
        data = CallerFiles(ctx.engine.actor).read(path, plans.MAX_PLAN_BYTES)  # with the caller's rights
    plan = plans.parse(data, path)
    if ctx.args.check:
        if ctx.json:
            emit_json({"file": path, "ok": True, "steps": len(plan.steps)})
        elif not ctx.quiet:
            print(f"{path}: a valid plan of {len(plan.steps)} step(s)", file=sys.stderr)
        return 0

    def show(result: plans.StepResult) -> None:
        if not ctx.json:
            print(_step_line(result), flush=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # the plan stops and ends what it began

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        report = plans.run(ctx.engine, plan, on_result=show, output=2 if ctx.json else 1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if ctx.json:
        emit_json(report.to_json())
    failed = report.failed
    if failed is not None:
        where = f"step {failed.step} ({failed.kind}{', ' + failed.image if failed.image else ''})"
        print(f"{PROG}: {path}: {where} failed: {failed.error}", file=sys.stderr)
    elif not ctx.json:
        steps = sum(1 for r in report.results if not r.cleanup)
        left = "".join(f"; {s.name} stays open as {s.id}" for s in report.open_sessions)
        print(f"plan {path}: ok ({steps} step{'s' if steps != 1 else ''}{left})")
    code: int = report.exit_code
    return code


def _step_line(r: Any) -> str:
    label = "cleanup" if r.cleanup else f"step {r.step}"
    head = f"{label} {r.kind}" + (f" {r.image}" if r.image else "") + f": {r.status}"
    if r.ok:
        return head + (f": {r.detail}" if r.detail else "")
    return head + f" (exit code {r.exit_code}): {r.error}"

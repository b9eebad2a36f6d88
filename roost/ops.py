"""The command line of image export and batch plans: read the arguments, call the engine, print.

Commands get the context every command gets (``args``, ``json``, ``quiet``,
``progress`` and a lazily built ``engine``). Like the rest of the command
line, this module imports nothing heavy until a command runs.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROG = "roost"


def cmd_image_export(ctx: Any) -> int:
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


def cmd_batch(ctx: Any) -> int:
    import signal

    from core import batch
    from core.errors import BadInput

    from .output import emit_json

    if getattr(ctx.args, "host", None):
        from .fleet import batch_hosts

        return batch_hosts(ctx, ctx.args.host)  # the plan runs on each host, over ssh
    path = ctx.args.plan
    try:
        with open(path, "rb") as f:
            data = f.read(batch.MAX_PLAN_BYTES + 1)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except OSError as e:
        raise BadInput(f"{path}: {e.strerror}") from None
    plan = batch.parse(data, path)
    if ctx.args.check:
        if ctx.json:
            emit_json({"file": path, "ok": True, "steps": len(plan.steps)})
        elif not ctx.quiet:
            print(f"{path}: a valid plan of {len(plan.steps)} step(s)", file=sys.stderr)
        return 0

    def show(result: batch.StepResult) -> None:
        if not ctx.json:
            print(_step_line(result), flush=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # the plan stops and ends what it began

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        report = ctx.engine.run_plan(plan, on_result=show, output=2 if ctx.json else 1)
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

"""The command line of several hosts: image push and pull, their plumbing, summary, batch on several hosts.

``image push NAME HOST`` and ``image pull HOST NAME`` talk to the roost on
HOST over ssh (see core/replicate.py); ``image inventory``, ``image send``
and ``image receive`` are what they run there (and work between any two
roosts a pipe joins). ``summary`` is what the console's Hosts pane polls.
``batch PLAN --host A --host B`` checks the plan here, then runs it on
every host at once and reports each host's result.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROG = "roost"


def _host(spec: str) -> Any:
    from core import hosts

    return hosts.resolve(spec)


def _numbers(values: list[int]) -> str:
    return ", ".join(map(str, values))


def _describe(result: dict[str, Any], verb: str, where: str, at: str) -> str:
    """One line on what a transfer did; *at* says where the receiving image is ("on b", "here")."""
    from core.units import human_size

    image = result["image"]
    gens = result.get("generations") or []
    if not gens:
        return f"{image} {at} is at generation {result['current']}: nothing to copy"
    kinds = sorted(set((result.get("kinds") or {}).values()))
    size = human_size(result.get("bytes") or 0)
    made = "a new image, " if result.get("created") else ""
    where = f" {where}" if where else ""
    return (
        f"{verb} {image}{where}: {made}generation{'s' if len(gens) > 1 else ''} {_numbers(gens)} "
        f"({', '.join(kinds)}; {size} streamed); {image} {at} is now at generation {result['current']}"
    )


def cmd_image_push(ctx: Any) -> int:
    a = ctx.args
    host = _host(a.host)
    try:
        result = ctx.engine.push_image(a.name, host, backend=a.backend)
    finally:
        ctx.progress.done()
    if ctx.json:
        from .output import emit_json

        emit_json(result)
    elif not ctx.quiet:
        print(_describe(result, "pushed", f"to {host.name}", f"on {host.name}"), file=sys.stderr)
    return 0


def cmd_image_pull(ctx: Any) -> int:
    a = ctx.args
    host = _host(a.host)
    try:
        result = ctx.engine.pull_image(host, a.name, backend=a.backend)
    finally:
        ctx.progress.done()
    if ctx.json:
        from .output import emit_json

        emit_json(result)
    elif not ctx.quiet:
        print(_describe(result, "pulled", f"from {host.name}", "here"), file=sys.stderr)
    return 0


def cmd_image_inventory(ctx: Any) -> int:
    from .output import emit_json

    emit_json(ctx.engine.image_inventory(ctx.args.name))
    return 0


def cmd_image_send(ctx: Any) -> int:
    """Read the receiver's inventory (JSON, to the end of stdin), write the image stream to stdout."""
    import json
    import os

    from core.errors import BadInput

    def theirs() -> Any:  # read once the caller may send
        try:
            return json.loads(sys.stdin.buffer.read(16 << 20))
        except ValueError:
            raise BadInput("image send reads the receiver's inventory (image inventory --json) on stdin") from None

    sys.stdout.flush()
    try:
        ctx.engine.send_image(ctx.args.name, theirs, sys.stdout.fileno(), backend=ctx.args.backend)
    finally:
        ctx.progress.done()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the reader sees the end of the stream now, not at our exit
    os.close(devnull)
    return 0


def cmd_image_receive(ctx: Any) -> int:
    if ctx.args.inventory_first:  # for a sender that plans from it, in the same session (image push)
        import json

        sys.stdout.write(json.dumps(ctx.engine.image_inventory(ctx.args.name)) + "\n")
        sys.stdout.flush()
    try:
        result = ctx.engine.receive_image(ctx.args.name, sys.stdin.fileno())
    finally:
        ctx.progress.done()
    if ctx.json:
        from .output import emit_json

        emit_json(result)
    elif not ctx.quiet:
        print(_describe(result, "received", "", "here"), file=sys.stderr)
    return 0


def cmd_summary(ctx: Any) -> int:
    from . import __version__
    from .output import emit_json

    data = ctx.engine.summary()
    data["version"] = __version__
    if ctx.json:
        emit_json(data)
        return 0
    held = sum(1 for lk in data["locks"] if not lk["stale"])
    print(f"host: {data['host']} (roost {__version__})")
    print(f"load: {' '.join(map(str, data['load']))} on {data['cpus']} CPUs")
    print(f"images: {len(data['images'])}, sessions: {len(data['sessions'])}, locks: {held} held")
    return 0


# --- batch on several hosts ----------------------------------------------------------------------


def batch_hosts(ctx: Any, specs: list[str]) -> int:
    """Run the plan on every host in *specs* at once; one block of output per host, in the order given."""
    import threading

    from core.actor import Actor
    from core.callerfs import CallerFiles

    from . import plans
    from .output import emit_json

    path = ctx.args.plan
    data = CallerFiles(Actor.current()).read(path, plans.MAX_PLAN_BYTES)  # with the caller's rights
    plan = plans.parse(data, path)  # a bad plan is refused here, before any host is asked
    hosts = [_host(s) for s in dict.fromkeys(specs)]
    words = ["--json", "batch", "-"] + (["--check"] if ctx.args.check else [])
    results: list[dict[str, Any]] = [{} for _ in hosts]

    def run(i: int) -> None:
        results[i] = _run_on(hosts[i], words, data, path)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(hosts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [r for r in results if not r["ok"]]
    code = failed[0]["exit_code"] if failed else 0
    if ctx.json:
        emit_json({"file": path, "steps": len(plan.steps), "ok": not failed, "exit_code": code, "hosts": results})
    else:
        for r in results:
            _show(r, path)
        if not failed:
            print(f"plan {path}: ok on {len(results)} host{'s' if len(results) != 1 else ''}")
    if failed:
        names = ", ".join(r["host"] for r in failed)
        print(f"{PROG}: plan {path} failed on {len(failed)} of {len(results)} hosts ({names})", file=sys.stderr)
    return int(code)


def _run_on(host: Any, words: list[str], data: bytes, path: str) -> dict[str, Any]:
    import json

    from core import ssh
    from core.errors import RoostError

    out: dict[str, Any] = {"host": host.name, "ok": False, "exit_code": 5, "report": None, "error": None, "output": ""}
    try:
        conn = ssh.Connection(host, batch=True)
        conn.connect()
        proc = conn.run(words, input=data)
    except RoostError as e:
        out["error"] = str(e)
        return out
    # The plan is "-" there (it came on stdin): its messages name this host's file instead.
    said = proc.stderr.decode(errors="replace").splitlines()
    stderr = "".join(f"roost: {path}:{ln[9:]}\n" if ln.startswith("roost: -:") else f"{ln}\n" for ln in said)
    out["exit_code"] = proc.returncode
    out["ok"] = proc.returncode == 0
    try:
        report = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        report = None
    if isinstance(report, dict):
        report["file"] = path
        out["report"] = report
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if proc.returncode != 0:
        if proc.returncode == 255 and not conn.alive():
            out["exit_code"] = 5
            out["error"] = f"lost the connection to {host.name}"
        else:
            out["error"] = ssh.remote_error(lines[-1].encode() if lines else b"", proc.returncode, host)
    out["output"] = stderr
    return out


def _show(result: dict[str, Any], path: str) -> None:
    from types import SimpleNamespace

    from .handlers import _step_line

    state = "ok" if result["ok"] else f"failed (exit code {result['exit_code']})"
    print(f"== {result['host']}: {state}")
    report = result.get("report")
    shown: set[str] = set()
    if report and isinstance(report.get("steps"), list):
        for step in report["steps"]:
            r = SimpleNamespace(**step)
            r.ok = step.get("status") == "ok"
            print(f"  {_step_line(r)}")
        for s in report.get("sessions") or []:
            print(f"  {s.get('name')} stays open as {s.get('id')}")
    for line in result.get("output", "").splitlines():
        if line.strip() and line not in shown:
            print(f"  {line}")
            shown.add(line)
    if result.get("error") and not result.get("output"):
        print(f"  {PROG}: {result['error']}")

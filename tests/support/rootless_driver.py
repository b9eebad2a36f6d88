"""A small command line over core.rootless.lifecycle, run as an ordinary user by the tests and bench/rootless.py.

roost's own command line reaches the rootless mode once the engine's
refactoring has landed (docs/design.md, "Rootless mode: integration"); until
then this is how the rootless suite and benchmark drive the mechanism from a
real unprivileged process. It parses its few forms by hand, like
roost/fastpath.py, so whole-process timings are not argparse's.

    driver.py create NAME (--from-dir D | --from-tar F | --mmdebstrap SUITE [--variant V]) [--profile P]
    driver.py begin IMAGE [--maintenance] [--name N]     prints the session id
    driver.py run ID [-u USER] [-d DIR] -- CMD…          exits as CMD did
    driver.py enter ID [-u USER]                          a login shell (reads stdin)
    driver.py end ID
    driver.py promote ID [-m MESSAGE]                     prints the generation
    driver.py auto IMAGE [-u USER] -- CMD…                an automatic session
    driver.py recover [ID]                                prints what it did (JSON)
    driver.py list                                        sessions (JSON)
    driver.py history IMAGE                               generations (JSON)
    driver.py export IMAGE FILE [--force]
    driver.py remove IMAGE
    driver.py doctor                                      problems (JSON)

Errors print ``roost: MESSAGE`` and exit with the error's code (2 bad input,
3 conflict, 4 not found, 5 system error).
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def _options(args: list[str], flags: dict[str, bool]) -> tuple[dict[str, str | bool], list[str], list[str]]:
    """Split *args* into options (name -> value, or True for a flag), positionals and what follows ``--``."""
    opts: dict[str, str | bool] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return opts, positional, args[i + 1 :]
        if arg.startswith("-") and arg in flags:
            if flags[arg]:
                opts[arg] = args[i + 1]
                i += 2
                continue
            opts[arg] = True
        elif arg.startswith("-"):
            raise SystemExit(f"driver: unknown option {arg}")
        else:
            positional.append(arg)
        i += 1
    return opts, positional, []


def _str(value: str | bool | None) -> str | None:
    return value if isinstance(value, str) else None


def main(argv: list[str]) -> int:
    from core.errors import RoostError

    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if command in ("run", "enter"):
        _fast(command, args)  # returns only when the full path must decide
    from core.rootless import lifecycle

    try:
        ctx = lifecycle.Context()
        return _dispatch(ctx, command, args)
    except RoostError as e:
        print(f"roost: {e}", file=sys.stderr)
        return e.exit_code


def _fast(command: str, args: list[str]) -> None:
    """``run`` and ``enter`` through core.rootless.fast, as roost's own fast path will call it."""
    from core.errors import RoostError
    from core.rootless import config, fast

    try:
        opts, pos, cmd = _options(args, {"-u": True, "-d": True})
        settings = config.load()
    except (RoostError, SystemExit, IndexError):
        return
    if not pos or (command == "run" and not cmd):
        return
    fast.run(
        settings,
        pos[0],
        cmd if command == "run" else None,
        user=_str(opts.get("-u")),
        directory=_str(opts.get("-d")),
    )


def _dispatch(ctx: object, command: str, args: list[str]) -> int:
    from core.rootless import lifecycle

    run_flags = {"-u": True, "-d": True}
    if command in ("run", "enter"):
        opts, pos, cmd = _options(args, run_flags)
        lifecycle.exec_in(
            ctx,
            pos[0],
            cmd if command == "run" else None,
            user=_str(opts.get("-u")),
            directory=_str(opts.get("-d")),
            caller_cwd=os.getcwd(),
        )
    if command == "begin":
        opts, pos, _ = _options(args, {"--maintenance": False, "--name": True})
        session = lifecycle.begin(ctx, pos[0], name=_str(opts.get("--name")), maintenance="--maintenance" in opts)
        print(session.id)
        return 0
    if command == "end":
        lifecycle.end(ctx, args[0])
        return 0
    if command == "auto":
        opts, pos, cmd = _options(args, {"-u": True})
        return lifecycle.run_auto(ctx, pos[0], cmd, user=_str(opts.get("-u")), caller_cwd="/")
    if command == "promote":
        opts, pos, _ = _options(args, {"-m": True})
        print(lifecycle.promote(ctx, pos[0], _str(opts.get("-m")) or ""))
        return 0
    import json  # not before: begin, run, end and auto print no JSON, and json costs milliseconds

    if command == "recover":
        print(json.dumps(lifecycle.recover(ctx, args[0] if args else None)))
        return 0
    if command == "list":
        out = []
        for session, state in lifecycle.list_sessions(ctx):
            out.append(
                {
                    "id": session.id,
                    "image": session.image,
                    "generation": session.generation,
                    "kind": session.kind,
                    "state": state,
                    "holder": session.backend_data.get("holder"),
                    "mountpoint": session.mountpoint,
                    "clone": session.clone,
                    "processes": lifecycle.processes(session),
                }
            )
        print(json.dumps(out))
        return 0
    if command == "history":
        from core import generations

        store = ctx.store  # type: ignore[attr-defined]
        found = []
        for n in generations.complete(store, args[0]):
            meta = generations.read_meta(store, args[0], n)
            found.append({"generation": n, "message": meta.message, "size": meta.size, "stack": list(meta.stack)})
        print(json.dumps({"current": generations.current(store, args[0]), "generations": found}))
        return 0
    if command == "create":
        from core.importers import Source

        flags = {"--from-dir": True, "--from-tar": True, "--mmdebstrap": True, "--variant": True, "--profile": True}
        opts, pos, _ = _options(args, flags)
        if "--from-dir" in opts:
            source = Source(kind="dir", path=_str(opts["--from-dir"]))
        elif "--from-tar" in opts:
            source = Source(kind="tar", path=_str(opts["--from-tar"]))
        else:
            source = Source(
                kind="mmdebstrap", suite=_str(opts.get("--mmdebstrap")), variant=_str(opts.get("--variant"))
            )
        size = lifecycle.create_image(ctx, pos[0], source, profile=_str(opts.get("--profile")) or "default")
        print(json.dumps({"image": pos[0], "size": size}))
        return 0
    if command == "export":
        opts, pos, _ = _options(args, {"--force": False})
        print(json.dumps({"size": lifecycle.export_image(ctx, pos[0], pos[1], force="--force" in opts)}))
        return 0
    if command == "remove":
        lifecycle.remove_image(ctx, args[0])
        return 0
    if command == "doctor":
        import pwd

        from core.rootless import doctor, ids

        entry = pwd.getpwuid(os.getuid())
        state = ctx.store.root  # type: ignore[attr-defined]
        print(json.dumps(doctor.check(ids.current, entry.pw_name, entry.pw_uid, entry.pw_gid, state)))
        return 0
    print(f"driver: unknown command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

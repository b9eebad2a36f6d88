"""``roost --host HOST COMMAND …``: the same command, run by the roost on another host through ssh.

The output, the JSON and the exit code are the other roost's own: its stdout
and stderr are this process's, and ssh passes its exit status through. The
command is quoted word by word for the remote shell, so every argument
arrives as it was typed. What is allowed there is decided there: ssh
authenticates the caller (as themselves, also under sudo: see core/ssh.py)
and the remote roost applies its own rules, as if they had logged in.

``session enter`` (and the console, with no command and one host) get a terminal with
``ssh -t``; ``session run`` and ``run`` get one when this process has one on
both ends. ``batch PLAN`` runs here and sends the plan to each host (see
roost/fleet.py). Exit code 5 with one line when the host cannot be reached
or the connection is lost. With no command and several hosts, the console
runs here and shows them all (tui/fleet.py).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

#: Commands whose standard input belongs to them (everything else gets /dev/null: ssh must not eat it).
_READS_STDIN = (("session", "run"), ("run",), ("image", "receive"), ("image", "send"), ("schroot",))


def split(argv: Sequence[str]) -> tuple[list[str], list[str], list[str]] | None:
    """(global options to forward, hosts, the command and its words); None if argv names no global --host.

    The global options are those of roost.global_options' table, spelt in full
    (``--root DIR`` or ``--root=DIR``); anything else before the command
    leaves the decision to argparse.
    """
    from .global_options import OPTIONS

    by_flag = {flag: o for o in OPTIONS for flag in o.flags}
    forward: list[str] = []
    hosts: list[str] = []
    i = 0
    n = len(argv)
    while i < n and argv[i].startswith("-") and argv[i] != "--":
        name, eq, value = argv[i].partition("=")
        option = by_flag.get(name if eq else argv[i])
        if option is None:
            return None
        if option.action == "store":
            if not eq:
                if i + 1 >= n:
                    return None  # argparse says what is missing
                value = argv[i + 1]
                i += 1
            if option.dest == "host":
                hosts.append(value)
            else:
                forward += [name, value]
        elif eq:
            return None
        else:
            forward.append(argv[i])
        i += 1
    if not hosts:
        return None
    return forward, hosts, list(argv[i:])


def main(argv: Sequence[str]) -> int | None:
    """Run *argv* on the host its ``--host`` names; None when there is no global ``--host``."""
    parts = split(argv)
    if parts is None:
        return None
    forward, hosts, words = parts
    if words[:1] == ["batch"]:
        from .cli import main as cli_main

        return cli_main([*forward, *words, *(f"--host={h}" for h in hosts)])
    from core.errors import RoostError

    if not words and len(hosts) > 1:
        # The console here, showing those hosts beside this one (tui/fleet.py).
        from .cli import build_parser, console

        return console(build_parser().parse_args(forward), hosts)
    if len(hosts) > 1:
        print("roost: --host names one host (only batch and the console take several)", file=sys.stderr)
        return 2
    try:
        return _run(hosts[0], forward, words)
    except RoostError as e:
        print(f"roost: {e}", file=sys.stderr)
        return e.exit_code


def _run(spec: str, forward: list[str], words: list[str]) -> int:
    import os
    import subprocess

    from core import hosts, ssh

    host = hosts.resolve(spec)
    interactive = _isatty(0) and _isatty(1)
    conn = ssh.Connection(host, batch=not _isatty(0))
    conn.connect()
    remote = [*forward, *words]
    if not words or words[:2] == ["session", "enter"]:
        # The console or a login shell: ssh becomes this process, with a terminal.
        argv = conn.argv(remote, tty=True)
        sys.stdout.flush()
        sys.stderr.flush()
        conn.caller.become()
        os.execvp(argv[0], argv)
    reads = any(tuple(words[: len(c)]) == c for c in _READS_STDIN)
    tty = interactive and words[:2] in (["session", "run"], ["run"])
    sys.stdout.flush()
    proc = conn.popen(remote, tty=tty, stdin=None if reads else subprocess.DEVNULL)
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:
            continue  # ssh got the same ctrl-c; its exit status tells what happened
    if code < 0:
        return 128 - code
    if conn.lost(code):
        print(f"roost: lost the connection to {host.name}", file=sys.stderr)
        return 5
    return code


def _isatty(fd: int) -> bool:
    import os

    try:
        return os.isatty(fd)
    except OSError:
        return False

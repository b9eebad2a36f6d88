"""A sweep of every option that takes a value, fed with hostile values by sudo users.

The options come from the command line's own parser and the schroot door's
option table, so a new option is swept as soon as it exists. Each value goes
in as a sudo user with no rights (eve) and as one with sessions of their own
(bob): no traceback, one line for every failure, and nothing changes outside
the caller's own objects.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

import pytest

from roost.cli import build_parser
from tests.support import stats
from tests.support.trust import Cast, state_fingerprint

HOSTILE = (
    "--help",
    "-rf",
    "../../../../etc/shadow",
    "/etc/shadow",
    "x" * 5000,
    "bad\nline\x1b[2J\x07",
    "--root=/tmp",
    "",
)

#: What each command needs besides the option under test (positionals, required options).
BASE: dict[tuple[str, ...], list[str]] = {
    ("image", "create"): ["swept", "--from-dir", "/nonexistent"],
    ("image", "convert"): ["shared", "--backend", "dir", "--to", "swept"],
    ("image", "import-schroot"): ["--dry-run", "/nonexistent"],
    ("image", "list"): [],
    ("image", "info"): ["shared"],
    ("image", "history"): ["shared"],
    ("image", "rollback"): ["shared"],
    ("image", "remove"): ["private"],
    ("image", "gc"): ["--dry-run"],
    ("image", "export"): ["shared", "/tmp/roost-sweep.tar"],
    ("session", "begin"): ["shared"],
    ("session", "run"): ["SID", "--", "/bin/true"],
    ("session", "enter"): ["SID"],
    ("session", "end"): ["VICTIM"],
    ("session", "promote"): ["VICTIM"],
    ("session", "list"): [],
    ("session", "info"): ["SID"],
    ("session", "recover"): ["SID"],
    ("session", "network"): ["SID", "none"],
    ("run",): ["shared", "--", "/bin/true"],
    ("locks",): [],
    ("doctor",): [],
    ("profile", "list"): [],
    ("profile", "show"): ["default"],
    ("batch",): ["/nonexistent"],
    ("image", "push"): ["shared", "ssh://127.0.0.1:1"],
    ("image", "pull"): ["ssh://127.0.0.1:1", "swept"],
    ("image", "inventory"): ["shared"],
    ("image", "send"): ["shared"],
    ("image", "receive"): ["swept"],
    ("summary",): [],
    ("image", "diff"): ["shared", "1", "1"],
    ("session", "diff"): ["SID"],
    ("image", "publish"): ["shared", "--sbuild-tarball", "/tmp/roost-sweep-publish"],
}


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for action in subs:
        for name, sub in action.choices.items():
            yield from _commands(sub, (*path, name))


def _valued(parser: argparse.ArgumentParser) -> list[tuple[str | None, argparse.Action]]:
    """(option string or None for a positional, action) for everything that takes a value."""
    out: list[tuple[str | None, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.nargs == 0:
            continue
        if action.option_strings:
            out.append((action.option_strings[-1], action))
        elif action.dest not in ("command", "files"):
            out.append((None, action))
    return out


def cli_cases() -> list[list[str]]:
    """One argv per (command, option, hostile value)."""
    parser = build_parser()
    cases: list[list[str]] = []
    for value in HOSTILE:
        cases.append(["--root", value, "image", "list"])
    for path, sub in _commands(parser):
        if path == ("schroot",):
            continue
        base = BASE[path]
        positionals = [a for a in base if not a.startswith("-")]
        for option, action in _valued(sub):
            for value in HOSTILE:
                if option is None:
                    index = [a.dest for _, a in _valued(sub) if _ is None].index(action.dest)
                    argv = list(base)
                    if index < len(positionals):
                        argv[argv.index(positionals[index])] = value
                    else:
                        argv.append(value)
                    cases.append([*path, *argv])
                elif option in base:
                    argv = list(base)
                    argv[argv.index(option) + 1] = value
                    cases.append([*path, *argv])
                else:
                    cut = base.index("--") if "--" in base else len(base)
                    cases.append([*path, *base[:cut], f"{option}={value}", *base[cut:]])
    return cases


def schroot_cases() -> list[list[str]]:
    from roost.schroot import options as schroot

    cases = []
    for long, (takes, _) in schroot._LONG.items():
        if not takes:
            continue
        for value in HOSTILE:
            if long == "chroot":
                cases.append(["-c", value, "--", "/bin/true"])
            else:
                cases.append(["-c", "shared", f"--{long}={value}", "--", "/bin/true"])
    return cases


def _fill(argv: list[str], sid: str, victim: str) -> list[str]:
    return [{"SID": sid, "VICTIM": victim}.get(a, a) for a in argv]


def _check(result: object, argv: list[str]) -> None:
    r = result
    stats.bump("hostile inputs tried")
    assert "Traceback" not in r.err, (argv, r.err[-2000:])  # type: ignore[attr-defined]
    if r.code not in (0,):  # type: ignore[attr-defined]
        lines = [ln for ln in r.err.splitlines() if ln.strip()]  # type: ignore[attr-defined]
        assert len(lines) == 1, (argv, r.err[-2000:])  # type: ignore[attr-defined]


@pytest.mark.slow
def test_every_option_with_a_value_withstands_hostile_values(cast: Cast) -> None:
    inst = cast.inst
    victim_id = inst.sudo(cast.rita, "session", "begin", "shared", "--maintenance").out.strip()
    own = inst.sudo(cast.bob, "session", "begin", "shared").out.strip()
    try:
        images_before = state_fingerprint(inst)
        victim_record = (inst.state / "sessions" / f"{victim_id}.json").read_bytes()
        for user in (cast.eve, cast.bob):
            for argv in cli_cases():
                _check(inst.sudo(user, *_fill(argv, own, victim_id), timeout=60), argv)
            for argv in schroot_cases():
                _check(inst.sudo_schroot(user, *argv, timeout=60), argv)
        after = state_fingerprint(inst)
        # bob's own session and its lock may have changed; nothing else did
        mine = {k for k in set(images_before) | set(after) if own in k or k.startswith("sessions/")}
        assert {k: v for k, v in after.items() if k not in mine} == {
            k: v for k, v in images_before.items() if k not in mine
        }
        assert (inst.state / "sessions" / f"{victim_id}.json").read_bytes() == victim_record
        listed = {s["id"] for s in json.loads(inst.root_ok("session", "list", "--json"))}
        assert victim_id in listed
        assert not (inst.state / "images" / "swept").exists()
    finally:
        for s in json.loads(inst.root_ok("session", "list", "--json")):
            inst.root("session", "end", "--force", s["id"])

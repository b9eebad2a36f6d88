"""The command line's parsers agree: one table of global options, the fast paths, the way to the schroot door.

argparse (roost.cli) is the full command line. The splitter of global options
(roost.global_options) and the fast paths (roost.fastpath) must read every
form they take exactly as argparse does, and step aside for anything else;
these tests check that against the parser's own option tables, word by word
and on generated command lines. Pure: nothing here runs a command.
"""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost import cli, fastpath, handlers
from roost.global_options import OPTIONS, Split, split, values_of
from roost.main import main

PARSER = cli.build_parser()
DEFAULTS = {o.dest: o.default for o in OPTIONS if o.stores}
CHECKS = settings(max_examples=400, deadline=None)


def options_of(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings]


def subparser(*words: str) -> argparse.ArgumentParser:
    parser = PARSER
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


def abbreviations(flags: list[str]) -> list[str]:
    """Every shortened long option argparse might accept (unambiguous or not)."""
    return sorted({f[:n] for f in flags if f.startswith("--") for n in range(3, len(f))})


GLOBAL_FLAGS = [s for a in options_of(PARSER) for s in a.option_strings]
#: words that may come before the command: every global option, shortened, grouped, glued to a value, wrong
GLOBAL_WORDS = [
    *GLOBAL_FLAGS,
    *abbreviations(GLOBAL_FLAGS),
    *["-qq", "-qh", "-hq", "--root=/r", "--root=", "--root=-x", "--ro=/r", "--headless=1", "--json=", "--bogus"],
    *["-", "--", "-x", "-1"],
]
VALUES = ["/r", "", "-x", "schroot", "locks", "session", "x y", "-1"]
TAILS = [[], ["locks"], ["schroot", "-l"], ["session", "end", "s1"], ["image", "list", "--json"]]


def assert_split_agrees(argv: list[str], found: Split) -> None:
    """argparse reads argv[:found.index] as these global options alone, and the next word as the command."""
    head = argv[: found.index]
    args = PARSER.parse_args(head)
    assert args.group is None and values_of(args) == found.values, argv
    if found.index < len(argv):
        assert not argv[found.index].startswith("-")
        args = PARSER.parse_args([*head, "locks"])
        assert args.group == "locks" and values_of(args) == found.values, argv


# --- the table --------------------------------------------------------------------------


def test_the_parser_takes_its_global_options_from_the_table() -> None:
    actions = options_of(PARSER)
    assert [tuple(a.option_strings) for a in actions] == [o.flags for o in OPTIONS]
    assert [a.dest for a in actions] == [o.dest for o in OPTIONS]
    assert {a.dest: a.default for a in actions if a.dest in DEFAULTS} == DEFAULTS


@pytest.mark.parametrize("flag", GLOBAL_FLAGS)
def test_every_global_option_is_split_as_argparse_reads_it_or_left_to_argparse(flag: str) -> None:
    action = PARSER._option_string_actions[flag]
    option = next(o for o in OPTIONS if flag in o.flags)
    forms = [[flag]] if action.nargs == 0 else [[flag, "/r"], [flag, ""], [flag, "x y"]]
    if action.nargs != 0 and flag.startswith("--"):
        forms += [[f"{flag}=/r"], [f"{flag}="], [f"{flag}=-x"]]
    for form in forms:
        for tail in TAILS:
            found = split(form + tail)
            if not option.fast:
                assert found is None  # -h, --version: argparse acts on them
                continue
            assert found is not None, form + tail  # the plain forms of every other option are split
            assert_split_agrees(form + tail, found)
    if action.nargs != 0:
        assert split([flag, "-x", "locks"]) is None  # argparse refuses a value that looks like an option


@CHECKS
@given(words=st.lists(st.sampled_from(GLOBAL_WORDS + VALUES), max_size=6), tail=st.sampled_from(TAILS))
def test_the_splitter_agrees_with_argparse_or_steps_aside(words: list[str], tail: list[str]) -> None:
    argv = words + tail
    found = split(argv)
    if found is not None:
        assert_split_agrees(argv, found)


# --- the fast paths ------------------------------------------------------------------------

FAST_COMMANDS = [("session", "run"), ("session", "begin"), ("session", "end"), ("run",)]


def fast_reading(argv: list[str]) -> tuple[object, dict[str, object]] | None:
    """The command function and arguments the fast path would use for *argv*, or None (it steps aside)."""
    found = split(argv)
    if found is not None and argv[found.index : found.index + 2] == ["session", "run"]:
        parsed = fastpath.parse(argv)
        if parsed is None:
            return None
        root, sid, command, user, directory, preserve = parsed
        values = {**found.values, "root": root, "id": sid, "command": command, "after_dashes": None}
        return handlers.cmd_session_run, {**values, "user": user, "directory": directory,
                                          "preserve_environment": preserve}  # fmt: skip
    return fastpath.plain_command(argv)


def assert_fast_agrees(argv: list[str]) -> bool:
    """If the fast path takes *argv*, argparse reads it the same way; True if it took it."""
    fast = fast_reading(argv)
    if fast is None:
        return False
    func, values = fast
    try:
        args = cli.parse(argv)
    except (cli.UsageError, SystemExit) as e:
        raise AssertionError(f"the fast path takes {argv}, argparse refuses it: {e}") from None
    assert args.func is func, argv
    for key, value in values.items():
        if key not in ("command", "after_dashes"):
            assert getattr(args, key) == value, (argv, key)
    if func in (handlers.cmd_session_run, handlers.cmd_run):
        mine = list(values["command"] or []) + list(values["after_dashes"] or [])  # type: ignore[call-overload]
        theirs = list(args.command or []) + list(getattr(args, "after_dashes", None) or [])
        assert mine == theirs, argv
    return True


@pytest.mark.parametrize("command", FAST_COMMANDS, ids=" ".join)
def test_every_option_of_a_fast_command_is_read_as_argparse_reads_it_or_left_to_argparse(
    command: tuple[str, ...],
) -> None:
    positional = ["img"] if command in (("run",), ("session", "begin")) else ["s1"]
    needs_command = command in (("run",), ("session", "run"))
    taken = []
    for action in options_of(subparser(*command)):
        for flag in action.option_strings:
            values = ["bob", *(action.choices or ())]  # a choice too, for options that have choices
            forms = [[flag]] if action.nargs == 0 else [*([flag, v] for v in values), [flag, "-x"]]
            if action.nargs != 0 and flag.startswith("--"):
                forms += [[f"{flag}={v}"] for v in values]
            for form in forms:
                for argv in (
                    [*command, *form, *positional],
                    [*command, *positional, *form],
                    ["-q", "--root", "/r", *command, *form, *positional],
                ):
                    if needs_command:
                        argv += ["--", "ls", "-l"]
                    if assert_fast_agrees(argv):
                        taken.append(flag)
    # the fast path is no empty promise: it takes the plain forms of the options build tools use
    expected = {
        ("session", "run"): {"-u", "--user", "-d", "--directory", "-p", "--preserve-environment"},
        ("session", "begin"): {"--name", "--maintenance", "--json", "--network", "--limit"},
        ("session", "end"): {"--force"},
        ("run",): {"-u", "--user", "-d", "--directory", "-p", "--preserve-environment", "--network", "--limit"},
    }[command]
    assert set(taken) == expected


def fast_words(command: tuple[str, ...]) -> list[str]:
    flags = [s for a in options_of(subparser(*command)) for s in a.option_strings]
    return [
        *flags,
        *abbreviations(flags),
        "-up",
        "-pu",
        "--",
        "-",
        "-l",
        "--json",
        "-q",
        "--force",
        "bob",
        "s1",
        "ls",
        "",
        "none",
        "--network=none",
        "--network=bob",
        "--limit=pids=9",
        "pids=9",
    ]


@pytest.mark.parametrize("command", FAST_COMMANDS, ids=" ".join)
def test_the_fast_paths_agree_with_argparse_or_step_aside(command: tuple[str, ...]) -> None:
    @CHECKS
    @given(
        before=st.lists(
            st.sampled_from(["--headless", "-q", "--json", "--root", "/r", "--root=", "--hea"]), max_size=3
        ),
        after=st.lists(st.sampled_from(fast_words(command)), max_size=8),
    )
    def check(before: list[str], after: list[str]) -> None:
        assert_fast_agrees([*before, *command, *after])

    check()


def test_the_network_choices_are_argparses() -> None:
    for command in (("run",), ("session", "begin")):
        (network,) = [a for a in options_of(subparser(*command)) if "--network" in a.option_strings]
        assert tuple(network.choices or ()) == fastpath.NETWORKS


def test_a_command_without_dashes_is_fast_only_when_argparse_reads_it_whole() -> None:
    assert fastpath.parse(["session", "run", "s", "ls", "x"]) == (None, "s", ["ls", "x"], None, None, False)
    # argparse would read -l, -u as options of roost (or refuse them): the full command line decides
    assert fastpath.parse(["session", "run", "s", "ls", "-l"]) is None
    assert fastpath.plain_command(["run", "img", "ls", "-u", "bob"]) is None
    assert fastpath.parse(["session", "run", "-u", "-x", "s", "--", "ls"]) is None
    # argparse takes the command as empty with the session, before options that follow it
    assert fastpath.parse(["session", "run", "bob", "-u", "bob", "bob"]) is None
    assert fastpath.plain_command(["run", "img", "-p", "ls"]) is None
    assert fastpath.parse(["session", "run", "s", "-u", "bob", "--", "ls"]) == (None, "s", ["ls"], "bob", None, False)
    assert fastpath.parse(["session", "run", "-u", "bob", "s", "ls"]) == (None, "s", ["ls"], "bob", None, False)
    for argv in (["session", "run", "bob", "-u", "bob", "bob"], ["run", "img", "-p", "ls"]):
        assert_fast_agrees(argv)


# --- the way to the schroot front door ----------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "values", "rest"),
    [
        (["schroot", "-l"], {}, ["-l"]),
        (["-q", "schroot", "-l"], {"quiet": True}, ["-l"]),
        (["--root", "/x", "--headless", "schroot"], {"root": "/x", "headless": True}, []),
        (["--root=/y", "schroot", "-i", "-q"], {"root": "/y"}, ["-i", "-q"]),
        (["--json", "schroot", "-l"], {"json": True}, ["-l"]),
        (["--root", "schroot", "schroot", "-l"], {"root": "schroot"}, ["-l"]),
        # forms only argparse reads: it decides where the command begins
        (["--head", "--ro=/x", "schroot", "-c", "s", "--", "ls"], {"headless": True, "root": "/x"},
         ["-c", "s", "--", "ls"]),
        (["-qq", "schroot", "--help"], {"quiet": True}, ["--help"]),
    ],
)  # fmt: skip
def test_schroot_requests(argv: list[str], values: dict[str, object], rest: list[str]) -> None:
    assert cli.schroot_request(argv) == ({**DEFAULTS, **values}, rest)


@pytest.mark.parametrize(
    "argv",
    [[], ["session", "run", "x", "--", "schroot"], ["image", "info", "schroot"], ["run", "img", "schroot"],
     ["--", "schroot"], ["--root", "schroot"], ["--bogus", "schroot", "-l"], ["locks", "schroot"]],
)  # fmt: skip
def test_not_schroot_requests(argv: list[str]) -> None:
    assert cli.schroot_request(argv) is None


@CHECKS
@given(words=st.lists(st.sampled_from(GLOBAL_WORDS + VALUES), max_size=5))
def test_schroot_is_found_where_argparse_finds_the_command(words: list[str]) -> None:
    argv = [*words, "schroot", "-l"]
    try:
        request = cli.schroot_request(argv)
    except SystemExit:
        return  # -h or --version before the command: argparse acts on it, as on any command line
    found = split(argv)
    if found is not None:
        expected = (found.values, argv[found.index + 1 :]) if argv[found.index] == "schroot" else None
        assert request == expected
    elif request is not None:
        values, rest = request
        head = argv[: len(argv) - len(rest) - 1]
        assert argv[len(head)] == "schroot"
        args = PARSER.parse_args(head)
        assert args.group is None and values_of(args) == values


def test_global_options_reach_the_door(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["-q", "schroot", "-V"], ["--head", "schroot", "--version"], ["--headless", "-q", "schroot", "-V"]):
        assert main(argv) == 0
        assert "the schroot 1.6.13 command line" in capsys.readouterr().out
    assert main(["--json", "schroot", "-l"]) == 2
    assert capsys.readouterr().err == "roost: --json does not apply to roost schroot (see roost schroot --help)\n"


def test_version_and_help_without_the_parser_print_what_the_parser_prints(capsys: pytest.CaptureFixture[str]) -> None:
    """roost --version and --help take a path of their own (roost.usage): it must say what argparse says."""
    from roost import usage

    with open(usage._help_file(), encoding="utf-8") as f:
        assert f.read() == usage.render(), "roost/help.txt is out of date: run scripts/manpage"
    for option in usage.FAST:
        assert main([option]) == 0
        fast = capsys.readouterr().out
        with pytest.raises(SystemExit) as exit_:
            usage_parser = cli.build_parser()
            usage_parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=usage.WIDTH)  # type: ignore[assignment]
            usage_parser.parse_args([option])
        assert exit_.value.code == 0
        assert fast == capsys.readouterr().out, option

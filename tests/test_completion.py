"""Shell completion: the walker over the argument parser, then real bash and zsh in a terminal."""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.cli import build_parser
from roost.complete import complete, split_line
from tests.support.env import REPO, Env

COMPLETIONS = REPO / "completions"


def words_of(kind_and_candidates: tuple[str, list[tuple[str, str]]]) -> list[str]:
    kind, candidates = kind_and_candidates
    assert kind == "words"
    return [w for w, _ in candidates]


def levels(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """Every level of the command line that has subcommands, with their names."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield words, list(action.choices)
            for name, child in action.choices.items():
                yield from levels(child, (*words, name))


def test_every_command_of_the_parser_is_offered_with_its_help() -> None:
    parser = build_parser()
    found = list(levels(parser))
    assert found[0][0] == () and {"image", "session", "run", "batch"} <= set(found[0][1])
    for words, names in found:
        kind, candidates = complete(parser, list(words), "")
        assert kind == "words" and [w for w, _ in candidates] == names, words
        assert all(help_ for _, help_ in candidates), words
    assert words_of(complete(parser, ["image"], "ex")) == ["export"]


def test_options_and_their_values() -> None:
    parser = build_parser()
    assert words_of(complete(parser, [], "--r")) == ["--root"]
    assert complete(parser, ["--root"], "/x") == ("dirs", [])
    assert complete(parser, [], "--root=/x") == ("dirs", [])
    assert words_of(complete(parser, ["session", "begin", "bb"], "--m")) == ["--maintenance"]
    # an option already given is not offered again
    assert "--maintenance" not in words_of(complete(parser, ["session", "begin", "bb", "--maintenance"], "--"))
    assert complete(parser, ["image", "create", "x", "--from-tar"], "") == ("files", [])
    assert complete(parser, ["image", "create", "x", "--from-dir"], "") == ("dirs", [])
    assert complete(parser, ["image", "create"], "") == ("none", [])  # a new image's name
    assert complete(parser, ["image", "export", "bb"], "") == ("files", [])
    assert complete(parser, ["batch"], "") == ("files", [])
    assert complete(parser, ["session", "run", "s", "-u"], "") == ("users", [])
    assert complete(parser, ["session", "run", "s", "--"], "") == ("commands", [])
    assert complete(parser, ["session", "run", "s", "--", "make"], "") == ("default", [])
    assert words_of(complete(parser, ["run", "bb"], "")) == ["--"]
    assert "--" in words_of(complete(parser, ["run", "bb"], "-"))
    assert complete(parser, ["frobnicate"], "") == ("none", [])


def test_a_partial_command_line_is_split_like_the_shell_does() -> None:
    assert split_line("roost ") == ["roost", ""]
    assert split_line("roost im") == ["roost", "im"]
    assert split_line("roost session run 'a b' x") == ["roost", "session", "run", "a b", "x"]
    assert split_line('roost batch "/srv/my pl') == ["roost", "batch", "/srv/my pl"]
    assert split_line("") == [""]


def test_names_come_from_the_state_root(bb: Env) -> None:
    sid = bb.begin("bb", "--name", "bb-work")
    sid2 = bb.begin("bb", "--maintenance")
    bb.ok("session", "promote", sid2)

    def ask(*words: str) -> list[str]:
        out = bb.ok("__complete", "zsh", "roost", *words).splitlines()
        assert out[0] == "words", out
        return [line.split("\t")[0] for line in out[1:]]

    assert ask("session", "end", "") == [sid]
    assert ask("image", "info", "b") == ["bb"]
    assert ask("image", "rollback", "bb", "") == ["2", "1"]
    assert ask("image", "export", "bb", "x.tar", "--generation", "") == ["2", "1"]
    assert ask("session", "list", "--image", "") == ["bb"]
    assert ask("profile", "show", "s") == ["sbuild"]
    assert ask("image", "create", "x", "--backend", "") == ["overlay", "dir", "btrfs", "zfs", "squashfs", "erofs"]
    assert ask("--root", str(bb.base / "elsewhere"), "image", "info", "") == []
    bash = bb.ok("__complete", "bash", "roost image create x --backend=o").splitlines()
    assert bash == ["words", "overlay\tbackend"]  # bash replaces only what follows the '='
    bb.ok("session", "end", sid)


def test_odd_input_never_shows_a_traceback(env: Env) -> None:
    for args in ((), ("fish",), ("zsh",), ("bash",), ("bash", 'roost batch "unterminated'), ("bash", "roost \\")):
        r = env.roost("__complete", *args)
        assert r.code == 0 and r.err == "" and r.out.split("\n")[0] in ("words", "files", "none"), (args, r)


# --- real shells in a terminal ---------------------------------------------------------------


class Terminal:
    """An interactive shell on a pseudo-terminal, typed at and read from."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: become the shell
            try:
                os.chdir(cwd)
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
        self.seen = b""

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, marker: bytes, limit: float = 60) -> bytes:
        """Everything up to *marker*, which must appear within *limit* seconds (a hung shell fails)."""
        deadline = time.monotonic() + limit
        while marker not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"never saw {marker!r}; last output: {self.seen[-400:]!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    data = b""
                assert data, f"the shell exited; last output: {self.seen[-400:]!r}"
                self.seen += data
        before, _, self.seen = self.seen.partition(marker)
        return before

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        os.close(self.fd)


def launcher(env: Env) -> Path:
    """A directory with a ``roost`` that runs this checkout, for the shell's PATH."""
    bindir = env.base / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "roost"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m roost "$@"\n')
    script.chmod(0o755)
    return bindir


#: After the shell completes, ctrl-x b prints the line being edited between markers spelled so
#: that the echo of the set-up command itself never contains them.
SETUP = {
    "bash": (
        "PS1='$ '; bind 'set bell-style none'; . {completions}/roost.bash; "
        'bind -x \'"\\C-xb": printf "<%s:%s:%s>" BUF "$READLINE_LINE" FUB\'; '
        'complete -p roost; echo "RE""ADY"\n'
    ),
    "zsh": (
        "PS1='$ '; fpath=({completions} $fpath); autoload -Uz compinit; compinit -u -D; "
        'show() {{ print -rn -- "<B${{:-UF}}:$BUFFER:F${{:-UB}}>" }}; zle -N show; bindkey "^Xb" show; '
        'print -r -- ${{_comps[roost]}}; print "RE""ADY"\n'
    ),
}
ARGV = {"bash": ["bash", "--norc", "--noprofile", "-i"], "zsh": ["zsh", "-f", "-i"]}


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_in_a_real_shell(bb: Env, shell: str) -> None:
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed (apt-get install {shell})")
    sid = bb.begin()
    plan = bb.base / "plan.yaml"
    plan.write_text("steps: [gc]\n")
    (bb.base / "other-root").mkdir()
    environ = bb.environ | {"PATH": f"{launcher(bb)}:{os.environ['PATH']}", "HOME": str(bb.base), "TERM": "xterm"}
    term = Terminal(ARGV[shell], environ, str(bb.base))
    try:
        term.type(SETUP[shell].format(completions=COMPLETIONS))
        registered = term.expect(b"READY\r\n")
        assert (b"complete -F _roost roost" if shell == "bash" else b"_roost\r\n") in registered

        def tab(line: str) -> str:
            term.type(line + "\t\x18b")
            term.expect(b"<BUF:")
            shown = term.expect(b":FUB>").decode()
            term.type("\x15")  # ctrl-u: clear the line
            return shown

        cases = [
            ("roost image ex", "roost image export "),
            ("roost session pro", "roost session promote "),
            ("roost session begin bb --maint", "roost session begin bb --maintenance "),
            ("roost image create x --backend o", "roost image create x --backend overlay "),
            ("roost image create x --backend=o", "roost image create x --backend=overlay "),
            ("roost session end b", f"roost session end {sid} "),
            ("roost image info b", "roost image info bb "),
            ("roost image rollback bb ", "roost image rollback bb 1 "),
            (f"roost batch {bb.base}/pla", f"roost batch {bb.base}/plan.yaml "),
            (f"roost --root={bb.base}/oth", f"roost --root={bb.base}/other-root/"),
            ("roost --root /nonexistent image info b", "roost --root /nonexistent image info b"),
        ]
        for typed, expected in cases:
            assert tab(typed) == expected, (shell, typed)
    finally:
        term.close()
        bb.ok("session", "end", sid)


def test_the_zsh_function_is_found_by_compinit(tmp_path: Path) -> None:
    if not shutil.which("zsh"):
        pytest.skip("zsh is not installed (apt-get install zsh)")
    script = f"fpath=({COMPLETIONS} $fpath); autoload -Uz compinit; compinit -u -d {tmp_path}/dump; "
    script += "print -r -- $_comps[roost]"
    proc = subprocess.run(["zsh", "-f", "-c", script], capture_output=True, text=True, check=True)
    assert proc.stdout == "_roost\n" and proc.stderr == ""

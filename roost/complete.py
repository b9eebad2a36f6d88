"""Shell completion computed from the argument parser: ``roost __complete SHELL …`` (hidden).

The bash and zsh scripts in completions/ only pass what was typed and show
what comes back, so completion always matches the command line: commands,
subcommands and options (with their help as descriptions), option values
with choices, and the names of images, sessions, profiles and generations,
read straight from the state root (no engine, no root needed).

Protocol::

    roost __complete bash LINE          LINE: the command line up to the cursor
    roost __complete zsh WORD… CURRENT  the words before the cursor, then the one being completed

The answer is one line naming what to complete — ``words``, ``files``,
``dirs``, ``commands``, ``users``, ``default`` or ``none`` — and, for
``words``, one ``CANDIDATE<TAB>DESCRIPTION`` line per candidate that starts
with what was typed. For bash, candidates of an ``--option=value`` word
start after the ``=``, as bash replaces only that part.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from typing import TextIO

Candidates = list[tuple[str, str]]

#: option -> what its value is
_OPTION_KINDS = {
    "--root": "dirs",
    "--from-dir": "dirs",
    "--from-tar": "files",
    "--image": "images",
    "--profile": "profiles",
    "--backend": "backends",
    "--user": "users",
    "--generation": "generations",
}


def main(argv: Sequence[str], out: TextIO | None = None) -> int:
    stream = out if out is not None else sys.stdout
    try:
        kind, candidates = answer(argv)
    except Exception:  # noqa: BLE001 - completion must never spill a traceback into the shell
        kind, candidates = "none", []
    lines = [kind, *(f"{word}\t{help_}" for word, help_ in candidates)]
    stream.write("\n".join(lines) + "\n")
    return 0


def answer(argv: Sequence[str]) -> tuple[str, Candidates]:
    if not argv:
        return "none", []
    shell, rest = argv[0], list(argv[1:])
    if shell == "bash":
        words = split_line(rest[0] if rest else "")
        before, current = words[1:-1], words[-1]
    elif shell == "zsh":
        if not rest:
            return "none", []
        before, current = rest[1:-1], rest[-1]
    else:
        return "none", []
    from .cli import build_parser

    kind, candidates = complete(build_parser(), before, current)
    if shell == "bash" and kind == "words" and current.startswith("-") and "=" in current:
        # bash replaces only what follows the last '=' of the word (it is in COMP_WORDBREAKS)
        cut = current.rfind("=") + (0 if current.endswith("=") else 1)
        candidates = [(w[cut:], h) for w, h in candidates]
    return kind, candidates


def split_line(line: str) -> list[str]:
    """Words of a partial command line; the last one is the word being typed (maybe empty)."""
    for closing in ("", '"', "'"):
        try:
            words = shlex.split(line + closing)
            break
        except ValueError:
            continue
    else:
        words = line.split()
    if not line or (line[-1].isspace() and not line.endswith("\\ ")):
        words.append("")
    if not words:
        words = [""]
    return words


# --- walking the parser ------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def complete(parser: argparse.ArgumentParser, before: Sequence[str], current: str) -> tuple[str, Candidates]:
    """What may follow *before* (the words after ``roost``), starting with *current*."""
    root: str | None = None
    values: dict[str, str] = {}  # dest -> value, for generations of the image named earlier
    used: set[argparse.Action] = set()
    expect: argparse.Action | None = None
    position = 0
    dashes: list[str] | None = None
    for word in before:
        if dashes is not None:
            dashes.append(word)
            continue
        if expect is not None:
            values[expect.dest] = word
            if expect.dest == "root":
                root = word
            expect = None
            continue
        if word == "--":
            dashes = []
            continue
        if word.startswith("-") and word != "-":
            name, eq, value = word.partition("=")
            action = parser._option_string_actions.get(name)
            if action is not None:
                used.add(action)
                if _takes_value(action):
                    if eq:
                        values[action.dest] = value
                        root = value if action.dest == "root" else root
                    else:
                        expect = action
            continue
        sub = _subparsers(parser)
        if sub is not None:
            chosen = sub.choices.get(word)
            if chosen is None:
                return "none", []
            parser, position = chosen, 0
            continue
        positionals = _positionals(parser)
        if position < len(positionals):
            values[positionals[position].dest] = word
            if positionals[position].nargs not in ("*", "+"):
                position += 1
    if expect is not None:
        return _values(expect, current, values, root, parser)
    if dashes is not None:
        return ("commands", []) if not dashes else ("default", [])
    if current.startswith("-"):
        name, eq, value = current.partition("=")
        if eq:
            action = parser._option_string_actions.get(name)
            if action is None or not _takes_value(action):
                return "none", []
            kind, found = _values(action, value, values, root, parser)
            return kind, [(f"{name}={w}", h) for w, h in found]
        return "words", _options(parser, used, current)
    sub = _subparsers(parser)
    if sub is not None:
        helps = {a.dest: a.help for a in sub._choices_actions}
        return "words", [
            (n, helps.get(n) or "")
            for n in sub.choices
            if n.startswith(current) and helps.get(n) != argparse.SUPPRESS and not n.startswith("_")
        ]
    positionals = _positionals(parser)
    if position < len(positionals):
        action = positionals[position]
        if action.dest == "command" and action.nargs == "*":
            return "words", [("--", "then the command and its arguments")] if "--".startswith(current) else []
        return _values(action, current, values, root, parser)
    return "none", []


def _options(parser: argparse.ArgumentParser, used: set[argparse.Action], current: str) -> Candidates:
    out: Candidates = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or (action in used and not isinstance(action, argparse._AppendAction)):
            continue
        for option in action.option_strings:
            if option.startswith("--") and option.startswith(current):
                out.append((option, action.help or ""))
    if any(a.dest == "command" and a.nargs == "*" for a in _positionals(parser)) and "--".startswith(current):
        out.append(("--", "then the command and its arguments"))
    return out


def _kind(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    for option in action.option_strings:
        if option in _OPTION_KINDS:
            return _OPTION_KINDS[option]
    if action.option_strings:
        return "none"
    dest, prog = action.dest, parser.prog.split()
    if dest == "image":
        return "images"
    if dest == "id":
        return "sessions"
    if dest in ("generation", "against"):
        return "generations"
    if dest in ("file", "plan"):
        return "files"
    if dest == "name":
        if prog[-2:] == ["profile", "show"]:
            return "profiles"
        if prog[-2:] == ["image", "create"]:
            return "none"  # a new name
        if "image" in prog:
            return "images"
    return "default"


def _values(
    action: argparse.Action,
    current: str,
    values: dict[str, str],
    root: str | None,
    parser: argparse.ArgumentParser,
) -> tuple[str, Candidates]:
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return "words", [(str(c), "") for c in action.choices if str(c).startswith(current)]
    kind = _kind(action, parser)
    if kind in ("files", "dirs", "users", "default", "none"):
        return kind, []
    image = values.get("name") or values.get("image")
    return "words", [(n, h) for n, h in names(kind, root, image) if n.startswith(current)]


# --- names, straight from the state root ------------------------------------------------


def names(kind: str, root: str | None, image: str | None = None) -> Candidates:
    from core import settings
    from core.names import is_valid_name

    conf = settings.load(root)
    state = conf.state_root
    if kind == "images":
        return [(n, "image") for n in _listdir(os.path.join(state, "images")) if is_valid_name(n)]
    if kind == "sessions":
        found = _listdir(os.path.join(state, "sessions"))
        return [(n[:-5], "session") for n in found if n.endswith(".json") and is_valid_name(n[:-5])]
    if kind == "generations":
        if image is None or not is_valid_name(image):
            return []
        entries = set(_listdir(os.path.join(state, "images", image, "generations")))
        numbers = sorted(int(n) for n in entries if n.isdigit() and f"{n}.yaml" in entries)
        return [(str(n), f"generation of {image}") for n in reversed(numbers)]
    if kind == "profiles":
        from core.profiles import profile_names

        return [(n, "profile") for n in profile_names(conf.profiles_dir)]
    if kind == "backends":
        from core import backends

        return [(n, "backend") for n in backends.names()]
    return []


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []

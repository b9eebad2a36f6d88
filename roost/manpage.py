"""roost(8), generated from the argument parser: ``python -m roost.manpage > man/roost.8``.

Every command, option and help text comes from :func:`roost.cli.build_parser`;
the sections argparse knows nothing of (exit status, environment, files)
are written here. The output depends only on the parser and the version, so
tests/test_ops.py can regenerate the page and compare it with the committed
one (``scripts/manpage`` rewrites it).
"""

from __future__ import annotations

import argparse
import re
import sys

from . import __version__
from .schroot.options import HELP as SCHROOT_HELP

DESCRIPTION = """\
roost manages chroot images and the sessions cloned from them on Linux build hosts: \
what schroot does for sbuild, with copy-on-write sessions and images that have a history.
.PP
An image (e.g. bookworm) is a named root file system with a history of generations. \
A session is a writable copy-on-write clone of one generation, mounted at \
/run/roost/mnt/ID and ready to run commands in; ending it leaves nothing behind. \
A maintenance session holds the image's writer lock and may be promoted: its state \
becomes the image's next generation, switched atomically, and only if the image has \
not moved since the session began (compare-and-swap). Any older generation can be \
made current again with rollback.
.PP
Every lock shows who holds it (pid, user, operation, since); a lock whose holder died \
is shown as stale and never blocks. After a reboot, session recover \\-\\-all (run at \
boot by roost-recover.service) mounts every session again with its changes.
.PP
With no command, roost opens the operator console. With \\-\\-headless it never draws \
or prompts; listings and info take \\-\\-json. Every error is one line on standard \
error, and a refused operation changes nothing."""

EXIT_STATUS = [
    ("0", "Success."),
    ("1", "The command inside the session failed (session run and run pass its own exit code through)."),
    ("2", "Bad input: a name, path, option, plan or configuration file; or not root."),
    ("3", "Conflict: locked, busy, an existing name, not a fast-forward."),
    ("4", "Not found: an image, generation or session."),
    ("5", "System error: a mount, a system call or a helper program failed, or another host cannot be reached."),
]

ENVIRONMENT = [
    (
        "ROOST_ROOT",
        "The state root (default: state-root in roost.yaml, else /var/lib/roost); --root overrides it. "
        "This and the other ROOST_ paths are honoured for root itself only: through sudo they are refused.",
    ),
    ("ROOST_RUN", "The runtime root (default: run-root in roost.yaml, else /run/roost)."),
    ("ROOST_CONFIG", "The global settings file (default /etc/roost/roost.yaml)."),
    ("ROOST_PROFILES", "The site profiles directory (default /etc/roost/profiles)."),
    ("ROOST_SYSLOG", "Where operations are logged besides the journal: a datagram socket, or off (default /dev/log)."),
    (
        "SUDO_UID",
        "When root runs roost through sudo, the person roost acts for: sessions are theirs, the journal names "
        "them and the image's access lists decide what they may do (see docs/security.md).",
    ),
    (
        "ROOST_HOSTS",
        "One hosts file to read instead of /etc/roost/hosts.yaml and ~/.config/roost/hosts.yaml "
        "(through sudo, read with the caller's rights).",
    ),
    (
        "ROOST_SSH_DIR",
        "The directory of ssh's control sockets (default $XDG_RUNTIME_DIR/roost-ssh, else /tmp/roost-ssh-UID).",
    ),
]

FILES = [
    (
        "/etc/roost/roost.yaml",
        "Global settings: state-root, run-root, profiles-dir, default-backend, retention, "
        "overlay-max-depth, end-grace, lock-timeout, syslog.",
    ),
    (
        "/etc/roost/profiles/NAME.yaml",
        "Site profiles: what a session gets from the host (mounts, copied files, "
        "users, environment); one here replaces the built-in of the same name.",
    ),
    (
        "/var/lib/roost/images/IMAGE/",
        "An image: image.yaml, generations/N/ and generations/N.yaml, the current "
        "symlink, writer.json (the writer lock of a maintenance session).",
    ),
    ("/var/lib/roost/sessions/ID.json", "A session record; /var/lib/roost/sessions/ID/ holds its clone."),
    ("/var/lib/roost/journal.jsonl", "One JSON line per operation: who, what, when, result."),
    ("/run/roost/mnt/ID/", "Where a session is mounted."),
    ("/run/roost/locks/", "Lock files with their holders (root's, mode 0700)."),
    ("/etc/systemd/system/roost-recover.service", "Runs roost --headless session recover --all at boot."),
    ("/etc/tmpfiles.d/roost.conf", "Creates the runtime root at boot."),
    (
        "/etc/roost/hosts.yaml, ~/.config/roost/hosts.yaml",
        "Other hosts by name: address, port, user, the roost command there, ssh options "
        "(for --host, image push and image pull; the caller's file replaces entries of the site's).",
    ),
]

SEE_ALSO = (
    "schroot(1), sbuild(1), mmdebstrap(1), tar(1), systemd-tmpfiles(8), ssh(1), ssh_config(5), btrfs-send(8), zfs(8)"
)


def esc(text: str) -> str:
    """*text* as troff input: backslashes, minus signs, leading dots and quotes, non-ASCII."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    out = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in out)
    lines = [("\\&" + line) if line[:1] in (".", "'") else line for line in out.split("\n")]
    return "\n".join(lines)


def _prose(text: str) -> str:
    """Hand-written troff (may hold requests such as .PP); only non-ASCII is escaped."""
    return "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:
        try:
            text = text % {**vars(action), "prog": prog}
        except (KeyError, TypeError, ValueError):
            pass
    return text


def _metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, str):
        return action.metavar
    if action.option_strings:
        return action.dest.upper()
    return action.dest.upper() if action.dest != "command" else "COMMAND"


def _option_words(action: argparse.Action) -> str:
    """``\\fB\\-\\-from\\-tar\\fR \\fIFILE\\fR`` (the long name, or the short one if there is none)."""
    longs = [o for o in action.option_strings if o.startswith("--")] or action.option_strings
    names = ", ".join(f"\\fB{esc(o)}\\fR" for o in sorted(action.option_strings, key=len))
    if action.nargs == 0:
        return names if len(action.option_strings) > 1 else f"\\fB{esc(longs[0])}\\fR"
    return f"{names} \\fI{esc(_metavar(action))}\\fR"


def _usage_part(action: argparse.Action) -> str:
    if action.option_strings:
        longs = [o for o in action.option_strings if o.startswith("--")] or action.option_strings
        name = f"\\fB{esc(longs[0])}\\fR"
        return name if action.nargs == 0 else f"{name} \\fI{esc(_metavar(action))}\\fR"
    meta = f"\\fI{esc(_metavar(action))}\\fR"
    if action.dest == "command" and action.nargs == "*":
        return f"\\fB\\-\\-\\fR {meta} [\\fIARG\\fR ...]"
    if action.nargs == "?":
        return f"[{meta}]"
    if action.nargs in ("*", "+"):
        return f"{meta} ..." if action.nargs == "+" else f"[{meta} ...]"
    return meta


def _visible(action: argparse.Action) -> bool:
    return action.help != argparse.SUPPRESS and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))


def synopsis(parser: argparse.ArgumentParser, words: list[str]) -> str:
    """One command's synopsis line: name, positionals, grouped and optional options."""
    grouped: dict[argparse.Action, argparse._MutuallyExclusiveGroup] = {}
    for group in parser._mutually_exclusive_groups:
        for action in group._group_actions:
            grouped[action] = group
    parts = [f"\\fB{esc(' '.join(words))}\\fR"]
    done: set[int] = set()
    actions = [a for a in parser._actions if _visible(a) and not isinstance(a, argparse._SubParsersAction)]
    # positionals first (as typed), then options; the command after -- last
    ordered = [a for a in actions if not a.option_strings and a.dest != "command"]
    ordered += [a for a in actions if a.option_strings]
    ordered += [a for a in actions if not a.option_strings and a.dest == "command"]
    for action in ordered:
        together = grouped.get(action)
        if together is not None:
            if id(together) in done:
                continue
            done.add(id(together))
            members = [m for m in together._group_actions if _visible(m)]
            inner = " | ".join(_usage_part(m).removeprefix("[").removesuffix("]") for m in members)
            parts.append(f"({inner})" if together.required else f"[{inner}]")
            continue
        part = _usage_part(action)
        if action.option_strings and not action.required:
            part = f"[{part}]"
        parts.append(part)
    return " ".join(parts)


def _options_block(parser: argparse.ArgumentParser) -> list[str]:
    out: list[str] = []
    for action in parser._actions:
        if not action.option_strings or not _visible(action):
            continue
        out += [".TP", _option_words(action), esc(_help(action, parser.prog))]
    return out


def _commands(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """Every command below *parser*: a synopsis, its help, its options."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if sub is None:
        return []
    helps = {a.dest: a.help for a in sub._choices_actions}
    out: list[str] = []
    for name, child in sub.choices.items():
        if helps.get(name) == argparse.SUPPRESS or name.startswith("_"):
            continue
        path = [*words, name]
        nested = next((a for a in child._actions if isinstance(a, argparse._SubParsersAction)), None)
        if nested is not None:
            if not words:
                out += [".SS " + f'"{esc(name)}"', esc(helps.get(name) or "")]
            out += _commands(child, path)
            continue
        if not words:
            out += [".SS " + f'"{esc(name)}"']
        out += [".TP", synopsis(child, ["roost", *path]), esc(helps.get(name) or "")]
        options = _options_block(child)
        if options:
            out += [".RS", *options, ".RE"]
    return out


def schroot_section(help_text: str) -> list[str]:
    """The front door's options, from the help text ``roost schroot --help`` prints.

    Its headings (``Actions:``) become subsections, each ``  -x, --long=ARG  What``
    line a tagged paragraph, and the closing prose a paragraph.
    """
    out = [
        ".SH SCHROOT COMPATIBILITY",
        "\\fBroost schroot\\fR [\\fIOPTION\\fR ...] [\\fB\\-\\-\\fR] [\\fICOMMAND\\fR]",
        ".br",
        "\\fBroost\\-schroot\\fR [\\fIOPTION\\fR ...] [\\fB\\-\\-\\fR] [\\fICOMMAND\\fR]",
        ".PP",
        "accept the schroot 1.6 command line that sbuild and people use; docs/schroot.md lists "
        "what follows schroot and the deliberate differences.",
    ]
    prose: list[str] = []
    for line in help_text.split("\n\n", 1)[1].splitlines():
        if not line.strip():
            continue
        if line.endswith(":") and not line.startswith(" "):
            out += [f'.SS "{esc(line[:-1])}"']
        elif option := re.match(r"\s+(-[^\s,]+(?:, -[^\s,]+)*)\s+(.*)", line):
            flags = ", ".join(_schroot_flag(word) for word in option.group(1).split(", "))
            out += [".TP", flags, esc(option.group(2))]
        else:
            prose.append(line.strip())
    if prose:
        out += [".PP", esc(" ".join(prose))]
    return out


def _schroot_flag(word: str) -> str:
    flag, _, value = word.partition("=")
    return f"\\fB{esc(flag)}\\fR" + (f"=\\fI{esc(value)}\\fR" if value else "")


def render(parser: argparse.ArgumentParser) -> str:
    lines = [
        '.\\" roost(8), generated by scripts/manpage from the argument parser of roost: do not edit.',
        f'.TH ROOST 8 "" "roost {esc(__version__)}" "System Administration"',
        ".SH NAME",
        "roost \\- chroot session manager for Linux build hosts",
        ".SH SYNOPSIS",
        "\\fBroost\\fR [\\fIOPTIONS\\fR]",
        ".br",
        "\\fBroost\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGUMENTS\\fR]",
        ".br",
        "\\fBroost \\-\\-headless batch\\fR \\fIPLAN.yaml\\fR",
        ".SH DESCRIPTION",
        _prose(DESCRIPTION),
        ".SH OPTIONS",
        *_options_block(parser),
        ".TP",
        "\\fB\\-h\\fR, \\fB\\-\\-help\\fR",
        "Show the options of roost or of a command (roost image create \\-\\-help), and exit.",
        ".SH COMMANDS",
        *_commands(parser, []),
        *schroot_section(SCHROOT_HELP),
        ".SH EXIT STATUS",
    ]
    for code, text in EXIT_STATUS:
        lines += [".TP", f"\\fB{code}\\fR", esc(text)]
    lines += [
        ".PP",
        "Every error is one line on standard error, and a refused operation changes nothing. "
        "batch exits with the code of its first failing step, 130 when interrupted.",
        ".SH ENVIRONMENT",
    ]
    for name, text in ENVIRONMENT:
        lines += [".TP", f"\\fB{esc(name)}\\fR", esc(text)]
    lines += [".SH FILES"]
    for path, text in FILES:
        lines += [".TP", f"\\fI{esc(path)}\\fR", esc(text)]
    lines += [
        ".SH NOTES",
        "Batch plans are described in docs/batch.md, the design in docs/design.md. "
        "Every operation is logged to the journal file and to syslog (ident roost).",
        ".SH SEE ALSO",
        esc(SEE_ALSO),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    from .cli import build_parser

    sys.stdout.write(render(build_parser()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

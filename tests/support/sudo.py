"""Real unprivileged users reaching roost through a real sudo rule.

A test installation is roost as a host would have it: a configuration file
and launchers owned by root in a directory only root may change, the
launchers written with that configuration's path (as scripts/install writes
them with /etc/roost/roost.yaml), and a sudoers file that lets the test's
users run the two launchers and nothing else, without SETENV. Users, their
group memberships, the sudoers file and every file they own are removed when
the installation is torn down (also after an interrupted run: names carry a
prefix that :func:`sweep` looks for first).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.env import REPO, Result

PREFIX = "roost-t-"
SUDOERS_DIR = Path("/etc/sudoers.d")

LAUNCHER = """#!{python} -IS
# roost launcher of a test installation (tests/support/sudo.py): like bin/roost, with the
# configuration path written into the program rather than taken from the caller.
import sys

sys.path[:0] = [{repo!r}, {site!r}]
import core.settings

core.settings.SITE_CONFIG = {config!r}
from {module} import main

sys.exit(main())
"""


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload,no-any-return]


def sweep(prefix: str) -> None:
    """Remove users, groups and sudoers files a killed earlier run left behind."""
    for path in SUDOERS_DIR.glob(f"{prefix}*"):
        path.unlink()
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix):
            run(["userdel", "--remove", "--force", entry.pw_name])
    for group in grp.getgrall():
        if group.gr_name.startswith(prefix):
            run(["groupdel", group.gr_name])


@dataclass
class Installation:
    """roost installed in *base*, with users reaching it through sudo."""

    base: Path
    prefix: str
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    sudoers: Path | None = None

    @property
    def config(self) -> Path:
        return self.base / "etc" / "roost.yaml"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def runtime(self) -> Path:
        return self.base / "run"

    @property
    def profiles(self) -> Path:
        return self.base / "etc" / "profiles"

    @property
    def roost_bin(self) -> Path:
        return self.base / "bin" / "roost"

    @property
    def schroot_bin(self) -> Path:
        return self.base / "bin" / "roost-schroot"

    # --- set-up --------------------------------------------------------------------

    def write(self, settings: str = "") -> None:
        """The configuration and the two launchers, root's and writable by nobody else."""
        for d in ("etc", "etc/profiles", "bin"):
            (self.base / d).mkdir(mode=0o755, parents=True, exist_ok=True)
        self.config.write_text(
            f"state-root: {self.state}\nrun-root: {self.runtime}\nprofiles-dir: {self.profiles}\n"
            f"syslog: off\nend-grace: 2\nlock-timeout: 20\n{settings}"
        )
        self.config.chmod(0o644)
        site = sysconfig.get_path("purelib")
        for launcher, module in ((self.roost_bin, "roost.main"), (self.schroot_bin, "roost.schroot")):
            import sys

            launcher.write_text(
                LAUNCHER.format(
                    python=sys.executable, repo=str(REPO), site=site, config=str(self.config), module=module
                )
            )
            launcher.chmod(0o755)

    def add_group(self, name: str) -> str:
        group = self.prefix + name
        proc = run(["groupadd", group])
        assert proc.returncode == 0, proc.stderr
        self.groups.append(group)
        return group

    def add_user(self, name: str, groups: Iterable[str] = ()) -> str:
        user = self.prefix + name
        argv = ["useradd", "--create-home", "--shell", "/bin/sh", "--user-group", user]
        if groups:
            argv[1:1] = ["--groups", ",".join(groups)]
        proc = run(argv)
        assert proc.returncode == 0, proc.stderr
        self.users.append(user)
        return user

    def allow_sudo(self, *, extra: Iterable[str] = (), keep: Iterable[str] = ()) -> None:
        """The rule a host gives its build users: the two commands, no SETENV, no password.

        *keep* names variables a careless host adds to ``env_keep`` for the launchers.
        """
        self.sudoers = SUDOERS_DIR / f"{self.prefix}{os.getpid()}"
        commands = [str(self.roost_bin), f"{self.roost_bin} *", str(self.schroot_bin), f"{self.schroot_bin} *", *extra]
        text = f"{','.join(self.users)} ALL=(root) NOPASSWD: {', '.join(commands)}\n"
        kept = " ".join(keep)
        if kept:
            text += f'Defaults!{self.roost_bin} env_keep += "{kept}"\n'
            text += f'Defaults!{self.schroot_bin} env_keep += "{kept}"\n'
        tmp = self.sudoers.with_name(f".{self.sudoers.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o440)
        check = run(["visudo", "-c", "-q", "-f", str(tmp)])
        assert check.returncode == 0, check.stderr + check.stdout
        tmp.rename(self.sudoers)

    def tear_down(self) -> None:
        if self.sudoers is not None and self.sudoers.exists():
            self.sudoers.unlink()
        for user in self.users:
            run(["pkill", "-KILL", "-u", user])
            run(["userdel", "--remove", "--force", user])
        for group in self.groups:
            run(["groupdel", group])

    # --- acting --------------------------------------------------------------------

    def home(self, user: str) -> Path:
        return Path(pwd.getpwnam(user).pw_dir)

    def as_user(
        self, user: str, *argv: str, input: str | None = None, cwd: str | Path | None = None, timeout: float = 120
    ) -> Result:
        """*argv* run by *user* in a login-like environment (no ROOST_*, no PYTHON*)."""
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home(user)), "LANG": "C.UTF-8"}
        proc = subprocess.run(
            [shutil.which("runuser") or "/usr/sbin/runuser", "-u", user, "--", *argv],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            cwd=str(cwd or self.home(user)),
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def sudo(self, user: str, *args: str, **kw: object) -> Result:
        """``sudo roost ARGS`` as *user*."""
        return self.as_user(user, "sudo", "-n", str(self.roost_bin), *args, **kw)  # type: ignore[arg-type]

    def sudo_schroot(self, user: str, *args: str, **kw: object) -> Result:
        """``sudo roost-schroot ARGS`` as *user*."""
        return self.as_user(user, "sudo", "-n", str(self.schroot_bin), *args, **kw)  # type: ignore[arg-type]

    def root(self, *args: str, input: str | None = None, timeout: float = 300) -> Result:
        """roost run by root itself, through the same launcher (the test's own set-up and checks)."""
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        proc = subprocess.run(
            [str(self.roost_bin), *args], input=input, capture_output=True, text=True, env=env, cwd="/", timeout=timeout
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def root_ok(self, *args: str, **kw: object) -> str:
        r = self.root(*args, **kw)  # type: ignore[arg-type]
        assert r.code == 0, f"roost {' '.join(args)} exited {r.code}: {r.err}"
        return r.out


def make_installation(prefix: str, settings: str = "") -> Installation:
    """A fresh installation below a root-only temporary directory (removed by :func:`remove`)."""
    sweep(prefix)
    base = Path(tempfile.mkdtemp(prefix=f"{prefix}inst-", dir="/tmp"))
    base.chmod(0o755)  # root's; the launchers must be reachable for sudo (which runs them as root)
    inst = Installation(base, prefix)
    inst.write(settings)
    return inst


def remove(inst: Installation) -> None:
    """Tear down users and rules, end what is left, and remove the installation (never through a mount)."""
    inst.tear_down()
    if inst.state.exists():
        inst.root("session", "recover", "--all")
        for sid in _ids(inst):
            inst.root("session", "end", "--force", sid)
    from core.fsutil import remove_tree

    remove_tree(str(inst.base))


def _ids(inst: Installation) -> list[str]:
    import json

    r = inst.root("session", "list", "--json")
    return [s["id"] for s in json.loads(r.out)] if r.code == 0 and r.out.strip() else []


def which(program: str) -> bool:
    return shutil.which(program) is not None

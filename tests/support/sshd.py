"""A real OpenSSH server for the tests of several hosts, and state roots standing behind it as "hosts".

The server is ``sshd -D`` with a configuration, host key and user key made
here, listening on 127.0.0.1 on a free high port, started as a child of the
test process and stopped by its pid. Every "host" is a state root of its own
behind that one server: its hosts.yaml entry logs in as root (real root
there, which may name its state root) and runs roost with that root's
environment. Nothing is left behind: the test's ssh master connections are
closed first (their sshd children end with them), then the server is
stopped, and ``/run/sshd`` (sshd's privilege separation directory) is
removed again if it was made here.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.env import REPO, Env

SSHD = "/usr/sbin/sshd"
PRIVSEP = Path("/run/sshd")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, from the high range."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(name))
    return found


class Sshd:
    """One sshd on 127.0.0.1:port, with the keys it needs; stop() ends it and everything it started."""

    def __init__(self, base: Path) -> None:
        if not os.path.exists(SSHD) or not shutil.which("ssh-keygen"):
            raise RuntimeError("openssh-server is not installed (scripts/packages TEST_PACKAGES has it)")
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.host_key = base / "ssh_host_ed25519_key"
        self.user_key = base / "id_ed25519"
        for key in (self.host_key, self.user_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (base / "authorized_keys").write_text(Path(f"{self.user_key}.pub").read_text())
        self.port = free_port()
        self.known_hosts = base / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {Path(f'{self.host_key}.pub').read_text()}")
        self.config = base / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.host_key}\n"
            "PidFile none\n"
            f"AuthorizedKeysFile {base}/authorized_keys\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"  # the keys live in a temporary directory below the world-writable /tmp
            "MaxStartups 100\n"
            "MaxSessions 100\n"
            "LogLevel ERROR\n"
        )
        self.made_privsep = False
        if not PRIVSEP.exists():
            PRIVSEP.mkdir(mode=0o755)
            self.made_privsep = True
        self.log = base / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [SSHD, "-D", "-f", str(self.config), "-E", str(self.log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.log.read_text() if self.log.exists() else ""
                    self.stop()
                    raise RuntimeError(f"sshd did not start: {log.strip()}") from None
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ssh_options(self) -> dict[str, str]:
        return {
            "IdentityFile": str(self.user_key),
            "IdentitiesOnly": "yes",
            "UserKnownHostsFile": str(self.known_hosts),
            "StrictHostKeyChecking": "yes",
            "PasswordAuthentication": "no",
        }

    def entry(self, env: Env, **extra: Any) -> dict[str, Any]:
        """A hosts.yaml entry whose roost is *env*'s (its state root, runtime root and configuration)."""
        keep = ("ROOST_ROOT", "ROOST_RUN", "ROOST_CONFIG", "ROOST_PROFILES", "ROOST_SYSLOG", "PYTHONPATH")
        words = ["env", *(f"{k}={env.environ[k]}" for k in keep if k in env.environ)]
        words += [f"{k}={v}" for k, v in extra.pop("environ", {}).items()]
        words += [sys.executable, "-m", "roost"]
        return {
            "address": "127.0.0.1",
            "port": self.port,
            "user": "root",
            "command": words,
            "ssh-options": self.ssh_options(),
            **extra,
        }

    def close_masters(self, control_dir: Path) -> None:
        """End the ssh master connections whose sockets are in *control_dir*."""
        if not control_dir.is_dir():
            return
        for sock in control_dir.iterdir():
            if sock.is_socket():
                subprocess.run(
                    ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
        deadline = time.monotonic() + 10
        while any(p.is_socket() for p in control_dir.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)

    def sessions(self) -> list[int]:
        """The sshd processes serving connections (children of the listener)."""
        return children(self.pid) if self.proc is not None else []

    def stop(self) -> None:
        if self.proc is not None:
            deadline = time.monotonic() + 10
            while self.sessions() and time.monotonic() < deadline:
                time.sleep(0.05)  # connections end with their masters
            for pid in self.sessions():  # none should be left; never leave one behind either
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self.made_privsep:
            try:
                PRIVSEP.rmdir()
            except OSError:
                pass
            self.made_privsep = False


def write_hosts(path: Path, hosts: dict[str, dict[str, Any]], defaults: dict[str, Any] | None = None) -> Path:
    data: dict[str, Any] = {"hosts": hosts}
    if defaults:
        data["defaults"] = defaults
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


__all__ = ["REPO", "Sshd", "free_port", "write_hosts"]

"""A realistic demo state root, for the console's screenshots and snapshot tests.

    sudo .venv/bin/python -m tests.support.demo --out screenshots     (what scripts/screenshots runs)

Builds, with the real engine, a build host's worth of state in a directory of
its own: four images with histories (one rolled back), ordinary and
maintenance sessions owned by different people (some with processes running
inside, one that needs recovery), a writer lease, a stale lock, and the
journal that all this wrote. The root file systems are busybox trees
(tests/support/rootfs.py) standing in for Debian ones, so the build takes seconds; afterwards the
metadata people read (times, authors, sizes, messages) is rewritten to what a
real host would show, so the pictures read like one and do not change from
one run to the next. With ``holder``, a process holds one lock and another
waits for it (their pids differ per run, so snapshot tests leave them out).
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import signal
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from core import generations, journal, locks, mounts, records
from core.actor import Actor
from core.engine import Engine
from core.fsutil import remove_tree
from core.importers import Source
from core.settings import Settings
from tests.support.rootfs import busybox
from tui.app import RoostConsole

#: The demo's "now": the console's clock is frozen here.
NOW = "2026-11-24T09:30:00Z"
HOST = "buildd-01"
MIB = 1 << 20


def epoch(iso: str) -> float:
    return float(calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")))


# What the demo's images went through: (image, generation, when, author, message, size in MiB).
HISTORY: list[tuple[str, int, str, str, str, float]] = [
    ("bookworm-amd64", 1, "2026-09-02T08:14:05Z", "root", "created from mmdebstrap bookworm (buildd variant)", 212.4),
    ("bookworm-amd64", 2, "2026-09-02T08:31:40Z", "alice", "install build-essential ccache eatmydata", 64.8),
    ("bookworm-amd64", 3, "2026-10-07T14:02:11Z", "bob", "apt-get upgrade: Debian 12.8", 31.2),
    ("bookworm-amd64", 4, "2026-11-10T10:45:52Z", "alice", "add debhelper 13.24 from bookworm-backports", 3.1),
    ("bookworm-amd64", 5, "2026-11-20T16:20:09Z", "bob", "apt-get upgrade: Debian 12.9 (dpkg regression)", 29.7),
    ("trixie-amd64", 1, "2026-10-01T07:00:00Z", "root", "created from mmdebstrap trixie (buildd variant)", 236.9),
    ("trixie-amd64", 2, "2026-10-01T07:22:18Z", "alice", "install build-essential ccache", 71.5),
    ("trixie-amd64", 3, "2026-11-18T09:03:44Z", "carol", "apt-get dist-upgrade to trixie/updates", 44.0),
    ("sid-arm64", 1, "2026-11-03T12:30:00Z", "root", "created from mmdebstrap sid (buildd variant, arm64)", 241.3),
    ("sid-arm64", 2, "2026-11-21T18:11:27Z", "carol", "enable qemu-user binfmt hooks", 1.4),
    ("bullseye-i386", 1, "2025-06-12T09:00:00Z", "root", "created from mmdebstrap bullseye (minbase, i386)", 154.6),
]

# What dpkg says is installed in a generation (every package, by name), where the story installs some.
BOOKWORM_BASE = {"dpkg": "1.21.22", "libc6": "2.36-9+deb12u7", "apt": "2.6.1"}
BUILD = {"build-essential": "12.9", "ccache": "4.8+really4.6.1-1", "eatmydata": "130-2"}
PACKAGES: dict[tuple[str, int], dict[str, str]] = {
    ("bookworm-amd64", 2): BOOKWORM_BASE | BUILD,
    ("bookworm-amd64", 3): BOOKWORM_BASE | BUILD | {"libc6": "2.36-9+deb12u8", "apt": "2.6.1+deb12u1"},
    ("bookworm-amd64", 4): BOOKWORM_BASE
    | BUILD
    | {"libc6": "2.36-9+deb12u8", "apt": "2.6.1+deb12u1", "debhelper": "13.24~bpo12+1"},
    ("bookworm-amd64", 5): BOOKWORM_BASE
    | BUILD
    | {"libc6": "2.36-9+deb12u9", "apt": "2.6.1+deb12u2", "dpkg": "1.21.23", "debhelper": "13.24~bpo12+1"},
    ("trixie-amd64", 2): {"dpkg": "1.22.11", "libc6": "2.40-6", "build-essential": "12.12", "ccache": "4.10.2-1"},
    ("trixie-amd64", 3): {"dpkg": "1.22.21", "libc6": "2.41-6", "build-essential": "12.12", "ccache": "4.11.2-1"},
}
#: What the maintenance session of bookworm-amd64 (on generation 4) installed so far.
SESSION_PACKAGES = {"bookworm-amd64-c1d2e3f4": PACKAGES[("bookworm-amd64", 4)] | {"ccache": "4.8.0-2~bpo12+1"}}

IMAGES = [
    # name, backend, profile, description
    ("bookworm-amd64", "overlay", "sbuild", "Debian 12 build chroot for the amd64 buildds"),
    ("trixie-amd64", "overlay", "buildd", "Debian 13 build chroot"),
    ("sid-arm64", "dir", "sbuild", "unstable, arm64 through qemu-user"),
    ("bullseye-i386", "overlay", "minimal", "kept for old point releases"),
]

# Live sessions: (id, image, kind, owner, created, MiB written inside, a process inside, needs recovery)
SESSIONS: list[tuple[str, str, str, str, str, float, bool, bool]] = [
    ("bookworm-amd64-3f9c2a1e", "bookworm-amd64", "ordinary", "buildd", "2026-11-24T09:12:40Z", 18.0, True, False),
    ("bookworm-amd64-8d04e51b", "bookworm-amd64", "ordinary", "alice", "2026-11-24T08:47:03Z", 2.0, False, False),
    ("bookworm-amd64-c1d2e3f4", "bookworm-amd64", "maintenance", "alice", "2026-11-24T09:05:31Z", 24.0, True, False),
    ("trixie-amd64-0a9b8c7d", "trixie-amd64", "ordinary", "buildd", "2026-11-24T09:27:15Z", 6.0, True, False),
    ("trixie-amd64-5e6f7a8b", "trixie-amd64", "ordinary", "bob", "2026-11-23T17:40:00Z", 0.0, False, False),
    ("sid-arm64-77aa0c21", "sid-arm64", "ordinary", "carol", "2026-11-22T11:03:09Z", 4.0, False, True),
    ("sid-arm64-9f1e2d3c", "sid-arm64", "maintenance", "carol", "2026-11-24T08:02:56Z", 1.0, False, False),
]

STALE_LOCK = (
    "image.trixie-amd64",
    {"pid": 48213, "start": 1, "user": "bob", "operation": "gc"},
    "2026-11-24T06:25:00Z",
)
HELD_LOCK = ("image.bullseye-i386", "carol", "gc", "2026-11-24T09:29:12Z")


def _actor(user: str) -> Actor:
    return Actor(uid=0, user=user, pid=os.getpid(), groups=(), real_root=True)


class Demo:
    """A demo state root under *base*; :meth:`close` takes it all down again."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.settings = Settings(
            state_root=str(base / "state"),
            run_root=str(base / "run"),
            profiles_dir=str(base / "profiles"),
            config_path=str(base / "roost.yaml"),
            end_grace=2.0,
            lock_timeout=20.0,
        )
        self.children: list[int] = []
        self._stamps: list[str] = []

    def engine(self, user: str = "root") -> Engine:
        return Engine(self.settings, actor=_actor(user))

    @property
    def environ(self) -> dict[str, str]:
        """The environment under which `roost` uses this state root."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        env.update(
            ROOST_ROOT=self.settings.state_root,
            ROOST_RUN=self.settings.run_root,
            ROOST_PROFILES=self.settings.profiles_dir,
            ROOST_CONFIG=self.settings.config_path,
        )
        return env

    # --- building -----------------------------------------------------------------------

    def _journaled(self, when: str, fn: Callable[[], Any]) -> Any:
        """Run *fn*; the journal lines it writes will carry the time *when*."""
        path = self.settings.state_root + "/journal.jsonl"
        before = len(journal.read(path)[0])
        result = fn()
        after = len(journal.read(path)[0])
        self._stamps.extend([when] * (after - before))
        return result

    def build(self, *, holder: bool = False) -> Demo:
        clear(self.base)
        (self.base / "profiles").mkdir(parents=True)
        (self.base / "roost.yaml").write_text("end-grace: 2\nlock-timeout: 20\n")
        tree = busybox(self.base / "rootfs")
        root = self.engine()
        store = root.store
        for name, backend, profile, description in IMAGES:
            first = next(h for h in HISTORY if h[0] == name and h[1] == 1)
            source = Source("dir", path=str(tree))
            create = partial(root.create_image, name, source, backend=backend, profile=profile, description=description)
            self._journaled(first[2], create)
        for image, number, when, author, message, _ in HISTORY:
            if number == 1:
                continue
            eng = self.engine(author)
            sid = f"{image}-{zlib.crc32(f'{image} {number}'.encode()):08x}"
            self._journaled(when, partial(eng.begin, image, name=sid, maintenance=True))
            self._write(eng, sid, f"/var/lib/demo-{number}", 0.05)
            if (image, number) in PACKAGES:
                self._dpkg(eng, sid, PACKAGES[(image, number)])
            self._journaled(when, partial(eng.promote, sid, message))
        self._journaled("2026-11-21T08:02:30Z", partial(self.engine("bob").rollback, "bookworm-amd64", 4))
        for sid, image, kind, owner, created, mib, busy, broken in SESSIONS:
            eng = self.engine(owner)
            self._journaled(created, partial(eng.begin, image, name=sid, maintenance=kind == "maintenance"))
            if mib:
                self._write(eng, sid, "/var/cache/demo.bin", mib)
            if sid in SESSION_PACKAGES:
                self._dpkg(eng, sid, SESSION_PACKAGES[sid])
            if busy:
                self._start(eng, sid)
            if broken:
                mounts.unmount_tree(store.mountpoint(sid), force=True)
        self._normalize(store)
        if holder:
            self._hold_lock()
        return self

    def _write(self, eng: Engine, sid: str, path: str, mib: float) -> None:
        """Write *mib* MiB inside the session (what a build or an upgrade leaves behind)."""
        count = max(1, int(mib * 16))
        script = f"mkdir -p $(dirname {path}) && dd if=/dev/zero of={path} bs=64k count={count} 2>/dev/null"
        with open(os.devnull, "wb") as null:
            code = eng.run_in(
                sid, ["/bin/sh", "-c", script], stdout=null.fileno(), directory="/", forward_signals=False
            )
        if code != 0:
            raise RuntimeError(f"writing in demo session {sid} failed ({code})")

    def _dpkg(self, eng: Engine, sid: str, packages: dict[str, str]) -> None:
        """Write dpkg's status file inside the session: *packages* installed (what a diff names)."""
        status = "".join(
            f"Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\n\n"
            for name, version in sorted(packages.items())
        )
        script = f"mkdir -p /var/lib/dpkg && cat > /var/lib/dpkg/status <<'END'\n{status}END\n"
        with open(os.devnull, "wb") as null:
            code = eng.run_in(
                sid, ["/bin/sh", "-c", script], stdout=null.fileno(), directory="/", forward_signals=False
            )
        if code != 0:
            raise RuntimeError(f"writing dpkg's status in demo session {sid} failed ({code})")

    def _start(self, eng: Engine, sid: str) -> None:
        """A long-running process inside the session (a build, say)."""
        launch = eng.launch(sid, ["/bin/sleep", "86400"], directory="/")
        with open(os.devnull, "rb") as null:
            pid = eng.start(sid, launch, stdin=null.fileno(), stdout=null.fileno(), stderr=null.fileno())
        self.children.append(pid)

    def _normalize(self, store: Any) -> None:
        """Rewrite what people read (times, sizes, authors, messages) to the demo's fixed story."""
        for image, number, when, author, message, mib in HISTORY:
            meta = generations.read_meta(store, image, number)
            fixed = meta.replace(created=when, author=author, message=message, size=int(mib * MIB))
            generations.write_meta(store, image, fixed)
        for sid, *_rest in SESSIONS:
            session = records.read(store.sessions_dir, sid)
            created = next(s[4] for s in SESSIONS if s[0] == sid)
            session.created = created
            session.creator_pid = None
            session.creator_start = None
            records.write(store.sessions_dir, session)
            if session.maintenance:
                lease = locks.read_lease(store.writer_lease(session.image))
                assert lease is not None
                locks.write_lease(store.writer_lease(session.image), lease.replace(since=created, pid=None))
        name, record, since = STALE_LOCK
        with open(os.path.join(store.lock_dir, name + locks.LOCK_SUFFIX), "w", encoding="utf-8") as f:
            json.dump({**record, "since": since}, f)
        path = store.journal_path
        entries, _ = journal.read(path)
        lines = []
        for entry, when in zip(entries, self._stamps, strict=True):
            entry["time"] = when
            entry["pid"] = 4242
            if entry.get("operation") == "image create":
                entry.pop("size", None)
            lines.append(json.dumps(entry, separators=(",", ":")))
        order = sorted(range(len(lines)), key=lambda i: self._stamps[i])
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(lines[i] + "\n" for i in order))

    def _hold_lock(self) -> None:
        """One process holding a lock (gc of bullseye-i386) and one waiting for it."""
        name, user, operation, since = HELD_LOCK
        lock_dir = self.settings.run_root + "/locks"
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the holder
            try:
                os.close(ready_r)
                lock = locks.Lock(lock_dir, name, _actor(user)).acquire(operation)
                assert lock.fd is not None
                record = {"pid": os.getpid(), "start": None, "user": user, "operation": operation, "since": since}
                os.ftruncate(lock.fd, 0)
                os.pwrite(lock.fd, json.dumps(record).encode(), 0)
                os.write(ready_w, b"x")
                signal.pause()
            finally:
                os._exit(0)
        os.close(ready_w)
        os.read(ready_r, 1)
        os.close(ready_r)
        self.children.append(pid)
        waiter = os.fork()
        if waiter == 0:
            try:
                locks.Lock(lock_dir, name, _actor("buildd"), timeout=86400).acquire("begin bullseye-i386")
            finally:
                os._exit(0)
        self.children.append(waiter)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            waiting = [n for n in os.listdir(lock_dir) if locks.WAIT_MARK in n]
            if waiting:
                path = os.path.join(lock_dir, waiting[0])
                time.sleep(0.05)  # the waiter writes its record right after creating the file
                with open(path, encoding="utf-8") as f:
                    record = json.load(f)
                record["since"] = "2026-11-24T09:29:40Z"
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(record, f)
                break
            time.sleep(0.01)

    # --- taking it down -----------------------------------------------------------------

    def close(self) -> None:
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self.children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.children = []
        clear(self.base)


def clear(base: Path) -> None:
    """End every session under *base*, take down what is mounted there, remove it all."""
    if not base.exists():
        return
    sessions_dir = base / "state" / "sessions"
    if sessions_dir.is_dir():
        settings = Settings(
            state_root=str(base / "state"),
            run_root=str(base / "run"),
            profiles_dir=str(base / "profiles"),
            end_grace=2.0,
        )
        eng = Engine(settings, actor=_actor("root"))
        for sid in records.ids(str(sessions_dir)):
            try:
                eng.end(sid, force=True)
            except Exception:  # noqa: BLE001 - take down what can be, then unmount the rest below
                pass
    mounts.unmount_tree(str(base), force=True)
    remove_tree(str(base))


@contextmanager
def demo(base: Path, *, holder: bool = False) -> Iterator[Demo]:
    d = Demo(base)
    try:
        yield d.build(holder=holder)
    finally:
        d.close()


# --- screenshots -------------------------------------------------------------------------


def console(d: Demo, scene: str | None = None) -> RoostConsole:
    """The real console on the demo state, its clock frozen at :data:`NOW`.

    For the "hosts" scene it shows two other hosts: their answers are what
    :func:`other_hosts` says (the demo's own summary, under another name, and a
    host that cannot be reached), and this host's load is frozen like the clock.
    """
    engine = d.engine("root")
    if scene != "hosts":
        return RoostConsole(engine, clock=lambda: epoch(NOW), host=HOST)
    hosts, poll = other_hosts(engine)
    return RoostConsole(
        engine, clock=lambda: epoch(NOW), host=HOST, hosts=hosts, poll_host=poll, loadavg=lambda: (0.42, 0.35, 0.31)
    )


def other_hosts(engine: Engine) -> tuple[list[Any], Callable[[Any], Any]]:
    """Two other hosts for the Hosts pane, and how they answer: one up, one unreachable."""
    from core import fleet
    from core.hosts import Host

    summary = {**fleet.summary(engine), "host": "buildd-02", "time": NOW, "load": [1.87, 1.52, 1.20], "cpus": 16}
    up = Host("buildd-02", address="buildd-02.example.org", description="arm64 builders")
    down = Host("buildd-03", address="buildd-03.example.org", description="riscv64 builders")
    answers = {
        up.name: fleet.HostStatus(up.name, True, 0.042, summary=summary, exit_code=0),
        down.name: fleet.HostStatus(
            down.name,
            False,
            3.0,
            error="cannot reach buildd-03: ssh: connect to host buildd-03.example.org port 22: Connection timed out",
        ),
    }
    return [up, down], lambda host: answers[host.name]


async def settle(pilot: Any) -> None:
    """Wait until the console has shown the state and measured every session."""
    app = pilot.app
    for _ in range(400):
        if app.loaded and app.usage_loaded and not app.polling:
            break
        await pilot.pause(0.05)
    await pilot.pause(0.2)


async def wait_for_screen(pilot: Any, name: str) -> None:
    for _ in range(200):
        if type(pilot.app.screen).__name__ == name:
            break
        await pilot.pause(0.05)
    await pilot.pause(0.2)


async def diffed(pilot: Any) -> None:
    """Wait until the History pane's detail shows what the highlighted generation changed."""
    main = pilot.app.main
    for _ in range(400):
        found = main.selected_generation()
        if found is not None and not main.diff_pending and "computing" not in str(main.generation_changes(*found)):
            break
        await pilot.pause(0.05)
    await pilot.pause(0.2)


async def computed(pilot: Any) -> None:
    """Wait until the dialog on top shows the diff it computes."""
    from tui.widgets.diffs import DiffLines

    for _ in range(400):
        lines = pilot.app.screen.query(DiffLines)
        if lines and all(w.pairs is not None for w in lines):
            break
        await pilot.pause(0.05)
    await pilot.pause(0.2)


def scenes() -> dict[str, Callable[[Any], Any]]:
    """What each screenshot shows: a coroutine driving the console to it."""

    async def main(pilot: Any) -> None:
        await settle(pilot)

    async def history(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        await diffed(pilot)

    async def promote(pilot: Any) -> None:
        await settle(pilot)
        pilot.app.main.sessions_pane.table.select_key("bookworm-amd64-c1d2e3f4")
        await pilot.press("p")
        await wait_for_screen(pilot, "PromptDialog")
        await computed(pilot)
        await pilot.press(*"install ccache 4.8")
        pilot.app.screen.query_one("#prompt").cursor_blink = False  # a still picture: the cursor shown
        await pilot.pause(0.1)

    async def end(pilot: Any) -> None:
        await settle(pilot)
        pilot.app.main.sessions_pane.table.select_key("bookworm-amd64-3f9c2a1e")
        await pilot.press("d")
        await wait_for_screen(pilot, "ConfirmDialog")

    async def rollback(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        pilot.app.main.history_pane.table.select_key("3")
        await pilot.press("r")
        await wait_for_screen(pilot, "ConfirmDialog")
        await computed(pilot)

    async def help_(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await wait_for_screen(pilot, "HelpScreen")

    async def create(pilot: Any) -> None:
        from textual.widgets import Input, Select

        await settle(pilot)
        await pilot.press("1", "c")
        await wait_for_screen(pilot, "CreateDialog")
        dialog = pilot.app.screen
        dialog.query_one("#kind", Select).value = "mmdebstrap"
        fields = {"path": "trixie", "variant": "buildd", "arch": "arm64", "name": "trixie-arm64"}
        for name, value in fields.items():
            dialog.query_one(f"#{name}", Input).value = value
        dialog.query_one("#name", Input).focus()
        await pilot.pause(0.1)
        dialog.query_one("#name", Input).cursor_blink = False  # a still picture: the cursor shown
        await pilot.pause(0.1)

    async def hosts(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("0")
        for _ in range(200):
            if len(pilot.app.remote) == 2:
                break
            await pilot.pause(0.05)
        await pilot.pause(0.3)

    async def creating(pilot: Any) -> None:
        from tui.widgets.create import CreateTask

        await settle(pilot)
        await pilot.press("1")
        from core.importers import MmdebstrapProgress

        # The panel as a create shows it, with mmdebstrap's own lines for progress (no worker runs).
        task = CreateTask("trixie-arm64", "from mmdebstrap trixie (buildd variant, arm64)")
        stages = MmdebstrapProgress(task.report)
        for line in CREATE_PROGRESS:
            stages.line(line)
        main = pilot.app.main
        main.creating = task
        main.show_task(task)
        await pilot.pause(0.3)

    return {
        "main": main,
        "history": history,
        "promote": promote,
        "end": end,
        "rollback": rollback,
        "help": help_,
        "create": create,
        "creating": creating,
        "hosts": hosts,
    }


#: What the "creating" picture shows of a create's progress: mmdebstrap's stderr, part-way.
CREATE_PROGRESS = [
    "I: automatically chosen format: directory",
    "I: arm64 cannot be executed natively, but transparently using qemu-user binfmt emulation",
    "I: finding correct signed-by value...",
    "I: running apt-get update...",
    "I: downloading packages with apt...",
    "I: extracting archives...",
    "I: installing essential packages...",
]


SIZES = {"80x24": (80, 24), "160x48": (160, 48)}


def screenshot(d: Demo, scene: str, size: tuple[int, int]) -> str:
    """The console at *size*, driven to *scene*, as SVG (what the snapshot tests compare, too)."""
    app = console(d, scene)
    shots: list[str] = []

    async def take(pilot: Any) -> None:
        await scenes()[scene](pilot)
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()
        shots.append(app.export_screenshot(title=f"roost — {scene}", simplify=True))
        app.exit()

    app.run(headless=True, size=size, auto_pilot=take)
    return shots[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the demo state and take the console's screenshots.")
    parser.add_argument("--out", default="screenshots", help="directory for the SVG files (default: screenshots)")
    parser.add_argument("--base", default="/tmp/roost-demo", help="where the demo state lives while it runs")
    parser.add_argument(
        "--scene", action="append", choices=sorted(scenes()), help="take only this scene (repeatable; default: all)"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("tests.support.demo: the demo mounts sessions; run it as root", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with demo(Path(args.base), holder=True) as d:
        for scene in args.scene or scenes():
            for label, size in SIZES.items():
                path = out / f"{scene}-{label}.svg"
                path.write_text(screenshot(d, scene, size), encoding="utf-8")
                print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

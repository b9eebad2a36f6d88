"""The console with 1,000 sessions and 50 images: key-press-to-render time, refresh time, memory.

    sudo .venv/bin/python bench/console.py [--sessions 1000] [--images 50] [--real 20] [--keys 40]

Builds a temporary state root with 50 real images (busybox roots) and 1,000
sessions: --real of them begun for real (mounted overlays), the rest written
as records with a clone holding a few files of their own, so the console does
for them what it does for real ones (parse the record, look it up in the mount
table, count its processes, measure its changes), except that they show as
needing recovery. Mounting a thousand overlays would change the host's mount
table under everything else running on it.

The real ``roost`` then runs in a pseudo-terminal (160x48, 256 colours), with
timers installed from the outside (bench/measured_console.py subclasses the
console and starts it through roost's own entry point), and the benchmark
measures, as an operator over SSH would see it:

* key press to render: from writing a cursor key to the terminal until the
  console's redraw has arrived (its output stops for 25 ms; those 25 ms are
  not counted), first while nothing changes, then while other processes
  change the state several times a second;
* refresh: how long each refresh took, timed inside the console process: the
  poll in its worker thread, and showing what changed in the panes on the
  event loop; and how long key presses waited between the terminal's input
  thread and the event loop;
* the console's resident memory after all that.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import random
import select
import shutil
import signal
import struct
import sys
import termios
import threading
import time
from pathlib import Path

from harness import REPO, Figure, machine, table, workdir

sys.path.insert(0, str(REPO))

from core import records
from core.engine import Engine
from core.fsutil import remove_tree
from core.importers import Source
from core.settings import Settings
from tests.support.rootfs import busybox

QUIET = 0.025  # a redraw is over when the terminal has been quiet this long
MEASURED = Path(__file__).with_name("measured_console.py")


class State:
    """A state root with many images and sessions, most of them synthesized records."""

    def __init__(self, base: Path, images: int, sessions: int, real: int) -> None:
        self.base = base
        self.settings = Settings(
            state_root=str(base / "state"),
            run_root=str(base / "run"),
            profiles_dir=str(base / "profiles"),
            config_path=str(base / "roost.yaml"),
            end_grace=2.0,
        )
        (base / "profiles").mkdir(parents=True)
        (base / "roost.yaml").write_text("end-grace: 2\n")
        self.engine = Engine(self.settings)
        tree = busybox(base / "rootfs")
        self.images = [f"bench-{i:02d}" for i in range(images)]
        started = time.perf_counter()
        for name in self.images:
            self.engine.create_image(name, Source("dir", path=str(tree)), profile="minimal")
        self.real = [self.engine.begin(self.images[i % images]).id for i in range(real)]
        template = records.read(self.engine.store.sessions_dir, self.real[0])
        self.fake: list[str] = []
        for i in range(sessions - real):
            self.fake.append(self.add_fake(template, i))
        print(
            f"state: {images} images, {real} real sessions, {sessions - real} synthesized "
            f"({time.perf_counter() - started:.1f} s to build)",
            flush=True,
        )
        self.template = template

    def add_fake(self, template: records.Session, i: int) -> str:
        store = self.engine.store
        image = self.images[i % len(self.images)]
        sid = f"{image}-{i:08x}"
        clone = store.session_clone(sid)
        os.makedirs(os.path.join(clone, "upper", "root"), exist_ok=True)
        os.makedirs(os.path.join(clone, "work"), exist_ok=True)
        with open(os.path.join(clone, "upper", "root", ".ash_history"), "w") as f:
            f.write("apt-get build-dep hello\n" * (1 + i % 50))
        session = records.Session(
            **{
                **template.to_json(),
                "id": sid,
                "image": image,
                "owner": random.choice(["alice", "bob", "buildd", "carol"]),
                "kind": "maintenance" if i % 97 == 0 else "ordinary",
                "mountpoint": store.mountpoint(sid),
                "clone": clone,
            }
        )
        records.write(store.sessions_dir, session)
        open(os.path.join(store.lock_dir, f"session.{sid}.lock"), "w").close()
        return sid

    def churn(self, stop: threading.Event) -> None:
        """What other processes do meanwhile: records rewritten, added and removed; real begins and ends."""
        store = self.engine.store
        n = 0
        while not stop.wait(0.2):
            n += 1
            sid = random.choice(self.fake)
            session = records.read(store.sessions_dir, sid)
            session.owner = random.choice(["alice", "bob", "buildd", "carol", "dave"])
            records.write(store.sessions_dir, session)
            extra = self.add_fake(self.template, 100000 + n)
            records.remove(store.sessions_dir, extra)
            remove_tree(store.session_clone(extra))
            os.unlink(os.path.join(store.lock_dir, f"session.{extra}.lock"))
            if n % 10 == 0:
                sid = self.engine.begin(random.choice(self.images)).id
                self.engine.end(sid)

    def close(self) -> None:
        store = self.engine.store
        for sid in self.fake:
            records.remove(store.sessions_dir, sid)
            remove_tree(store.session_clone(sid))
            os.unlink(os.path.join(store.lock_dir, f"session.{sid}.lock"))
        for sid in self.real:
            self.engine.end(sid, force=True)


class Terminal:
    """The console in a pseudo-terminal; everything it writes is timestamped."""

    def __init__(self, argv: list[str], env: dict[str, str], size: tuple[int, int]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
            os.execve(argv[0], argv, env)
        self.lock = threading.Lock()
        self.last_output = time.perf_counter()
        self.chunks: list[tuple[float, bytes]] = []
        self.total = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.5)
                if not ready:
                    continue
                data = os.read(self.fd, 1 << 16)
            except OSError:
                return
            if not data:
                return
            now = time.perf_counter()
            with self.lock:
                self.chunks.append((now, data))
                self.total += len(data)
                self.last_output = now

    def wait_quiet(self, quiet: float, timeout: float = 60.0) -> None:
        """Wait until the console has written something, then nothing for *quiet* seconds."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self.lock:
                idle = time.perf_counter() - self.last_output
                wrote = bool(self.chunks)
            if wrote and idle >= quiet:
                return
            time.sleep(0.005)
        raise TimeoutError("the console kept writing")

    def key(self, data: bytes) -> float | None:
        """Press a key; seconds until the redraw it caused was complete (None: nothing redrawn)."""
        with self.lock:
            mark = len(self.chunks)
        sent = time.perf_counter()
        os.write(self.fd, data)
        deadline = sent + 2.0
        while time.perf_counter() < deadline:
            with self.lock:
                if len(self.chunks) > mark and time.perf_counter() - self.last_output >= QUIET:
                    return self.last_output - sent
            time.sleep(0.001)
        return None

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def quit(self) -> int:
        os.write(self.fd, b"q")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        return -9


def keys(term: Terminal, n: int) -> Figure:
    samples = []
    for i in range(n):
        term.wait_quiet(0.15)
        took = term.key(b"\x1b[B" if i % 20 < 10 else b"\x1b[A")  # down, then up again
        if took is not None:
            samples.append(took)
        time.sleep(0.05)
    if not samples:
        raise RuntimeError("the console never redrew after a key press")
    return Figure(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--real", type=int, default=20, help="sessions begun for real (mounted)")
    parser.add_argument("--keys", type=int, default=40, help="key presses per series")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/console.py mounts sessions; run it as root", file=sys.stderr)
        return 2
    if not shutil.which("busybox"):
        print("bench/console.py needs busybox-static", file=sys.stderr)
        return 2
    load = os.getloadavg()
    with workdir() as base:
        state = State(base, args.images, args.sessions, args.real)
        stats_file = base / "console-stats.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        env.update(
            ROOST_ROOT=state.settings.state_root,
            ROOST_RUN=state.settings.run_root,
            ROOST_PROFILES=state.settings.profiles_dir,
            ROOST_CONFIG=state.settings.config_path,
            TERM="xterm-256color",
            COLORTERM="",
            PYTHONPATH=str(REPO),
        )
        stop = threading.Event()
        churner = threading.Thread(target=state.churn, args=(stop,), daemon=True)
        term = None
        try:
            started = time.perf_counter()
            term = Terminal([sys.executable, str(MEASURED), str(stats_file)], env, (160, 48))
            term.wait_quiet(1.0, timeout=120)
            first_screen = term.last_output - started
            quiet = keys(term, args.keys)
            churner.start()
            time.sleep(1.0)
            busy = keys(term, args.keys)
            time.sleep(2.0)
            stop.set()
            churner.join()
            rss = term.rss_kib()
            code = term.quit()
            term = None
        finally:
            stop.set()
            if term is not None:
                term.quit()
            state.close()
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    poll, show, usage, first, waits = (stats.get(k, {}) for k in ("poll", "show", "usage", "first", "keys"))

    def ms(figures: dict[str, float]) -> str:
        if not figures:
            return "-"
        return f"{figures['median_ms']:8.1f} ms ({figures['min_ms']:.1f}–{figures['max_ms']:.1f})"

    def p95(figures: dict[str, float]) -> str:
        return f"{figures['p95_ms']:.1f} ms" if figures else "-"

    print(f"roost console, {args.sessions} sessions, {args.images} images, {time.strftime('%Y-%m-%d')}, {machine()}")
    print(f"load average while it ran: {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    rows = [
        ["key press to render, state quiet", quiet.show(), quiet.p95(), f"{len(quiet.samples)} keys"],
        ["key press to render, state changing", busy.show(), busy.p95(), f"{len(busy.samples)} keys"],
        ["key waited for the event loop", ms(waits), p95(waits), f"{waits.get('count', 0)} keys"],
        ["refresh: poll (worker thread)", ms(poll), p95(poll), f"{poll.get('count', 0)} refreshes"],
        ["refresh: show what changed (event loop)", ms(show), p95(show), f"{show.get('count', 0)} refreshes"],
        ["usage: show new figures (event loop)", ms(usage), p95(usage), f"{usage.get('count', 0)} updates"],
        [
            "first refresh: poll + show everything",
            f"{first.get('poll_ms', 0):8.1f} + {first.get('show_ms', 0):.1f} ms",
            "",
            "",
        ],
        ["first screen after start", f"{first_screen * 1000:8.1f} ms", "", ""],
        ["resident memory of the console", f"{rss / 1024:8.1f} MiB", "", ""],
    ]
    print(table(rows, ["what", "median (min–max)", "p95", "samples"]))
    print(f"(the console exited with {code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

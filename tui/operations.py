"""What the console does: engine operations in thread workers, with their dialogs.

Every blocking call runs in a thread worker; its result (or its error, as a
notification) comes back to the event loop with ``call_from_thread``. One
operation at a time per target: a second key press on a session that is still
being ended is told so instead of racing the first.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from rich.text import Text
from textual.app import SuspendNotSupported

from core import process
from core.errors import Conflict, RoostError
from core.records import Session
from core.units import human_size

from .widgets.dialogs import ConfirmDialog, OutputDialog, PromptDialog

if TYPE_CHECKING:
    from .app import RoostConsole

T = TypeVar("T")


class Operations:
    def __init__(self, app: RoostConsole) -> None:
        self.app = app
        self.busy: dict[str, str] = {}

    @property
    def engine(self) -> Any:
        return self.app.engine

    # --- plumbing ----------------------------------------------------------------------

    def run(
        self,
        target: str,
        what: str,
        fn: Callable[[], T],
        done: Callable[[T], None] | None = None,
        failed: Callable[[RoostError], bool] | None = None,
    ) -> bool:
        """Run *fn* in a thread worker; *done* gets its result on the event loop.

        Engine errors become error notifications (unless *failed* handles them
        and returns True); so does anything unexpected (with its type), so the
        console never dies of an operation.
        """
        if target in self.busy:
            self.app.notify(f"{target}: {self.busy[target]} is still running", severity="warning")
            return False
        self.busy[target] = what
        app = self.app

        def work() -> None:
            try:
                result = fn()
            except RoostError as e:
                app.call_from_thread(self._failed, target, f"{what}: {e}", e, failed)
            except Exception as e:  # noqa: BLE001 - an operation must never take the console down
                app.call_from_thread(self._finish, target, None, None, f"{what}: {type(e).__name__}: {e}")
            else:
                app.call_from_thread(self._finish, target, done, result, None)

        app.run_worker(work, thread=True, exit_on_error=False, group="operations", name=f"{what} {target}")
        return True

    def _failed(
        self, target: str, message: str, error: RoostError, failed: Callable[[RoostError], bool] | None
    ) -> None:
        if failed is not None and failed(error):
            self.busy.pop(target, None)
            self.app.request_refresh()
            return
        self._finish(target, None, None, message)

    def _finish(self, target: str, done: Callable[[Any], None] | None, result: Any, error: str | None) -> None:
        self.busy.pop(target, None)
        if error is not None:
            self.app.notify(error, title="roost", severity="error", timeout=8, markup=False)
        elif done is not None:
            done(result)
        self.app.request_refresh()

    def say(self, message: str) -> None:
        self.app.notify(message, markup=False)

    # --- images ------------------------------------------------------------------------

    def begin(self, image: str, *, maintenance: bool) -> None:
        kind = "maintenance session" if maintenance else "session"

        def done(session: Session) -> None:
            self.say(f"began {kind} {session.id} on {image} (generation {session.generation})")
            self.app.select_session(session.id)

        self.run(image, f"begin {kind}", lambda: self.engine.begin(image, maintenance=maintenance), done)

    def gc(self, image: str) -> None:
        def confirm(results: list[Any]) -> None:
            r = results[0]
            if not r.removed:
                self.say(f"{image}: nothing to delete (keeping {', '.join(map(str, r.kept))})")
                return
            gens = ", ".join(map(str, r.removed))
            lines: list[str | Text] = [
                Text.assemble("Delete generation(s) ", (gens, "bold"), " of ", (image, "bold"), "?"),
                f"This frees about {human_size(r.freed)}. They cannot be rolled back to afterwards.",
                f"Kept: {', '.join(map(str, r.kept))} (current, the newest, and every one a session uses).",
            ]

            def answer(yes: bool | None) -> None:
                if yes:
                    self.run(image, "gc", lambda: self.engine.gc(image), collected)

            self.app.push_screen(ConfirmDialog(f"Garbage-collect {image}", lines, "Delete"), answer)

        def collected(results: list[Any]) -> None:
            r = results[0]
            self.say(f"{image}: deleted generation(s) {', '.join(map(str, r.removed))}, {human_size(r.freed)} freed")

        self.run(image, "gc", lambda: self.engine.gc(image, dry_run=True), confirm)

    def rollback(self, image: str, generation: int, current: int) -> None:
        lines: list[str | Text] = [
            Text.assemble("Make generation ", (str(generation), "bold"), " of ", (image, "bold"), " current again?"),
            f"Generation {current} stops being current: new sessions clone {generation} from now on.",
            "Running sessions keep what they were cloned from, and no generation is deleted:",
            f"rolling back to {current} undoes this.",
        ]

        def answer(yes: bool | None) -> None:
            if yes:
                self.run(
                    image,
                    "rollback",
                    lambda: self.engine.rollback(image, generation),
                    lambda n: self.say(f"{image} is now at generation {n}"),
                )

        self.app.push_screen(
            ConfirmDialog(f"Roll {image} back to generation {generation}", lines, "Roll back", danger=False), answer
        )

    # --- sessions ----------------------------------------------------------------------

    def end(self, sid: str) -> None:
        """Measure what ending loses, ask, then end."""

        def ask(info: Any) -> None:
            s = info.session
            lost = []
            if info.changes:
                lost.append(f"its changes: {human_size(info.changes)} written since it began, never promoted")
            else:
                lost.append("its changes (none written yet)")
            if info.processes:
                lost.append(f"{info.processes} process(es) running inside, killed (TERM, then KILL)")
            if s.maintenance:
                lost.append(f"its hold on {s.image}'s writer lock (others may maintain it again)")
            lines: list[str | Text] = [
                Text.assemble(
                    "End session ",
                    (sid, "bold"),
                    f" ({s.kind}, {s.image} generation {s.generation}, owned by {s.owner})?",
                ),
                "Lost for good:",
                *(f"  • {item}" for item in lost),
            ]

            def answer(yes: bool | None) -> None:
                if yes:
                    self.run(sid, "end", lambda: self.engine.end(sid), ended, offer_force)

            self.app.push_screen(ConfirmDialog(f"End {sid}", lines, "End session"), answer)

        def ended(_: object) -> None:
            self.say(f"ended session {sid}")

        def offer_force(error: RoostError) -> bool:
            """A mount kept busy from outside the session: offer what `session end --force` does."""
            if not isinstance(error, Conflict) or "busy" not in str(error):
                return False
            lines: list[str | Text] = [
                Text.assemble("Session ", (sid, "bold"), " could not be unmounted:"),
                Text(str(error), style="italic"),
                "Force detaches the busy mounts: whoever holds them keeps seeing the files until",
                "they let go, but the session, its record and its changes are gone.",
            ]

            def answer(yes: bool | None) -> None:
                if yes:
                    self.run(sid, "end", lambda: self.engine.end(sid, force=True), ended)

            self.app.push_screen(ConfirmDialog(f"Force end {sid}", lines, "Force end"), answer)
            return True

        self.run(sid, "end", lambda: self.engine.session_info(sid, details=True), ask)

    def promote(self, sid: str) -> None:
        """Check that the promote can be a fast-forward, ask for a message, promote."""

        def check() -> tuple[Any, Any, int]:
            info = self.engine.session_info(sid, details=False)
            image = self.engine.image_info(info.session.image)
            following = max((g.generation for g in self.engine.image_history(image.name)), default=0) + 1
            return info, image, following

        def ask(found: tuple[Any, Any, int]) -> None:
            info, image, following = found
            s = info.session
            if image.current != s.generation:
                self.app.notify(
                    f"cannot promote {sid}: it was cloned from generation {s.generation} of {s.image}, "
                    f"but {s.image} is now at generation {image.current}. Promoting would throw that away, "
                    "so roost refuses: begin a new maintenance session and redo the change there.",
                    title="not a fast-forward",
                    severity="error",
                    timeout=12,
                    markup=False,
                )
                return
            if image.writer is not None and image.writer != sid:
                self.app.notify(
                    f"cannot promote {sid}: {s.image} is being maintained by session {image.writer}; "
                    "only that session may promote now.",
                    title="image is being maintained",
                    severity="error",
                    timeout=12,
                    markup=False,
                )
                return
            lines: list[str | Text] = [
                Text.assemble(
                    "Promote ",
                    (sid, "bold"),
                    " into ",
                    (s.image, "bold"),
                    f" generation {following}?",
                ),
                f"It becomes current (generation {image.current} stays in history for rollback),",
                "and the session ends. A message says what changed:",
            ]

            def answer(message: str | None) -> None:
                if message is not None:
                    self.run(
                        sid,
                        "promote",
                        lambda: self.engine.promote(sid, message.strip()),
                        lambda n: self.say(f"promoted {sid}: {s.image} is now at generation {n}"),
                    )

            self.app.push_screen(
                PromptDialog(
                    f"Promote {sid}",
                    lines,
                    placeholder="e.g. install build-essential",
                    accept="Promote",
                ),
                answer,
            )

        self.run(sid, "promote", check, ask)

    def recover(self, sid: str) -> None:
        def done(report: list[str]) -> None:
            self.say("; ".join(report) if report else f"{sid}: nothing to recover")

        self.run(sid, "recover", lambda: self.engine.recover(sid), done)

    def enter(self, sid: str) -> None:
        """A login shell inside: the console steps aside until the shell exits."""
        self.run(sid, "enter", lambda: self.engine.launch(sid, None), lambda launch: self._hand_over(sid, launch))

    def _hand_over(self, sid: str, launch: process.Launch) -> None:
        app = self.app
        try:
            with app.suspend():
                terminal = app.terminal
                tty = process.terminal(terminal["stdin"])
                pid = self.engine.start(sid, launch, foreground=tty, **terminal)
                code = process.wait_foreground(pid, tty)
        except SuspendNotSupported:
            app.notify(
                f"this console cannot hand over its terminal here; in a shell run: sudo roost session enter {sid}",
                severity="warning",
                timeout=10,
                markup=False,
            )
            return
        except OSError as e:
            app.notify(f"enter {sid}: {e.strerror}", severity="error", markup=False)
            return
        self.say(f"back from session {sid} (the shell exited with {code})")
        app.request_refresh()

    def run_command(self, sid: str) -> None:
        def answer(command: str | None) -> None:
            if command is None or not command.strip():
                return
            dialog = OutputDialog(f"{sid}: {command}")
            self.app.push_screen(dialog)
            self.run(
                sid,
                "run",
                lambda: self._run_command(sid, command, dialog),
                lambda code: dialog.done(_status(code, dialog.interrupted)),
            )

        self.app.push_screen(
            PromptDialog(
                f"Run in {sid}",
                ["A command for /bin/sh -c, run as you, in / of the session:"],
                placeholder="e.g. apt-get update",
                accept="Run",
                allow_empty=False,
            ),
            answer,
        )

    def _run_command(self, sid: str, command: str, dialog: OutputDialog) -> int:
        """In a worker: start the command with a pipe for its output, stream it, wait."""
        eng = self.engine
        app = self.app
        launch = eng.launch(sid, ["/bin/sh", "-c", command], directory="/")
        read_end, write_end = os.pipe()
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # The run protocol, as `roost session run`: the session's lock is held shared until the command execs.
            pid = eng.start(sid, launch, stdin=devnull, stdout=write_end, stderr=write_end)
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
            os.close(devnull)
        dialog.pid = pid
        pending = b""
        try:
            while True:
                ready, _, _ = select.select([read_end], [], [], 0.2)
                if not ready:
                    if dialog.closed:
                        break  # nobody reads any more: stop, even if something inside keeps the pipe
                    continue
                chunk = os.read(read_end, 1 << 16)
                if not chunk:
                    break
                pending += chunk
                cut = pending.rfind(b"\n")
                if cut >= 0:
                    text = pending[: cut + 1].decode("utf-8", "replace")
                    pending = pending[cut + 1 :]
                    app.call_from_thread(dialog.add, text)
            if pending:
                app.call_from_thread(dialog.add, pending.decode("utf-8", "replace"))
        finally:
            os.close(read_end)
            code = _reap(pid, dialog)
        return code


def _reap(pid: int, dialog: OutputDialog) -> int:
    """Wait for the command; once its dialog is closed, TERM it, then KILL it 2 s later."""
    deadline: float | None = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return process.exit_code(status)
        if dialog.closed:
            now = time.monotonic()
            if deadline is None:
                deadline = now + 2.0
                _kill(pid, signal.SIGTERM)
            elif now > deadline:
                _kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _status(code: int, interrupted: bool) -> str:
    if interrupted:
        return f"interrupted (exit status {code})"
    return "done (exit status 0)" if code == 0 else f"failed (exit status {code})"

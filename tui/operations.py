"""What the console does: engine operations as workers, with their dialogs.

Each operation is one async worker (``@work``) that reads top to bottom: ask
what it needs with ``push_screen_wait`` (a confirmation that names what is
lost, a promote message), run the engine call in a thread worker and wait for
it, say what happened. Engine errors (and anything unexpected) become
notifications, never a crash. One operation per target at a time: a second
key press on a session that is still being ended is told so instead of racing
the first.
"""

from __future__ import annotations

import functools
import os
import select
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

from rich.text import Text
from textual import work
from textual.app import SuspendNotSupported
from textual.screen import Screen
from textual.widget import Widget
from textual.worker import WorkerFailed

from core import process
from core.engine import Engine
from core.errors import Cancelled, Conflict, RoostError
from core.units import human_size
from core.views import ImageInfo, SessionInfo

from .messages import RefreshRequested
from .widgets import diffs
from .widgets.create import CreateDialog, CreateRequest, CreateTask, ImportRequest
from .widgets.dialogs import ChoiceDialog, ConfirmDialog, OutputDialog, PromptDialog
from .widgets.diffs import DiffLines

T = TypeVar("T")
P = ParamSpec("P")
S = TypeVar("S", bound="OperationsScreen")

Flow = Callable[Concatenate[S, str, P], Awaitable[None]]


def operation(what: str) -> Callable[[Flow[S, P]], Callable[Concatenate[S, str, P], Coroutine[Any, Any, None]]]:
    """An operation on a target (an image or a session, the flow's first argument).

    Refused while another operation on the same target runs; an error is a
    notification that starts with *what*; afterwards the app polls at once.
    """

    def wrap(flow: Flow[S, P]) -> Callable[Concatenate[S, str, P], Coroutine[Any, Any, None]]:
        @functools.wraps(flow)
        async def run(self: S, target: str, /, *args: P.args, **kwargs: P.kwargs) -> None:
            if target in self.busy:
                self.notify(f"{target}: {self.busy[target]} is still running", severity="warning")
                return
            self.busy[target] = what
            try:
                await flow(self, target, *args, **kwargs)
            except RoostError as e:
                self.fail(f"{what}: {e}")
            except Exception as e:  # noqa: BLE001 - an operation must never take the console down
                self.fail(f"{what}: {type(e).__name__}: {e}")
            finally:
                del self.busy[target]
                self.post_message(RefreshRequested())

        return run

    return wrap


class OperationsScreen(Screen[None]):
    """A screen that acts through the engine: every operation a worker of its own.

    The main screen builds on this and calls these with what is selected.
    """

    def __init__(self, engine: Engine, *, terminal: Mapping[str, int]) -> None:
        super().__init__()
        self.engine = engine
        #: Where a shell entered from the console reads and writes.
        self.terminal = dict(terminal)
        #: What runs on which target (an image or a session).
        self.busy: dict[str, str] = {}
        #: The image being created (one at a time), whose progress the screen shows.
        self.creating: CreateTask | None = None

    # --- plumbing ----------------------------------------------------------------------

    async def call(self, fn: Callable[[], T], name: str) -> T:
        """Run a blocking engine call in a thread worker and wait for its result (or error)."""
        worker = self.run_worker(fn, thread=True, exit_on_error=False, group="engine", name=name)
        try:
            return await worker.wait()
        except WorkerFailed as e:
            raise e.error from None

    def say(self, message: str) -> None:
        self.notify(message, markup=False)

    def fail(self, message: str) -> None:
        self.notify(message, title="roost", severity="error", timeout=8, markup=False)

    def select_session(self, sid: str) -> None:
        """Highlight session *sid* (the screen that shows sessions does)."""

    def select_image(self, name: str) -> None:
        """Highlight image *name* (the screen that shows images does)."""

    def show_task(self, task: CreateTask | None) -> None:
        """Show a create's progress (None: it is over)."""

    # --- creating images -----------------------------------------------------------------

    @work(group="operations", exit_on_error=False)
    async def ask_create(self) -> None:
        """Ask where a new image comes from, then create it (in the background)."""
        if self.creating is not None:
            self.notify(f"image {self.creating.name} is being created; one at a time", severity="warning")
            return
        try:
            default = await self.call(self.engine.default_backend, "default backend")
        except RoostError as e:
            self.fail(f"create image: {e}")
            return
        request = await self.app.push_screen_wait(CreateDialog(default))
        if isinstance(request, CreateRequest):
            self.create_image(request.name, request)
        elif isinstance(request, ImportRequest):
            self.import_schroot(request.schroot_dir, request.backend)

    @work(group="operations", exit_on_error=False)
    @operation("create image")
    async def create_image(self, name: str, request: CreateRequest) -> None:
        """Create the image in a thread worker, its progress shown; cancelling stops it at its next report."""
        if self.creating is not None:
            self.notify(f"image {self.creating.name} is being created; one at a time", severity="warning")
            return
        task = CreateTask(name, f"from {request.source.describe()}")
        # An engine of its own, so only this create reports to (and is stopped by) this task.
        ctx = self.engine.ctx
        engine = Engine(ctx.settings, actor=ctx.actor, policy=ctx.policy, on_wait=ctx.on_wait, progress=task.report)
        self.creating = task
        self.show_task(task)
        try:
            info = await self.call(
                lambda: engine.create_image(name, request.source, backend=request.backend, profile=request.profile),
                f"create {name}",
            )
        except Cancelled:
            self.say(f"cancelled: nothing of image {name} was kept")
            return
        finally:
            self.creating = None
            self.show_task(None)
        late = " (it was done before the cancel could stop it)" if task.cancelled else ""
        self.say(f"created image {name} (generation 1, {info.backend}){late}")
        self.select_image(name)

    @work(group="operations", exit_on_error=False)
    @operation("import schroot's chroots")
    async def import_schroot(self, schroot_dir: str, backend: str | None) -> None:
        """Say how each of schroot's chroots would become an image, ask, import them one by one."""
        from core import schrootimport

        if self.creating is not None:
            self.notify(f"image {self.creating.name} is being created; one at a time", severity="warning")
            return
        plans, _ = await self.call(
            lambda: schrootimport.plan_import(self.engine, schroot_dir=schroot_dir), f"import {schroot_dir}"
        )
        ready = [p for p in plans if p.error is None and p.source is not None and p.image is not None]
        if not plans:
            self.say(f"no schroot chroots in {schroot_dir}")
            return
        lines: list[str | Text | Widget] = [Text.assemble("Import schroot's chroots from ", (schroot_dir, "bold"), "?")]
        for p in plans:
            if p.error is None and p.source is not None:
                notes = f", {len(p.notes)} note(s)" if p.notes else ""
                lines.append(f"  • {p.chroot} → image {p.image} from {p.source.describe()}{notes}")
            else:
                lines.append(f"  • {p.chroot}: not imported: {p.error}")
        lines.append(f"Every note: roost image import-schroot --all --schroot-dir {schroot_dir} --dry-run")
        if not ready:
            await self.app.push_screen_wait(ConfirmDialog("Nothing to import", lines, "OK", danger=False))
            return
        dialog = ConfirmDialog(f"Import {len(ready)} chroot(s)", lines, "Import", danger=False)
        if not await self.app.push_screen_wait(dialog):
            return
        task = CreateTask("schroot's chroots", f"from {schroot_dir}")
        ctx = self.engine.ctx
        engine = Engine(ctx.settings, actor=ctx.actor, policy=ctx.policy, on_wait=ctx.on_wait, progress=task.report)

        def run() -> None:
            for p in ready:
                task.report(None, f"{p.chroot}: creating image {p.image}")
                schrootimport.run(engine, [p], backend=backend)

        self.creating = task
        self.show_task(task)
        try:
            await self.call(run, f"import {schroot_dir}")
        except Cancelled:
            self.say("cancelled: the chroot being imported was not kept")
        finally:
            self.creating = None
            self.show_task(None)
        done = [f"{p.chroot} as {p.image}" for p in ready if p.imported]
        failed = [f"{p.chroot}: {p.error}" for p in plans if p.error is not None]
        if done:
            self.say(f"imported {', '.join(done)}")
        if failed:
            self.fail("not imported: " + "; ".join(failed))

    def cancel_create(self) -> None:
        """Stop the running create at its next progress report."""
        if self.creating is not None and not self.creating.cancelled:
            self.creating.cancel()

    # --- images ------------------------------------------------------------------------

    @work(group="operations", exit_on_error=False)
    @operation("begin session")
    async def begin_session(self, image: str) -> None:
        await self._begin(image, maintenance=False)

    @work(group="operations", exit_on_error=False)
    @operation("begin maintenance session")
    async def begin_maintenance(self, image: str) -> None:
        await self._begin(image, maintenance=True)

    async def _begin(self, image: str, *, maintenance: bool) -> None:
        kind = "maintenance session" if maintenance else "session"
        session = await self.call(lambda: self.engine.begin(image, maintenance=maintenance), f"begin {image}")
        self.say(f"began {kind} {session.id} on {image} (generation {session.generation})")
        self.select_session(session.id)

    @work(group="operations", exit_on_error=False)
    @operation("gc")
    async def collect_garbage(self, image: str) -> None:
        """Say what gc would delete, ask, delete."""
        plan = (await self.call(lambda: self.engine.gc(image, dry_run=True), f"gc {image}"))[0]
        if not plan.removed:
            self.say(f"{image}: nothing to delete (keeping {', '.join(map(str, plan.kept))})")
            return
        gens = ", ".join(map(str, plan.removed))
        question: list[str | Text] = [
            Text.assemble("Delete generation(s) ", (gens, "bold"), " of ", (image, "bold"), "?"),
            f"This frees about {human_size(plan.freed)}. They cannot be rolled back to afterwards.",
            f"Kept: {', '.join(map(str, plan.kept))} (current, the newest, and every one a session uses).",
        ]
        if not await self.app.push_screen_wait(ConfirmDialog(f"Garbage-collect {image}", question, "Delete")):
            return
        done = (await self.call(lambda: self.engine.gc(image), f"gc {image}"))[0]
        self.say(f"{image}: deleted generation(s) {', '.join(map(str, done.removed))}, {human_size(done.freed)} freed")

    @work(group="operations", exit_on_error=False)
    @operation("rollback")
    async def roll_back(self, image: str, generation: int, current: int) -> None:
        question: list[str | Text | Widget] = [
            Text.assemble("Make generation ", (str(generation), "bold"), " of ", (image, "bold"), " current again?"),
            f"Generation {current} stops being current: new sessions clone {generation} from now on.",
            "Running sessions keep what they were cloned from, and no generation is deleted:",
            f"rolling back to {current} undoes this.",
        ]
        packages = DiffLines(
            "What changes back:", lambda: diffs.rollback_changes(self.engine, image, current, generation)
        )
        question.append(packages)
        dialog = ConfirmDialog(f"Roll {image} back to generation {generation}", question, "Roll back", danger=False)
        if not await self.app.push_screen_wait(dialog):
            return
        now = await self.call(lambda: self.engine.rollback(image, generation), f"rollback {image}")
        self.say(f"{image} is now at generation {now}")

    # --- sessions ----------------------------------------------------------------------

    @work(group="operations", exit_on_error=False)
    @operation("end")
    async def end_session(self, sid: str) -> None:
        """Measure what ending loses, ask, end; offer force if a mount is kept busy from outside."""
        info = await self.call(lambda: self.engine.session_info(sid, details=True), f"end {sid}")
        s = info.session
        if info.changes:
            lost = [f"its changes: {human_size(info.changes)} written since it began, never promoted"]
        else:
            lost = ["its changes (none written yet)"]
        if info.processes:
            lost.append(f"{info.processes} process(es) running inside, killed (TERM, then KILL)")
        if s.maintenance:
            lost.append(f"its hold on {s.image}'s writer lock (others may maintain it again)")
        question: list[str | Text] = [
            Text.assemble(
                "End session ",
                (sid, "bold"),
                f" ({s.kind}, {s.image} generation {s.generation}, owned by {s.owner})?",
            ),
            "Lost for good:",
            *(f"  • {item}" for item in lost),
        ]
        if not await self.app.push_screen_wait(ConfirmDialog(f"End {sid}", question, "End session")):
            return
        try:
            await self.call(lambda: self.engine.end(sid), f"end {sid}")
        except Conflict as error:
            if "busy" not in str(error):
                raise
            # What `session end --force` does, once the operator has read why.
            question = [
                Text.assemble("Session ", (sid, "bold"), " could not be unmounted:"),
                Text(str(error), style="italic"),
                "Force detaches the busy mounts: whoever holds them keeps seeing the files until",
                "they let go, but the session, its record and its changes are gone.",
            ]
            if not await self.app.push_screen_wait(ConfirmDialog(f"Force end {sid}", question, "Force end")):
                return
            await self.call(lambda: self.engine.end(sid, force=True), f"end {sid}")
        self.say(f"ended session {sid}")

    @work(group="operations", exit_on_error=False)
    @operation("promote")
    async def promote_session(self, sid: str) -> None:
        """Check that the promote can be a fast-forward, ask for a message, promote."""

        def check() -> tuple[SessionInfo, ImageInfo, int]:
            info = self.engine.session_info(sid, details=False)
            image = self.engine.image_info(info.session.image)
            following = max((g.generation for g in self.engine.image_history(image.name)), default=0) + 1
            return info, image, following

        info, image, following = await self.call(check, f"promote {sid}")
        s = info.session
        if image.current != s.generation:
            self.notify(
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
            self.notify(
                f"cannot promote {sid}: {s.image} is being maintained by session {image.writer}; "
                "only that session may promote now.",
                title="image is being maintained",
                severity="error",
                timeout=12,
                markup=False,
            )
            return
        question: list[str | Text | Widget] = [
            Text.assemble("Promote ", (sid, "bold"), " into ", (s.image, "bold"), f" generation {following}?"),
            f"It becomes current (generation {image.current} stays in history for rollback),",
            "and the session ends.",
            DiffLines("What it changed:", lambda: diffs.session_changes(self.engine, sid)),
            "A message says what changed:",
        ]
        dialog = PromptDialog(f"Promote {sid}", question, placeholder="e.g. install build-essential", accept="Promote")
        message = await self.app.push_screen_wait(dialog)
        if message is None:
            return
        generation = await self.call(lambda: self.engine.promote(sid, message.strip()), f"promote {sid}")
        self.say(f"promoted {sid}: {s.image} is now at generation {generation}")

    @work(group="operations", exit_on_error=False)
    @operation("network")
    async def switch_network(self, sid: str, current: str) -> None:
        """Ask which network the session's next commands get, switch it, say who keeps the old one."""
        question: list[str | Text] = [
            Text.assemble("Switch the network of ", (sid, "bold"), " (now ", (current, "bold"), ")?"),
            "host: the host's network; none: a namespace of its own, loopback only;",
            "loopback: the host's network filtered to 127.0.0.1 and ::1.",
            "Commands started from now on get the new one; processes running inside",
            "keep the network they started with until they exit.",
        ]
        choices = [("host", "h"), ("none", "o"), ("loopback", "l")]
        choice = await self.app.push_screen_wait(ChoiceDialog(f"Network of {sid}", question, choices, current))
        if choice is None or choice == current:
            return
        old, running = await self.call(lambda: self.engine.set_network(sid, choice), f"network {sid}")
        kept = f"; {running} process(es) inside keep {old} until they exit" if running else ""
        self.say(f"{sid}: network {old} -> {choice}{kept}")

    @work(group="operations", exit_on_error=False)
    @operation("recover")
    async def recover_session(self, sid: str) -> None:
        report = await self.call(lambda: self.engine.recover(sid), f"recover {sid}")
        self.say("; ".join(report) if report else f"{sid}: nothing to recover")

    @work(group="operations", exit_on_error=False)
    @operation("enter")
    async def enter_session(self, sid: str) -> None:
        """A login shell inside: the console steps aside until the shell exits."""
        launch = await self.call(lambda: self.engine.launch(sid, None), f"enter {sid}")
        try:
            with self.app.suspend():
                # The run protocol: the session's lock is held shared until the shell has exec'd.
                tty = process.terminal(self.terminal["stdin"])
                pid = self.engine.start(sid, launch, foreground=tty, **self.terminal)
                code = process.wait_foreground(pid, tty)
        except SuspendNotSupported:
            self.notify(
                f"this console cannot hand over its terminal here; in a shell run: sudo roost session enter {sid}",
                severity="warning",
                timeout=10,
                markup=False,
            )
            return
        except OSError as e:
            self.notify(f"enter {sid}: {e.strerror}", severity="error", markup=False)
            return
        self.say(f"back from session {sid} (the shell exited with {code})")

    @work(group="operations", exit_on_error=False)
    async def run_in_session(self, sid: str) -> None:
        """Ask for a command, run it inside, show its output as it comes."""
        prompt = PromptDialog(
            f"Run in {sid}",
            ["A command for /bin/sh -c, run as you, in / of the session:"],
            placeholder="e.g. apt-get update",
            accept="Run",
            allow_empty=False,
        )
        command = await self.app.push_screen_wait(prompt)
        if command is not None and command.strip():
            await self._run(sid, command)

    @operation("run")
    async def _run(self, sid: str, command: str) -> None:
        dialog = OutputDialog(f"{sid}: {command}")
        await self.app.push_screen(dialog)
        code = await self.call(lambda: self._stream(sid, command, dialog), f"run {sid}")
        dialog.done(_status(code, dialog.interrupted))

    def _stream(self, sid: str, command: str, dialog: OutputDialog) -> int:
        """In a thread: start the command with a pipe for its output, stream it, wait."""
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

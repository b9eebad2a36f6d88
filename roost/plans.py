"""Batch plans: a YAML list of steps run in order through the engine (``roost --headless batch PLAN``).

A plan is parsed and checked completely before anything runs: an unknown
step or field, a missing field, a wrong type, a bad name, a reference to a
session the plan has not begun, a file that is not UTF-8 YAML or larger than
1 MiB — each is one :class:`BadInput` line naming the file and the step, and
nothing changes. Named images must exist before the first step runs.

Running stops at the first failure (unless that step says
``on-failure: continue``) and ends every session the plan began and did not
end or promote. Sessions are named inside a plan by the ``as`` of the step
that began them. ``for-each-image`` runs its steps once per image; the
sessions an iteration begins must be ended or promoted by that iteration,
and a failed iteration is cleaned up before the next one (or before the
plan stops). The schema is documented in docs/batch.md.

Plans are a client of the engine: every step is one of ``Engine``'s public
operations, so locking, validation and journaling happen there as for any
other command.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.actor import now_iso
from core.errors import EXIT_COMMAND_FAILED, BadInput, Conflict, NotFound, RoostError
from core.names import check_generation, is_valid_name, printable

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.engine import Engine

MAX_PLAN_BYTES = 1 << 20
EXIT_INTERRUPTED = 130
ALL = "all"

#: kind -> (the field a plain value stands for, every field the kind accepts)
KINDS: dict[str, tuple[str, frozenset[str]]] = {
    "begin": ("image", frozenset({"image", "as", "maintenance", "name", "on-failure"})),
    "run": ("session", frozenset({"session", "command", "user", "directory", "environment", "on-failure"})),
    "promote": ("session", frozenset({"session", "message", "on-failure"})),
    "end": ("session", frozenset({"session", "force", "on-failure"})),
    "gc": ("images", frozenset({"images", "keep", "on-failure"})),
    "rollback": ("image", frozenset({"image", "generation", "on-failure"})),
    "for-each-image": ("images", frozenset({"images", "steps", "on-failure"})),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "begin": ("as",),
    "run": ("session", "command"),
    "promote": ("session",),
    "end": ("session",),
    "for-each-image": ("images", "steps"),
}
PLAN_KEYS = frozenset({"version", "description", "steps"})


# --- the parsed plan ---------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step; which fields matter depends on :attr:`kind` (see docs/batch.md)."""

    index: str  # "3", or "1.2" for the second step of the first step's for-each-image
    kind: str
    on_failure: str = "stop"  # or "continue"
    image: str | None = None  # begin, rollback (None: the for-each-image's image)
    images: tuple[str, ...] | None = None  # gc, for-each-image (None: every image, or the loop's for gc)
    session: str | None = None  # run, promote, end: a plan-local name; begin: its "as"
    maintenance: bool = False
    name: str | None = None  # begin: the session id to use
    command: tuple[str, ...] = ()
    user: str | None = None
    directory: str | None = None
    environment: tuple[tuple[str, str], ...] = ()
    message: str = ""
    force: bool = False
    keep: int | None = None
    generation: int | None = None
    steps: tuple[Step, ...] = ()
    every_image: bool = False  # gc, for-each-image: "all"

    def label(self) -> str:
        return f"step {self.index} ({self.kind})"


@dataclass(frozen=True)
class Plan:
    where: str  # the file, as the user named it
    steps: tuple[Step, ...]
    description: str = ""

    def image_names(self) -> list[tuple[Step, str]]:
        """Every image the plan names explicitly, with the step naming it."""
        out: list[tuple[Step, str]] = []
        for step in _walk(self.steps):
            if step.image is not None:
                out.append((step, step.image))
            for name in step.images or ():
                out.append((step, name))
        return out


def _walk(steps: tuple[Step, ...]) -> list[Step]:
    out: list[Step] = []
    for step in steps:
        out.append(step)
        out.extend(_walk(step.steps))
    return out


# --- parsing -----------------------------------------------------------------------


def parse(data: bytes, where: str) -> Plan:
    """Parse and check a plan; every problem is one :class:`BadInput` line naming *where*."""
    if len(data) > MAX_PLAN_BYTES:
        raise BadInput(f"{where}: larger than {MAX_PLAN_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{where}: not valid UTF-8 (byte {e.start})") from None
    doc = _load_yaml(text, where)
    if isinstance(doc, list):
        doc = {"steps": doc}
    if not isinstance(doc, dict):
        raise BadInput(f"{where}: a plan is a mapping with 'steps' (or a list of steps), not {_what(doc)}")
    unknown = sorted(map(str, set(doc) - PLAN_KEYS))
    if unknown:
        raise BadInput(f"{where}: unknown key {unknown[0]!r} (a plan has {_known(PLAN_KEYS)})")
    version = doc.get("version", 1)
    if version != 1 or isinstance(version, bool):
        raise BadInput(f"{where}: version must be 1, not {version!r}")
    description = doc.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise BadInput(f"{where}: description must be text, not {_what(description)}")
    if "steps" not in doc:
        raise BadInput(f"{where}: no steps (a plan needs a 'steps' list)")
    steps = _steps(doc["steps"], where, prefix="", in_loop=False)
    plan = Plan(where=where, steps=steps, description=description)
    _check_flow(plan)
    return plan


def _load_yaml(text: str, where: str) -> Any:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """No aliases (a small file must stay small) and no duplicate keys (the last must not silently win)."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a plan", mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        None, None, "keys must be plain words", key_node.start_mark
                    ) from None
                if duplicate:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    from core.yamlio import parse_yaml

    return parse_yaml(text, where, loader=StrictLoader, error=BadInput)


def _what(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a yes/no value)"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {printable(value, 40)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _known(names: frozenset[str] | set[str]) -> str:
    return ", ".join(sorted(names))


class _Fields:
    """The fields of one step, read with checks that name the step."""

    def __init__(self, where: str, index: str, kind: str, data: dict[str, Any]) -> None:
        self.where = where
        self.index = index
        self.kind = kind
        self.data = data

    def fail(self, message: str) -> BadInput:
        return BadInput(f"{self.where}: step {self.index} ({self.kind}): {message}")

    def text(self, key: str, *, limit: int = 4096) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.fail(f"{key} must be text, not {_what(value)}")
        value = str(value)
        if "\x00" in value or len(value) > limit:
            raise self.fail(f"{key} is longer than {limit} characters or holds a NUL")
        return value

    def name(self, key: str, what: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not is_valid_name(value):
            shown = printable(str(value)) if isinstance(value, str) else _what(value)
            raise self.fail(f"{key}: invalid {what} {shown} (use letters, digits and _ . + -)")
        assert isinstance(value, str)
        return value

    def flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(f"{key} must be true or false, not {_what(value)}")
        return value

    def number(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(f"{key} must be a positive number, not {_what(value)}")
        return value

    def images(self, key: str) -> tuple[tuple[str, ...] | None, bool]:
        """(names, every image) from ``all``, one name, or a list of names; (None, False) if absent."""
        value = self.data.get(key)
        if value is None:
            return None, False
        if value == ALL:
            return None, True
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.fail(f"{key} must be all, an image name or a list of image names, not {_what(value)}")
        names = []
        for item in value:
            if not is_valid_name(item):
                shown = printable(str(item)) if isinstance(item, str) else _what(item)
                raise self.fail(f"{key}: invalid image name {shown}")
            if item in names:
                raise self.fail(f"{key}: image {item} is named twice")
            names.append(item)
        return tuple(names), False

    def command(self) -> tuple[str, ...]:
        value = self.data.get("command")
        if isinstance(value, str):
            if not value.strip() or "\x00" in value:
                raise self.fail("command is empty or holds a NUL")
            return ("/bin/sh", "-c", value)
        if isinstance(value, list) and value and all(isinstance(a, str) and "\x00" not in a for a in value):
            if not value[0]:
                raise self.fail("command: the program name is empty")
            return tuple(value)
        raise self.fail(f"command must be a shell command line or a list of words, not {_what(value)}")

    def environment(self) -> tuple[tuple[str, str], ...]:
        value = self.data.get("environment")
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise self.fail(f"environment must be a mapping of NAME: value, not {_what(value)}")
        out = []
        for name, item in value.items():
            if not isinstance(name, str) or not name or not (name[0].isalpha() or name[0] == "_"):
                raise self.fail(f"environment: invalid variable name {printable(str(name))}")
            if not all(c.isascii() and (c.isalnum() or c == "_") for c in name):
                raise self.fail(f"environment: invalid variable name {printable(name)}")
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                raise self.fail(f"environment: {name} must be text (quote it), not {_what(item)}")
            if "\x00" in str(item):
                raise self.fail(f"environment: {name} holds a NUL")
            out.append((name, str(item)))
        return tuple(out)


def _steps(value: Any, where: str, *, prefix: str, in_loop: bool) -> tuple[Step, ...]:
    context = f"step {prefix[:-1]} (for-each-image): steps" if prefix else "steps"
    if not isinstance(value, list):
        raise BadInput(f"{where}: {context} must be a list of steps, not {_what(value)}")
    if not value:
        raise BadInput(f"{where}: {context} is empty")
    return tuple(_step(item, where, f"{prefix}{i}", in_loop=in_loop) for i, item in enumerate(value, 1))


def _step(item: Any, where: str, index: str, *, in_loop: bool) -> Step:
    kinds = _known(set(KINDS))
    if isinstance(item, str) and item in KINDS:
        item = {item: None}
    if not isinstance(item, dict) or not item:
        raise BadInput(f"{where}: step {index}: expected one of {kinds} with its fields, not {_what(item)}")
    if len(item) != 1:
        keys = ", ".join(map(str, item))
        raise BadInput(
            f"{where}: step {index}: has {keys}; a step is one kind ({kinds}) with its fields below it, "
            f"e.g. '- run: {{session: s, command: make}}'"
        )
    ((kind, value),) = item.items()
    if kind not in KINDS:
        raise BadInput(f"{where}: step {index}: unknown step {printable(str(kind))} (known: {kinds})")
    main, allowed = KINDS[kind]
    if value is None:
        data: dict[str, Any] = {}
    elif isinstance(value, dict):
        data = value
    else:
        data = {main: value}
    f = _Fields(where, index, kind, data)
    unknown = sorted(map(str, set(data) - allowed))
    if unknown:
        raise f.fail(f"unknown field {printable(unknown[0])} (known: {_known(allowed)})")
    for key in REQUIRED.get(kind, ()):
        if data.get(key) is None:
            raise f.fail(f"{key} is missing")
    on_failure = data.get("on-failure", "stop")
    if on_failure not in ("stop", "continue"):
        raise f.fail(f"on-failure must be stop or continue, not {_what(on_failure)}")
    common: dict[str, Any] = {"index": index, "kind": kind, "on_failure": on_failure}
    if kind == "begin":
        image = f.name("image", "image name")
        if image is None and not in_loop:
            raise f.fail("image is missing (only a begin inside for-each-image may leave it out)")
        if on_failure == "continue":
            raise f.fail("on-failure: continue is not allowed on a begin (the steps after it need its session)")
        name = f.name("name", "session id")
        if name is not None and in_loop:
            raise f.fail("name is not allowed inside for-each-image (each image needs its own session id)")
        return Step(
            **common, image=image, session=f.name("as", "session name"), maintenance=f.flag("maintenance"), name=name
        )
    if kind == "run":
        directory = f.text("directory")
        if directory is not None and not directory.startswith("/"):
            raise f.fail(f"directory must be an absolute path, not {printable(directory)}")
        return Step(
            **common,
            session=f.name("session", "session name"),
            command=f.command(),
            user=f.text("user", limit=256),
            directory=directory,
            environment=f.environment(),
        )
    if kind == "promote":
        return Step(**common, session=f.name("session", "session name"), message=f.text("message") or "")
    if kind == "end":
        return Step(**common, session=f.name("session", "session name"), force=f.flag("force"))
    if kind == "gc":
        images, every = f.images("images")
        if images is None and not every and not in_loop:
            raise f.fail("images is missing: all, an image or a list (only a gc in for-each-image may leave it out)")
        return Step(**common, images=images, every_image=every, keep=f.number("keep"))
    if kind == "rollback":
        image = f.name("image", "image name")
        if image is None and not in_loop:
            raise f.fail("image is missing (only a rollback inside for-each-image may leave it out)")
        generation = None
        if data.get("generation") is not None:
            try:
                generation = check_generation(data["generation"])
            except BadInput as e:
                raise f.fail(str(e)) from None
        return Step(**common, image=image, generation=generation)
    # for-each-image
    if in_loop:
        raise f.fail("for-each-image cannot be nested")
    images, every = f.images("images")
    steps = _steps(data["steps"], where, prefix=f"{index}.", in_loop=True)
    return Step(**common, images=images, every_image=every, steps=steps)


def _check_flow(plan: Plan) -> None:
    """Every session a step names was begun before it and is still open; loops close what they open."""
    _flow(plan, plan.steps, {}, outer={})


def _flow(plan: Plan, steps: tuple[Step, ...], open_: dict[str, Step], *, outer: dict[str, Step]) -> None:
    def fail(step: Step, message: str) -> BadInput:
        return BadInput(f"{plan.where}: {step.label()}: {message}")

    for step in steps:
        if step.kind == "begin":
            assert step.session is not None
            earlier = open_.get(step.session) or outer.get(step.session)
            if earlier is not None:
                raise fail(step, f"session {step.session} is already open (begun by step {earlier.index})")
            open_[step.session] = step
        elif step.kind in ("run", "promote", "end"):
            assert step.session is not None
            if step.session in open_:
                if step.kind != "run":
                    del open_[step.session]
            elif step.session in outer:
                if step.kind != "run":
                    raise fail(
                        step,
                        f"session {step.session} was begun outside this for-each-image (step "
                        f"{outer[step.session].index}); only that level may {step.kind} it",
                    )
            else:
                raise fail(step, f"no open session {step.session} (name it with 'as' in a begin step before this one)")
        elif step.kind == "for-each-image":
            inner: dict[str, Step] = {}
            _flow(plan, step.steps, inner, outer={**outer, **open_})
            if inner:
                left = next(iter(inner.values()))
                raise fail(left, f"session {left.session} is never ended or promoted in its for-each-image")


# --- running -----------------------------------------------------------------------


@dataclass
class StepResult:
    """What one step (or one clean-up) did."""

    step: str  # the step's index, or "cleanup"
    kind: str
    status: str  # "ok", "failed" or "interrupted"
    exit_code: int = 0
    image: str | None = None
    session: str | None = None  # the session id
    name: str | None = None  # the plan-local name
    detail: str = ""
    error: str | None = None
    cleanup: bool = False
    started: str = ""
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "step": self.step,
            "kind": self.kind,
            "status": self.status,
            "exit_code": self.exit_code,
            "image": self.image,
            "session": self.session,
            "name": self.name,
            "detail": self.detail,
            "error": self.error,
            "cleanup": self.cleanup,
            "started": self.started,
            "seconds": round(self.seconds, 3),
        }
        out.update(self.data)
        return out


@dataclass(frozen=True)
class OpenSession:
    name: str
    id: str
    image: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "id": self.id, "image": self.image}


@dataclass
class Report:
    """The whole run: every result in order, the first failure, what stays open."""

    file: str
    description: str
    results: list[StepResult] = field(default_factory=list)
    failed: StepResult | None = None
    open_sessions: list[OpenSession] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed is None

    @property
    def exit_code(self) -> int:
        return 0 if self.failed is None else self.failed.exit_code

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "description": self.description,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "failed_step": self.failed.step if self.failed else None,
            "steps": [r.to_json() for r in self.results],
            "sessions": [s.to_json() for s in self.open_sessions],
        }


class _Scope:
    """Sessions a level of the plan (the plan, or one iteration of a loop) began and has not closed."""

    def __init__(self, parent: _Scope | None = None) -> None:
        self.parent = parent
        self.open: dict[str, OpenSession] = {}
        self.left: list[OpenSession] = []  # closed in the plan's eyes, but their end or promote failed

    def lookup(self, name: str) -> OpenSession:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.open:
                return scope.open[name]
            scope = scope.parent
        raise NotFound(f"no open session {name}")  # the plan check makes this unreachable

    def add(self, session: OpenSession) -> None:
        stale = self.open.pop(session.name, None)
        if stale is not None:
            self.left.append(stale)
        self.open[session.name] = session

    def pending(self) -> list[OpenSession]:
        return [*self.left, *self.open.values()]


class _Runner:
    def __init__(self, eng: Engine, plan: Plan, on_result: Callable[[StepResult], None] | None, output: int) -> None:
        self.eng = eng
        self.plan = plan
        self.on_result = on_result
        self.output = output
        self.report = Report(file=plan.where, description=plan.description)
        self.interrupted = False
        self.failures = 0  # failed steps so far (clean-ups not counted)
        self.closed_later = _closed_later(plan.steps)

    # results

    def emit(self, result: StepResult) -> None:
        self.report.results.append(result)
        if not result.ok and not result.cleanup:
            self.failures += 1
            if self.report.failed is None:
                self.report.failed = result
        if self.on_result is not None:
            self.on_result(result)

    # levels

    def steps(self, steps: tuple[Step, ...], scope: _Scope, image: str | None) -> bool:
        """Run *steps*; False when a failure stops this level (or the plan was interrupted)."""
        for step in steps:
            ok = self.loop(step, scope) if step.kind == "for-each-image" else self.one(step, scope, image)
            if self.interrupted:
                return False
            if not ok and step.on_failure == "stop":
                return False
        return True

    def loop(self, step: Step, scope: _Scope) -> bool:
        started, clock = now_iso(), time.monotonic()
        names = self.eng.image_names() if step.every_image else list(step.images or ())
        first_result = len(self.report.results)
        ran: list[str] = []
        failed_images: list[str] = []
        for name in names:
            inner = _Scope(scope)
            before = self.failures
            ran.append(name)
            try:
                completed = self.steps(step.steps, inner, name)
            finally:
                self.clean(inner)  # this image's sessions, whatever happened
            if not completed or self.failures != before:
                failed_images.append(name)
            if self.interrupted or (failed_images and step.on_failure == "stop"):
                break
        detail = f"{len(ran)} image{'s' if len(ran) != 1 else ''}" + (f": {', '.join(ran)}" if ran else "")
        first = next((r for r in self.report.results[first_result:] if not r.ok and not r.cleanup), None)
        result = StepResult(
            step=step.index,
            kind=step.kind,
            status="ok" if not failed_images else ("interrupted" if self.interrupted else "failed"),
            exit_code=first.exit_code if first is not None and failed_images else 0,
            detail=detail + (f"; failed: {', '.join(failed_images)}" if failed_images else ""),
            error=f"failed for {', '.join(failed_images)}" if failed_images else None,
            started=started,
            seconds=time.monotonic() - clock,
            data={"images": ran, "failed_images": failed_images},
        )
        # the loop's own line is not the plan's first failure: the step inside it is
        self.report.results.append(result)
        if self.on_result is not None:
            self.on_result(result)
        return not failed_images

    def one(self, step: Step, scope: _Scope, loop_image: str | None) -> bool:
        started, clock = now_iso(), time.monotonic()
        result = StepResult(step=step.index, kind=step.kind, status="ok", started=started)
        try:
            self.execute(step, scope, loop_image, result)
        except RoostError as e:
            result.status = "failed"
            result.exit_code = e.exit_code
            result.error = str(e)
        except KeyboardInterrupt:
            self.interrupted = True
            result.status = "interrupted"
            result.exit_code = EXIT_INTERRUPTED
            result.error = "interrupted"
        result.seconds = time.monotonic() - clock
        self.emit(result)
        return result.ok

    def execute(self, step: Step, scope: _Scope, loop_image: str | None, result: StepResult) -> None:
        eng = self.eng
        if step.kind == "begin":
            image = step.image or loop_image
            assert image is not None and step.session is not None
            result.image, result.name = image, step.session
            auto = step.index in self.closed_later
            session = eng.begin(image, name=step.name, maintenance=step.maintenance, auto=auto)
            scope.add(OpenSession(step.session, session.id, image))
            result.session = session.id
            result.detail = f"session {session.id} (generation {session.generation}, {session.kind})"
            result.data = {"generation": session.generation, "session_kind": session.kind}
            return
        if step.kind in ("run", "promote", "end"):
            assert step.session is not None
            target = scope.lookup(step.session)
            result.image, result.name, result.session = target.image, target.name, target.id
            if step.kind == "run":
                code = self.run_command(step, target)
                result.data = {"exit": code}
                if code != 0:
                    raise _CommandFailed(f"the command exited with {code}")
                result.detail = "the command exited with 0"
            elif step.kind == "promote":
                number = eng.promote(target.id, step.message)
                _forget(scope, target)
                result.detail = f"generation {number}"
                result.data = {"generation": number}
            else:
                eng.end(target.id, force=step.force)
                _forget(scope, target)
                result.detail = f"session {target.id} ended"
            return
        if step.kind == "gc":
            if step.every_image:
                targets: list[str | None] = [None]
            elif step.images is not None:
                targets = list(step.images)
            else:
                targets = [loop_image]
            result.image = loop_image if step.images is None and not step.every_image else None
            removed: dict[str, list[int]] = {}
            freed = 0
            for target_image in targets:
                for gc in eng.gc(target_image, keep=step.keep):
                    removed[gc.image] = gc.removed
                    freed += gc.freed
            count = sum(len(v) for v in removed.values())
            result.detail = f"removed {count} generation{'s' if count != 1 else ''}"
            if count:
                listed = "; ".join(f"{k}: " + ", ".join(map(str, v)) for k, v in removed.items() if v)
                result.detail += f" ({listed})"
            result.data = {"removed": removed, "freed": freed}
            return
        if step.kind == "rollback":
            image = step.image or loop_image
            assert image is not None
            result.image = image
            number = eng.rollback(image, step.generation)
            result.detail = f"generation {number} is current"
            result.data = {"generation": number}
            return
        raise AssertionError(step.kind)

    def run_command(self, step: Step, target: OpenSession) -> int:
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            code: int = self.eng.run_in(
                target.id,
                list(step.command),
                user=step.user,
                directory=step.directory or "/",
                extra_env=dict(step.environment),
                stdin=null,
                stdout=self.output,
                stderr=2,
                # An interrupt (ctrl-c, SIGTERM) stops the plan; clean-up ends the session and what runs in it.
                forward_signals=False,
            )
        finally:
            os.close(null)
        return code

    def clean(self, scope: _Scope) -> None:
        """End what *scope* began and did not close, newest first."""
        for session in reversed(scope.pending()):
            started, clock = now_iso(), time.monotonic()
            result = StepResult(
                step="cleanup",
                kind="end",
                status="ok",
                image=session.image,
                session=session.id,
                name=session.name,
                cleanup=True,
                started=started,
            )
            try:
                self.eng.end(session.id, force=True)
                result.detail = f"session {session.id} ended"
            except NotFound:
                result.detail = f"session {session.id} was already gone"
            except RoostError as e:
                result.status = "failed"
                result.exit_code = e.exit_code
                result.error = str(e)
            result.seconds = time.monotonic() - clock
            self.emit(result)
        scope.open.clear()
        scope.left.clear()


class _CommandFailed(RoostError):
    exit_code = EXIT_COMMAND_FAILED


def _forget(scope: _Scope, target: OpenSession) -> None:
    s: _Scope | None = scope
    while s is not None:
        if s.open.get(target.name) == target:
            del s.open[target.name]
            return
        s = s.parent


def _closed_later(steps: tuple[Step, ...]) -> set[str]:
    """The begin steps whose session a later step of the plan ends or promotes.

    Such sessions are automatic: if the plan's process dies, ``roost session
    recover`` ends them. Sessions a plan leaves open on purpose are ordinary.
    """
    out: set[str] = set()
    flat = _walk(steps)
    for i, step in enumerate(flat):
        if step.kind != "begin":
            continue
        for later in flat[i + 1 :]:
            if later.kind == "begin" and later.session == step.session:
                break
            if later.kind in ("promote", "end") and later.session == step.session:
                out.add(step.index)
                break
    return out


def preflight(eng: Engine, plan: Plan) -> None:
    """What must hold before the first step runs: the named images exist, the session ids are free."""
    for step, name in plan.image_names():
        if not eng.image_exists(name):
            raise NotFound(f"{plan.where}: {step.label()}: no image {name!r}")
    for step in _walk(plan.steps):
        if step.name is not None and eng.session_exists(step.name):
            raise Conflict(f"{plan.where}: {step.label()}: session {step.name} already exists")


def run(
    eng: Engine,
    plan: Plan,
    *,
    on_result: Callable[[StepResult], None] | None = None,
    output: int = 1,
) -> Report:
    """Run *plan*; the report says what each step did and which one failed first.

    The commands of ``run`` steps write their standard output to *output*
    (a file descriptor) and their errors to 2; their input is /dev/null.
    """
    preflight(eng, plan)
    runner = _Runner(eng, plan, on_result, output)
    top = _Scope()
    finished = False
    try:
        runner.steps(plan.steps, top, None)
        finished = True
    except KeyboardInterrupt:
        runner.interrupted = True
        stop = StepResult(step="-", kind="interrupt", status="interrupted", exit_code=EXIT_INTERRUPTED)
        stop.error = "interrupted"
        runner.emit(stop)
    finally:
        # a failure, an interrupt, or (a bug) anything else: end what the plan began
        if not finished or runner.report.failed is not None:
            runner.clean(top)
    runner.report.open_sessions = list(top.open.values())
    failed = runner.report.failed
    eng.journal(
        "batch",
        plan=plan.where,
        steps=sum(1 for r in runner.report.results if not r.cleanup),
        result="ok" if failed is None else "failed",
        failed_step=failed.step if failed else None,
        error=failed.error if failed else None,
    )
    return runner.report

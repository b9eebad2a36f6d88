"""The door's actions: list, info, location, begin, run, end, recover and the automatic session."""

from __future__ import annotations

import sys

from . import keys
from .catalogue import Catalogue, Target, not_found, resolve
from .info import info_text
from .options import ACTIONS, EXIT_FAILURE, PROG, UsageError
from .running import describe, failure_reason, prepare_launch, run_launch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from core.engine import Engine
    from core.records import Session

    from .options import Options


class FrontDoor:
    """One invocation: parsed options, the engine, and where output goes."""

    def __init__(self, opts: Options, eng: Engine, environ: Mapping[str, str]) -> None:
        self.opts = opts
        self.eng = eng
        self.environ = environ

    def say(self, message: str) -> None:
        if self.opts.verbose:
            print(f"{PROG}: {message}", file=sys.stderr, flush=True)

    # selection

    def _default_all(self, *, sessions: bool) -> None:
        o = self.opts
        if not o.chroots and not o.selects_all:
            o.all_chroots = o.all_sources = True
            o.all_sessions = sessions

    def targets(self, default: str = "chroot") -> list[Target]:
        o = self.opts
        if o.chroots and o.selects_all:
            raise UsageError("--chroot and --all… select chroots two ways: use one")
        if o.chroots:
            return [resolve(self.eng, c, default) for c in o.chroots]
        catalogue = Catalogue.load(self.eng, with_sessions=o.all_sessions)
        return catalogue.targets(o)

    def one_target(self, default: str) -> Target:
        targets = self.targets(default)
        if len(targets) != 1:
            raise UsageError("this action needs exactly one chroot (-c NAME)")
        return targets[0]

    # listing

    def do_list(self) -> int:
        o = self.opts
        if o.chroots and o.selects_all:
            raise UsageError("--chroot and --all… select chroots two ways: use one")
        if o.chroots:
            for c in o.chroots:
                resolve(self.eng, c)  # every name must exist before anything is printed
            sys.stdout.write("".join(f"{c}\n" for c in o.chroots))
            return 0
        self._default_all(sessions=False)
        catalogue = Catalogue.load(self.eng, with_sessions=o.all_sessions)
        sys.stdout.write("".join(f"{n}\n" for n in catalogue.names(o)))
        return 0

    def do_info(self) -> int:
        self._default_all(sessions=False)
        sys.stdout.write(info_text(self.eng, self.targets()))
        return 0

    def do_location(self) -> int:
        self._default_all(sessions=False)
        lines = []
        for t in self.targets():
            # an image has no single tree to point at: like schroot's session-only chroots,
            # it has a location only once a session is mounted
            lines.append(t.session.mountpoint if t.session is not None else "")
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        return 0

    # sessions

    def _begin(self, target: Target, *, auto: bool) -> Session:
        from core.errors import BadInput

        if target.namespace == "session":
            raise BadInput(f"{target.given}: a session cannot begin another session (use -r)")
        assert target.image is not None
        alias = target.name if target.name != target.image else None
        name = self.opts.session_name
        if name is not None and not auto:
            from .sessionnames import session_id

            name = session_id(name)
        session = self.eng.begin(
            target.image,
            name=None if auto else name,
            maintenance=target.namespace == "source",
            auto=auto,
            alias=alias,
            **keys.parse(self.opts.options, "begin"),  # type: ignore[arg-type]
        )
        self.say(f"began {session.kind} session {session.id} of {session.image} (generation {session.generation})")
        return session

    def do_begin(self) -> int:
        if self.opts.command:
            raise UsageError("--begin-session takes no command")
        target = self.one_target("chroot")
        session = self._begin(target, auto=False)
        # as schroot: the name given with -n (a long one is kept under its roost id), else the id
        print(self.opts.session_name or session.id, flush=True)
        return 0

    def _sessions(self) -> list[Target]:
        if self.opts.selects_all:
            raise UsageError("this action works on sessions named with -c")
        targets = self.targets("session")
        if not targets:
            raise UsageError("no session given (-c SESSION)")
        for t in targets:
            if t.session is None:
                raise not_found(t.given)
        return targets

    def run_in(self, session: Session, *, unblock: bool = False) -> int:
        from .isolation import requested_network

        wanted = requested_network(self.opts.options, self.environ)
        if wanted is not None and wanted != session.network:
            old, _ = self.eng.set_network(session.id, wanted)
            self.say(f"session {session.id}: network {old} -> {wanted}")
        launch = prepare_launch(self.eng, session, self.opts, self.environ)
        code = run_launch(self.eng, session.id, launch, unblock=unblock)
        if code != 0 and session.maintenance:
            self.eng.mark_failed(session.id, failure_reason(self.opts.command, code))
        return code

    def do_run(self) -> int:
        code = 0
        for t in self._sessions():
            assert t.session is not None
            status = self.run_in(t.session)
            code = code or status
        return code

    def finish(self, session: Session, *, force: bool, message: str | None = None) -> int:
        """End *session*: an ordinary one is thrown away, a source session promoted unless it failed."""
        eng = self.eng
        if not session.maintenance:
            eng.end(session.id, force=force)
            self.say(f"ended session {session.id}")
            return 0
        current = eng.session_info(session.id, details=False).session
        if current.failed:
            eng.end(session.id, force=True)
            print(
                f"{PROG}: source session {session.id} not promoted ({current.failed}); "
                f"{session.image} stays at generation {session.generation}",
                file=sys.stderr,
                flush=True,
            )
            return EXIT_FAILURE
        shown = current.alias or current.image
        number = eng.promote(session.id, message or f"schroot source:{shown} session {session.id}")
        self.say(f"promoted source session {session.id}: {session.image} is at generation {number}")
        return 0

    def do_end(self) -> int:
        if self.opts.command:
            raise UsageError("--end-session takes no command")
        code = 0
        for t in self._sessions():
            assert t.session is not None
            code = self.finish(t.session, force=self.opts.force) or code
        return code

    def do_recover(self) -> int:
        for t in self._sessions():
            for line in self.eng.recover(t.name):
                self.say(line)
        return 0

    def do_automatic(self) -> int:
        """Begin, run, end (or promote) in every selected chroot, in turn."""
        import _signal  # type: ignore[import-not-found]

        from core import process

        o = self.opts
        if o.session_name:
            raise UsageError("--session-name goes with --begin-session")
        if not o.chroots and not o.selects_all:
            o.chroots = ["default"]  # schroot's fallback name
        code = 0
        for target in self.targets("chroot"):
            if target.session is not None:
                keys.parse(o.options, "run")  # a session that exists is not begun: begin keys do not apply
                status = self.run_in(target.session)
            else:
                relayed = process.relayed_signals()
                # Signals that arrive while the session is set up or torn down wait until
                # the command runs (and are then relayed to it): the session always ends.
                _signal.pthread_sigmask(_signal.SIG_BLOCK, relayed)
                try:
                    session = self._begin(target, auto=True)
                    try:
                        status = self.run_in(session, unblock=True)
                    except BaseException:
                        self.eng.end(session.id, force=True)
                        raise
                    what = f"-- {describe(o.command)}" if o.command else "(a login shell)"
                    ended = self.finish(session, force=True, message=f"schroot -c {target.given} {what}")
                    status = status or ended
                finally:
                    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, relayed)
            code = code or status
        return code

    def do_config(self) -> int:
        from .config import config_text

        self._default_all(sessions=False)
        sys.stdout.write(config_text(self.eng, self.targets()))
        return 0

    def dispatch(self) -> int:
        o = self.opts
        action = o.action or "automatic"
        if action in ("automatic", "begin", "run"):
            # like schroot: -o is checked for the actions that begin or run, and ignored by the others
            keys.parse(o.options, "run" if action == "run" else "begin")
        if action not in ("automatic", "run") and o.command:
            raise UsageError(f"unexpected command {o.command[0]!r} for {ACTIONS[action]}")
        handlers: dict[str, Callable[[], int]] = {
            "list": self.do_list,
            "info": self.do_info,
            "config": self.do_config,
            "location": self.do_location,
            "automatic": self.do_automatic,
            "begin": self.do_begin,
            "recover": self.do_recover,
            "run": self.do_run,
            "end": self.do_end,
        }
        return handlers[action]()

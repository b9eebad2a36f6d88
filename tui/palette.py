"""The command palette's provider (ctrl+p or :): every action, named after what is selected."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from .screen import MainScreen

Command = tuple[str, str, Callable[[], object]]


def commands(screen: MainScreen) -> Iterator[Command]:
    """What can be done now: verbs on the selection first, then moving around."""

    def run(action: str) -> Callable[[], object]:
        return partial(screen.run_action, action)

    image = screen.selected_image()
    if image is not None:
        n = image.name
        yield (f"Begin a session on {n}", "an ordinary session: a private copy-on-write clone", run("begin"))
        yield (
            f"Begin a maintenance session on {n}",
            "holds the writer lock; promote it to make a new generation",
            run("begin_maintenance"),
        )
        yield (f"Show the history of {n}", "its generations, newest first", run("show_pane('history')"))
        yield (f"Garbage-collect {n}", "delete old generations that no session uses (asks first)", run("gc"))
    info = screen.selected_session()
    if info is not None:
        sid = info.session.id
        yield (
            f"Enter session {sid}",
            "a login shell inside; the console comes back when it exits",
            run("enter_session"),
        )
        yield (f"Run a command in {sid}", "and show its output", run("run_command"))
        yield (
            f"Promote session {sid}",
            f"into the next generation of {info.session.image} (asks for a message)",
            run("promote"),
        )
        yield (
            f"Switch the network of {sid}",
            f"now {info.session.network}: host, none or loopback for its next commands (asks which)",
            run("switch_network"),
        )
        yield (f"End session {sid}", "kill, unmount, delete its changes (asks first)", run("end_session"))
        if info.state == "needs-recovery":
            yield (f"Recover session {sid}", "remount it, changes intact", run("recover"))
        elif info.state == "lost":
            yield (
                f"Recover session {sid}",
                "end it: it ran without durability and the machine restarted, its changes are not kept",
                run("recover"),
            )
    found = screen.selected_generation()
    if found is not None and not found[1].current:
        image_name, g = found
        yield (
            f"Roll {image_name} back to generation {g.generation}",
            "make it current again (asks first)",
            run("rollback"),
        )
    yield ("Create an image", "from a tarball, a directory, mmdebstrap or schroot's chroots (c)", run("create_image"))
    if screen.creating is not None:
        yield (f"Cancel creating {screen.creating.name}", "nothing of it is kept (ctrl+x)", run("cancel_create"))
    yield ("Filter sessions", "show only sessions matching some text (/)", run("filter"))
    yield ("Sort sessions by the next column", "s; S reverses", partial(screen.sessions_pane.action_sort))
    yield ("Reverse the session order", "S", partial(screen.sessions_pane.action_sort_reverse))
    for number, name in enumerate(("images", "sessions", "history", "locks"), 1):
        yield (f"Show the {name} pane", f"{number}", run(f"show_pane('{name}')"))
    yield ("Refresh everything now", "read the whole state root again (ctrl+r)", run("refresh"))
    yield ("Keys and help", "every key of every pane (?)", run("help"))
    yield ("Quit the console", "q", partial(screen.app.exit))


class SelectionCommands(Provider):
    """The main screen's verbs on its selection, and moving around."""

    def _screen(self) -> MainScreen | None:
        from .screen import MainScreen

        for screen in reversed(self.app.screen_stack):
            if isinstance(screen, MainScreen):
                return screen
        return None

    async def discover(self) -> Hits:
        screen = self._screen()
        if screen is None:
            return
        for name, help_text, callback in commands(screen):
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        screen = self._screen()
        if screen is None:
            return
        matcher = self.matcher(query)
        for name, help_text, callback in commands(screen):
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)

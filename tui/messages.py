"""What the main screen tells the app: messages that bubble up from the screen.

The app owns the refresh and usage loops; the screen owns what is shown and
what the operator does. The screen never sets the app's state: it posts one of
these, and the app decides.
"""

from __future__ import annotations

from textual.message import Message


class ImageHighlighted(Message):
    """The operator highlighted an image: read its history from now on."""

    def __init__(self, image: str) -> None:
        super().__init__()
        self.image = image


class SessionHighlighted(Message):
    """The operator highlighted a session (or none): measure it first."""

    def __init__(self, session: str | None) -> None:
        super().__init__()
        self.session = session

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SessionHighlighted)


class RefreshRequested(Message):
    """Something changed the state (an operation finished): poll now, not at the next tick."""

    def __init__(self, *, force: bool = False) -> None:
        super().__init__()
        self.force = force

"""Run as the rootless user by tests/rootless/test_console.py: the console's Pilot, in that user's
process, on their own state (the engine core.engine.open_engine gives an ordinary user).

Prints one JSON object: what the console showed, for the test to check.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from core.engine import open_engine
from tui.app import RoostConsole


async def until(pilot: Any, predicate: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        await pilot.pause(0.05)


class Console(RoostConsole):
    """The console, keeping what it notified."""

    notes: list[tuple[str, str]]

    def notify(self, message: str, *args: Any, **kw: Any) -> None:
        self.notes.append((message, kw.get("severity", "information")))
        super().notify(message, *args, **kw)


def main() -> None:
    engine = open_engine()
    app = Console(engine, host="test-host", interval=0.1, usage_interval=0.3)
    app.notes = []
    seen: dict[str, Any] = {"engine": type(engine).__name__}

    async def scenario() -> None:
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: app.loaded)
            main = app.main
            await pilot.press("1")
            await until(pilot, lambda: main.images_pane.selected == "bb")
            seen["images"] = sorted(main.images_pane.table.model)
            await pilot.press("b")
            await until(pilot, lambda: len(main.sessions_pane.sessions) == 1)
            await pilot.press("1", "m")
            await until(pilot, lambda: len(main.sessions_pane.sessions) == 2)
            await until(pilot, lambda: all(i.state == "mounted" for i in main.sessions_pane.sessions.values()))
            seen["sessions"] = {sid: [i.session.kind, i.state] for sid, i in main.sessions_pane.sessions.items()}
            seen["errors"] = [message for message, severity in app.notes if severity == "error"]
            await app.workers.wait_for_complete()

    asyncio.run(scenario())
    print(json.dumps(seen))


if __name__ == "__main__":
    main()

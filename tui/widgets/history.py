"""The History pane: the generations of the selected image, newest first; rollback from here."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType

from core.views import GenerationInfo

from .. import format as fmt
from .pane import Col, Pane
from .table import C


class HistoryPane(Pane):
    PANE = "history"
    TITLE = "History"
    COLUMNS = (
        Col("generation", "GEN", 4),
        Col("created", "CREATED", 11, 16),
        Col("author", "AUTHOR", 7, 8),
        Col("size", "SIZE", 6, justify="right"),
        Col("use", "USE", 6),
        Col("message", "MESSAGE", 12, flex=True),
    )
    SORT = "generation"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "r",
            "screen.rollback",
            "Rollback",
            id="history.rollback",
            tooltip="Make the highlighted generation current again",
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.image: str | None = None
        self.generations: tuple[GenerationInfo, ...] = ()
        self.table.reverse = True

    def show(self, image: str | None, history: tuple[GenerationInfo, ...]) -> None:
        moved = image != self.image
        self.image = image
        self.generations = history
        self.border_title = f"History: {image}" if image else "History"
        wide = self.widths["created"] >= 16
        rows = {}
        for g in history:
            created = fmt.stamp(g.created) if wide else fmt.stamp(g.created)[5:]
            rows[str(g.generation)] = self.cells(
                (
                    C(
                        f"{g.generation}*" if g.current else str(g.generation),
                        "bold" if g.current else "",
                        g.generation,
                    ),
                    C(created, sort=g.created),
                    C(g.author),
                    C(fmt.size(g.size), sort=g.size),
                    C("in use" if g.in_use else "", "italic"),
                    C(g.message.splitlines()[0] if g.message else ""),
                )
            )
        self.sync(rows)
        if moved and history:
            current = next((g for g in history if g.current), history[-1])
            self.table.select_key(str(current.generation))
        self.border_subtitle = f"{len(history)}" if image else ""

    def relayout(self) -> None:
        self.show(self.image, self.generations)

    def selected_generation(self) -> GenerationInfo | None:
        key = self.selected
        return next((g for g in self.generations if str(g.generation) == key), None)

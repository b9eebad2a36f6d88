"""The Images pane: every image with its backend, current generation, size, sessions and profile."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from core.views import ImageInfo

from .. import format as fmt
from .pane import Col, Pane
from .table import C


class ImagesPane(Pane):
    PANE = "images"
    TITLE = "Images"
    HELP = "enter: show the image's history"
    COLUMNS = (
        Col("name", "NAME", 14, flex=True, middle=True),
        Col("backend", "BACKEND", 7),
        Col("current", "GEN", 3, 4, justify="right"),
        Col("size", "SIZE", 6, justify="right"),
        Col("sessions", "SESS", 4, justify="right"),
        Col("profile", "PROFILE", 7, 8),
    )
    SORT = "name"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "c",
            "screen.create_image",
            "Create",
            id="image.create",
            tooltip="A new image from a tarball, a directory or mmdebstrap, or schroot's chroots",
        ),
        Binding("b", "screen.begin", "Begin", id="image.begin", tooltip="Begin an ordinary session on the image"),
        Binding(
            "m",
            "screen.begin_maintenance",
            "Maintain",
            id="image.maintain",
            tooltip="Begin a maintenance session (holds the image's writer lock; can be promoted)",
        ),
        Binding("g", "screen.gc", "GC", id="image.gc", tooltip="Delete old generations no session uses"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.images: Mapping[str, ImageInfo] = {}

    def show(self, images: Mapping[str, ImageInfo]) -> None:
        self.images = images
        rows = {}
        for name, i in images.items():
            rows[name] = self.cells(
                (
                    C(name, "bold"),
                    C(i.backend),
                    C(str(i.current), sort=i.current),
                    C(fmt.size(i.size), sort=i.size),
                    C(str(i.sessions), "" if i.sessions else "dim", sort=i.sessions),
                    C(i.profile),
                )
            )
        self.sync(rows)
        self.border_subtitle = f"{len(images)}"

    def relayout(self) -> None:
        self.show(self.images)

    async def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        await self.app.run_action("screen.show_pane('history')")

"""``image publish --sbuild-tarball`` for an ordinary user's own images.

What core.publish does for the system mode, on a rootless image: one
generation (default: current) written as the tarball sbuild's unshare mode
unpacks, into ``~/.cache/sbuild`` (or ``$XDG_CACHE_HOME/sbuild``, or the
directory given) as ``SUITE-ARCH.tar.zst``, the name read from the
generation itself, atomically (a temporary file beside it, synced, renamed
over it). The generation's files belong to subordinate ids, so both the name
and the tar stream are read inside the user's namespace, with the stack of
layers mounted there only (core.rootless.content). The tarball is the
user's own file, mode 0644. The ``publish:`` entry of image.yaml (a tarball
rewritten after every promote) stays a system-mode feature.
"""

from __future__ import annotations

import os

from .. import generations
from ..errors import BadInput
from ..names import check_generation
from ..store import new_tx

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..publish import PublishResult


def publish(
    ctx: Any,
    image: str,
    directory: str | None = None,
    *,
    name: str | None = None,
    compression: str = "zstd",
    generation: int | None = None,
) -> PublishResult:
    from ..callerfs import CallerFiles
    from ..publish import MODE, PublishResult, check_siblings, default_directory, sweep_temporaries, tarball_format
    from . import content

    suffix, compressor = tarball_format(compression, name)
    if generation is not None:
        generation = check_generation(generation)
    if directory is None:
        directory = default_directory(ctx.actor)
        os.makedirs(directory, 0o755, exist_ok=True)
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise BadInput(f"{directory}: no such directory")
    files = CallerFiles(ctx.actor)  # the caller is the user: no rights to drop
    ctx.ready()
    store = ctx.store
    with ctx.lock(store.image_lock_name(image), f"publish {image}", exclusive=False):
        number = generation if generation is not None else generations.current(store, image)
        if number not in generations.complete(store, image):
            raise BadInput(f"image {image} has no generation {number}")
        meta = generations.read_meta(store, image, number)
        lowers = [os.path.join(store.generation_dir(image, n), "layer") for n in meta.stack]
        scratch = os.path.join(store.stage_dir, new_tx())
        chosen = name if name is not None else content.sbuild_name(lowers, scratch, ctx.idmap, image, number)
        dest = os.path.join(directory, chosen + suffix)
        check_siblings(files, directory, chosen, dest)
        sweep_temporaries(files, directory, dest)
        size = content.write_tarball(dest, lowers, scratch, compressor, ctx.idmap, without_dev=True, mode=MODE)
    ctx.journal("image publish", image=image, generation=number, file=dest, size=size)
    return PublishResult(image=image, generation=number, path=dest, name=chosen, compression=compression, size=size)

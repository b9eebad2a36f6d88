"""Finding an image and its configuration: what every command that names an image needs first.

Split from :mod:`core.images` (creating, converting, rolling back, removing,
collecting garbage), which is much larger: ``session begin`` and an
automatic session load only this. :mod:`core.images` re-exports it all.
"""

from __future__ import annotations

import os

from . import backends, policy
from .errors import ConfigError, NotFound, SystemFailure
from .imageconf import ImageConfig, parse_image_config
from .names import check_object_name
from .yamlio import read_yaml

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .context import Context


def load_config(ctx: Context, name: str) -> ImageConfig:
    ctx.store.check_trusted()
    path = ctx.store.image_yaml(name)
    try:
        data = read_yaml(path, ctx.store.cache_dir)
    except FileNotFoundError:
        if not os.path.isdir(ctx.store.image_dir(name)):
            raise NotFound(f"no image {name!r}") from None
        raise SystemFailure(f"image {name} has no image.yaml") from None
    return parse_image_config(data, path, backends.names())


def exists(ctx: Context, name: str) -> bool:
    """An image is a real directory: a symlink planted in images/ is not one."""
    import stat

    try:
        return stat.S_ISDIR(os.lstat(ctx.store.image_dir(name)).st_mode)
    except FileNotFoundError:
        return False


def require(ctx: Context, name: str) -> ImageConfig:
    check_object_name(name, "image name")
    if not exists(ctx, name):
        raise NotFound(f"no image {name!r}")
    return load_config(ctx, name)


def target(name: str, config: ImageConfig) -> policy.ImageTarget:
    """The image as the policy sees it: its name and access lists."""
    return policy.ImageTarget(name, config.access_lists())


def authorize(ctx: Context, action: str, name: str) -> ImageConfig:
    """Image *name*'s configuration, once the policy allows *action* on it."""
    config = require(ctx, name)
    ctx.authorize(action, target(name, config))
    return config


def aliases(ctx: Context) -> dict[str, list[str]]:
    """Every alias named in an image.yaml, with the images that claim it."""
    out: dict[str, list[str]] = {}
    for image in ctx.store.image_names():
        try:
            config = load_config(ctx, image)
        except NotFound:
            continue  # removed while we looked
        for alias in config.aliases:
            out.setdefault(alias, []).append(image)
    return out


def resolve(ctx: Context, name: str) -> str:
    """The image called *name*, or the one image that has *name* among its aliases."""
    check_object_name(name, "image name or alias")
    claimed = aliases(ctx)
    owners = claimed.get(name, [])
    if exists(ctx, name):
        if owners:
            raise ConfigError(
                f"{name} is the name of an image and an alias of image {owners[0]}: "
                "remove the alias from its image.yaml"
            )
        found = name
    elif not owners:
        raise NotFound(f"no image or alias {name!r}")
    elif len(owners) > 1:
        raise ConfigError(f"alias {name} is claimed by several images ({', '.join(owners)}): keep it in one image.yaml")
    else:
        found = owners[0]
    authorize(ctx, policy.IMAGE_VIEW, found)
    return found

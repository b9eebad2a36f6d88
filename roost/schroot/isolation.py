"""The schroot front door's share of per-session network and foreign architectures.

Network. schroot has no network key; roost's door takes
``-o network=host|none|loopback`` (a row of :mod:`.keys`): with ``-b`` and automatic sessions it is
the network the session begins with; with ``-r`` the session is switched to it
before the command runs (and stays so), as ``roost session network`` does.

sbuild marks its ``dpkg-buildpackage`` command "disable network" (Build.pm:
``DISABLE_NETWORK => 1``), but its schroot backend drops the request
(ChrootSchroot.pm prints "the schroot backend doesn't support this feature
yet", Debian #802849): nothing of it reaches a schroot command line, and
``$schroot_options`` would apply to every command, build-dependency
installation included. The one thing sbuild passes to exactly that command is
its ``$build_environment``, so the door also honours ``ROOST_NETWORK`` in the
environment of ``-r``::

    $build_environment = { 'ROOST_NETWORK' => 'none' };   # ~/.sbuildrc

and the session loses its network after its build dependencies are installed,
just before the build (sbuild runs ``env`` with the same environment first).

Architectures. sbuild finds the chroot for ``sbuild --arch=A -d D`` by name
(``D-A-sbuild``, then ``D-A``) in what ``schroot --info`` lists, and checks it
with ``dpkg --print-architecture`` inside. An image whose image.yaml has
``suite`` and ``architecture`` (``image create … --mmdebstrap D --arch A``
records both) answers to ``D-A-sbuild`` through the door, as if it were an
alias, unless an image or an alias already has that name.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from core.engine import Engine
    from core.imageconf import ImageConfig

#: The environment variable sbuild's ``$build_environment`` sets for the build command.
NETWORK_VARIABLE = "ROOST_NETWORK"


def requested_network(options: Iterable[str], environ: Mapping[str, str]) -> str | None:
    """What a ``-r`` asks for: ``-o network=…``, else ``ROOST_NETWORK`` in its environment."""
    from core.errors import BadInput
    from core.records import NETWORKS

    from .keys import value as option_value

    network = option_value(list(options), "network")
    if network is not None:
        assert isinstance(network, str)
        return network
    value = environ.get(NETWORK_VARIABLE)
    if not value:
        return None
    if value not in NETWORKS:
        raise BadInput(f"{NETWORK_VARIABLE}={value}: expected one of {', '.join(NETWORKS)}")
    return value


def sbuild_name(config: ImageConfig) -> str | None:
    """``SUITE-ARCH-sbuild`` for an image that records both, else None."""
    if config.suite and config.architecture:
        return f"{config.suite}-{config.architecture}-sbuild"
    return None


def aliases(name: str, config: ImageConfig, configs: Mapping[str, ImageConfig]) -> tuple[str, ...]:
    """The image's aliases as the door lists them: its own, then its sbuild name if free."""
    derived = sbuild_name(config)
    if derived is None or derived in config.aliases:
        return tuple(config.aliases)
    if derived in configs or any(derived in c.aliases for c in configs.values()):
        return tuple(config.aliases)
    return (*config.aliases, derived)


def resolve_sbuild_name(eng: Engine, name: str) -> str | None:
    """The one image whose sbuild name is *name* (called only when no image or alias has it)."""
    from core.errors import RoostError

    found = []
    for image in eng.image_names():
        try:
            config = eng.image_config(image)
        except RoostError:
            continue
        if sbuild_name(config) == name:
            found.append(image)
    return found[0] if len(found) == 1 else None


def info_rows(config: ImageConfig | None, *, network: str | None, architecture: str | None) -> list[tuple[str, str]]:
    """Rows roost adds to ``schroot -i`` (sbuild ignores keys it does not know)."""
    from core.binfmt import host_arch

    arch = architecture or (config.architecture if config else None) or host_arch()
    net = network or (config.network if config and config.network else "host")
    return [("Roost Architecture", arch), ("Roost Network", net)]

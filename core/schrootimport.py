"""Taking over schroot's chroots: read schroot.conf and chroot.d, plan and run their import.

``roost image import-schroot`` and the console's create dialog both call this.

schroot describes chroots in key files (``[name]`` groups of ``key=value``
lines) in ``/etc/schroot/schroot.conf`` and ``/etc/schroot/chroot.d/*``.
Each chroot becomes one roost image:

=================  ==========================================================
``directory``,     the tree at ``directory=`` is copied (reflinks where the
``plain``          file system has them) into the image's first generation
``file``           the tarball at ``file=`` is unpacked
``btrfs-snapshot`` the tree of ``btrfs-source-subvolume=`` is copied
``zfs-snapshot``   the tree where ``zfs-dataset=`` is mounted is copied
=================  ==========================================================

and users, groups, root-users, root-groups, aliases, profile, personality,
command-prefix and the description go into image.yaml. What has no
counterpart (or a different one) is reported, one line per key, as a note;
a chroot that cannot be imported at all gets an error and is skipped. The
schroot files and trees are only read, never changed.

The import is a client of the engine: it creates images with
``Engine.create_image`` and reads profiles with ``Engine.profile``, like any
other front door.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import BadInput, Cancelled, ConfigError, NotFound, RoostError
from .imageconf import PERSONALITIES
from .importers import Source
from .names import is_valid_name

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .callerfs import CallerFiles
    from .engine import Engine
    from .profiles import Profile

SCHROOT_DIR = "/etc/schroot"

#: schroot's own profiles, and the roost profile each becomes.
PROFILES = {"default": "default", "minimal": "minimal", "sbuild": "sbuild", "buildd": "buildd", "desktop": "default"}

#: What every roost session has whatever its profile (schroot's fstab lines for these are covered).
BASE_MOUNTS = ("/proc", "/sys", "/dev", "/dev/pts", "/dev/shm")

#: Keys whose meaning roost carries over (handled one by one below).
CARRIED = {
    "type", "description", "directory", "location", "file", "btrfs-source-subvolume", "zfs-dataset",
    "users", "groups", "root-users", "root-groups", "aliases", "profile", "setup.config", "script-config",
    "setup.fstab", "setup.copyfiles", "setup.nssdatabases", "personality", "command-prefix",
    "source-users", "source-groups", "source-root-users", "source-root-groups", "union-type",
}  # fmt: skip

#: Keys roost has no use for, and why (shown as notes when they are set to something that matters).
NOT_NEEDED = {
    "union-overlay-directory": "roost keeps session clones in its state root",
    "union-underlay-directory": "roost keeps session clones in its state root",
    "union-mount-options": "roost mounts overlays with its own options (redirect_dir=on, index=off)",
    "btrfs-snapshot-directory": "roost keeps session clones in its state root",
    "zfs-snapshot-options": "roost keeps session clones in its state root",
    "source-clone": "every roost image has source: (a maintenance session promoted into a new generation)",
    "file-repack": "changes go through source: sessions, which are promoted into new generations",
    "preserve-environment": "pass -p per command (roost schroot -p, roost session run -p)",
    "environment-filter": "the front door applies schroot's default filter with -p",
    "shell": "roost runs the user's shell from passwd (roost schroot -s SHELL overrides it)",
    "message-verbosity": "use -q or -v per command",
    "user-modifiable-keys": "the keys roost-schroot -o takes are the same for every image (docs/schroot.md)",
    "root-modifiable-keys": "the keys roost-schroot -o takes are the same for every image (docs/schroot.md)",
    "setup.services": "roost starts no services in sessions",
    "run-setup-scripts": "roost sets sessions up from its profile, not from setup.d scripts",
    "run-exec-scripts": "roost runs no exec scripts",
    "priority": "schroot ignores it too",
    "mount-options": "roost mounts what its profile says",
    "default-shell": "roost runs the user's shell from passwd",
}

SUPPORTED_TYPES = ("directory", "plain", "file", "btrfs-snapshot", "zfs-snapshot")


@dataclass(frozen=True)
class Entry:
    """One ``[name]`` group of a schroot key file."""

    name: str
    path: str
    line: int
    keys: dict[str, str]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Plan:
    """How one schroot chroot becomes a roost image."""

    chroot: str
    where: str
    image: str | None = None
    kind: str = ""
    source: Source | None = None
    profile: str = "default"
    description: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    #: The exit code the error stands for (DESIGN.md: 2 bad input, 3 conflict …).
    error_code: int = 2
    imported: bool = False
    generation: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "chroot": self.chroot,
            "where": self.where,
            "image": self.image,
            "type": self.kind,
            "source": self.source.describe() if self.source else None,
            "profile": self.profile,
            "settings": self.settings,
            "notes": self.notes,
            "error": self.error,
            "imported": self.imported,
            "generation": self.generation,
        }


# --- reading -------------------------------------------------------------------------


def parse(text: str, path: str) -> list[Entry]:
    """The groups of one schroot key file; a malformed line is a ConfigError naming it."""
    entries: list[Entry] = []
    seen: set[str] = set()
    current: Entry | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise ConfigError(f"{path}:{number}: malformed group line")
            name = line[1:-1].strip()
            if name in seen:
                raise ConfigError(f"{path}:{number}: this chroot is defined twice in the file")
            seen.add(name)
            current = Entry(name, path, number, {})
            entries.append(current)
            continue
        key, eq, value = line.partition("=")
        if not eq:
            raise ConfigError(f"{path}:{number}: expected key=value")
        if current is None:
            raise ConfigError(f"{path}:{number}: a key outside a [chroot] group")
        key = key.strip()
        if key in current.keys:
            raise ConfigError(f"{path}:{number}: a key set twice in the same group")
        current.keys[key] = value.strip()
    return entries


def read_file(path: str, files: CallerFiles) -> list[Entry]:
    """The chroots of one key file, read with the caller's rights (*files*)."""
    data = files.read(path, 1 << 20)
    if len(data) > 1 << 20:
        raise BadInput(f"{path}: larger than 1 MiB")
    return parse(data.decode("utf-8", "replace"), path)


def _valid_chroot_d_name(name: str) -> bool:
    """schroot reads chroot.d files named like run-parts scripts (no ~, no dpkg leftovers)."""
    if not name or name.startswith("."):
        return False
    if not all(c.isalnum() or c in "_.-" for c in name) or not name.isascii():
        return False
    return not any(name.endswith(s) for s in (".dpkg-old", ".dpkg-dist", ".dpkg-new", ".dpkg-tmp", ".dpkg-bak"))


def read_all(schroot_dir: str, files: CallerFiles) -> tuple[list[Entry], list[str]]:
    """Every chroot of schroot.conf and chroot.d (as schroot reads them), and the files skipped.

    Everything is read with the caller's rights (*files*).
    """
    entries: list[Entry] = []
    skipped: list[str] = []
    conf = os.path.join(schroot_dir, "schroot.conf")
    if files.is_file(conf):
        entries += read_file(conf, files)
    chroot_d = os.path.join(schroot_dir, "chroot.d")
    try:
        names = sorted(files.listdir(chroot_d))
    except FileNotFoundError:
        names = []
    except OSError as error:
        raise BadInput(f"{chroot_d}: {error.strerror}") from None
    for name in names:
        path = os.path.join(chroot_d, name)
        if not files.is_file(path):
            continue
        if not _valid_chroot_d_name(name):
            skipped.append(path)
            continue
        entries += read_file(path, files)
    names_seen: dict[str, str] = {}
    for e in entries:
        if e.name in names_seen:
            raise ConfigError(f"{e.where}: chroot {e.name!r} is also defined at {names_seen[e.name]}")
        names_seen[e.name] = e.where
    return entries, skipped


# --- planning ------------------------------------------------------------------------


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _names(plan: Plan, key: str, value: str) -> list[str]:
    good = []
    for name in _list(value):
        if is_valid_name(name):
            good.append(name)
        else:
            plan.notes.append(f"{key}: {name!r} is not a valid roost name, left out")
    return list(dict.fromkeys(good))


def _profile_name(entry: Entry) -> str | None:
    """The schroot profile a chroot uses: ``profile=``, or the directory of ``setup.config``/``script-config``."""
    keys = entry.keys
    if keys.get("profile"):
        return keys["profile"]
    for key in ("setup.config", "script-config", "setup.fstab"):
        value = keys.get(key, "")
        if value and not value.startswith("/") and "/" in value:
            return value.split("/", 1)[0]
    return None


def _profile_notes(plan: Plan, schroot_profile: str, profile: Profile, schroot_dir: str, files: CallerFiles) -> None:
    """Notes for what the schroot profile's fstab, copyfiles and nssdatabases have and the roost one lacks."""
    roost_profile = profile.name
    base = os.path.join(schroot_dir, schroot_profile)
    mounted = {m.target for m in profile.mounts} | set(BASE_MOUNTS)
    for line in _lines(os.path.join(base, "fstab"), files):
        fields = line.split()
        if len(fields) >= 2 and os.path.normpath(fields[1]) == "/dev" and profile.dev == "private":
            plan.notes.append(
                f"profile {schroot_profile}: fstab binds the host's /dev; roost profile {roost_profile} gives "
                f"sessions a private /dev (a profile with dev: host binds the host's)"
            )
        elif len(fields) >= 2 and os.path.normpath(fields[1]) not in mounted:
            plan.notes.append(
                f"profile {schroot_profile}: fstab mounts {fields[0]} at {fields[1]}, "
                f"which roost profile {roost_profile} does not"
            )
    copies = set(profile.copy_files)
    for line in _lines(os.path.join(base, "copyfiles"), files):
        if os.path.normpath(line) not in copies and line not in ("/etc/resolv.conf",):
            plan.notes.append(f"profile {schroot_profile}: copies {line}, which roost profile {roost_profile} does not")
    databases = set(profile.nss_databases)
    for line in _lines(os.path.join(base, "nssdatabases"), files):
        if line not in databases:
            plan.notes.append(
                f"profile {schroot_profile}: copies the {line} database, which roost profile {roost_profile} does not"
            )


def _lines(path: str, files: CallerFiles) -> list[str]:
    try:
        text = files.read(path, 1 << 20).decode("utf-8", "replace")
    except BadInput:
        return []
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _zfs_mountpoint(dataset: str) -> str | None:
    """Where *dataset* is mounted, from the mount table (no zfs tools needed)."""
    from .mounts import mounts

    for m in mounts():
        if m.fstype == "zfs" and m.source == dataset:
            return m.target
    return None


def plan(entry: Entry, eng: Engine, files: CallerFiles, *, schroot_dir: str = SCHROOT_DIR) -> Plan:
    """Decide how *entry* becomes an image; nothing is changed."""
    keys = entry.keys
    p = Plan(chroot=entry.name, where=entry.where)
    if not is_valid_name(entry.name):
        p.error = f"{entry.name!r} is not a valid roost image name (letters, digits and _ . + -)"
        return p
    p.image = entry.name
    kind = keys.get("type", "plain")
    p.kind = kind
    if kind not in SUPPORTED_TYPES:
        p.error = (
            f"type={kind} is not supported: mount the chroot's tree and run roost image create "
            f"{entry.name} --from-dir DIR"
        )
        return p

    # where the tree comes from
    if kind in ("directory", "plain"):
        path = keys.get("directory") or keys.get("location")
        if not path:
            p.error = f"type={kind} without directory="
            return p
        p.source = Source("dir", path=path)
        union = keys.get("union-type", "none")
        if kind == "plain":
            pass  # schroot never clones plain chroots; the plain note below says what roost does
        elif union == "none":
            p.notes.append(
                f"union-type=none: sessions are copy-on-write clones in roost; change the image through "
                f"source:{entry.name}"
            )
        elif union not in ("overlay", "overlayfs", "aufs", "unionfs"):
            p.notes.append(f"union-type={union}: roost sessions are overlay clones")
    elif kind == "file":
        path = keys.get("file", "")
        if not path:
            p.error = "type=file without file="
            return p
        if keys.get("location", "").strip("/"):
            p.error = f"location={keys['location']} (a tree inside the archive) is not supported: unpack it first"
            return p
        p.source = Source("tar", path=path)
    elif kind == "btrfs-snapshot":
        path = keys.get("btrfs-source-subvolume", "")
        if not path:
            p.error = "type=btrfs-snapshot without btrfs-source-subvolume="
            return p
        p.source = Source("dir", path=path)
        p.notes.append("btrfs-snapshot: the subvolume's tree is copied (into roost's default backend, or --backend)")
    else:  # zfs-snapshot
        dataset = keys.get("zfs-dataset", "")
        mounted = _zfs_mountpoint(dataset) if dataset else None
        if mounted is None:
            p.error = f"zfs-dataset={dataset or '(unset)'} is not mounted: mount it (zfs mount) and import again"
            return p
        p.source = Source("dir", path=mounted)
        p.notes.append(f"zfs-snapshot: the tree of {dataset} (mounted at {mounted}) is copied")
    try:
        p.source.check(files)
    except BadInput as e:
        p.error = str(e).replace("--from-dir ", "").replace("--from-tar ", "")
        return p

    # what sessions get
    schroot_profile = _profile_name(entry)
    if kind == "plain" and schroot_profile is None:
        p.profile = "minimal"
        p.notes.append("type=plain: no setup in schroot; roost sessions still get /proc, /sys and /dev (minimal)")
    else:
        schroot_profile = schroot_profile or "default"  # schroot's own default
        profile: Profile | None
        try:
            profile = eng.profile(schroot_profile)
            p.profile = schroot_profile
        except (NotFound, BadInput):
            p.profile = PROFILES.get(schroot_profile, "default")
            p.notes.append(
                f"profile={schroot_profile} has no roost counterpart: using {p.profile} "
                f"(write /etc/roost/profiles/{schroot_profile}.yaml and set profile: in image.yaml)"
            )
            try:
                profile = eng.profile(p.profile)
            except RoostError:
                profile = None
        except RoostError:
            p.profile = schroot_profile  # it exists but does not load: sessions will say why
            profile = None
        if profile is not None:
            _profile_notes(p, schroot_profile, profile, schroot_dir, files)
    for key in ("setup.fstab", "setup.copyfiles", "setup.nssdatabases"):
        value = keys.get(key, "")
        if value and (value.startswith("/") or value.split("/", 1)[0] != schroot_profile):
            p.notes.append(f"{key}={value}: not carried over (roost takes mounts and files from its profile)")

    # image.yaml
    p.description = keys.get("description", "")
    settings: dict[str, Any] = {}
    for key in ("users", "groups", "root-users", "root-groups", "aliases"):
        if keys.get(key):
            settings[key] = _names(p, key, keys[key])
    root_level = set(settings.get("root-users", ())) | set(settings.get("root-groups", ()))
    for key in ("source-users", "source-groups", "source-root-users", "source-root-groups"):
        missing = [n for n in _list(keys.get(key, "")) if n not in root_level]
        if missing:
            p.notes.append(
                f"{key}={','.join(missing)}: not carried over (in roost only root-users and root-groups "
                f"may maintain an image through source:)"
            )
    personality = keys.get("personality", "")
    if personality:
        if personality in PERSONALITIES:
            if personality != "undefined":
                settings["personality"] = personality
        else:
            p.notes.append(f"personality={personality}: not carried over (roost knows {', '.join(PERSONALITIES)})")
    prefix = _list(keys.get("command-prefix", ""))
    if prefix:
        settings["command-prefix"] = prefix
    p.settings = settings

    for key, value in keys.items():
        base = key.split("[", 1)[0]
        if base != key:
            p.notes.append(f"{key}: translations are not carried over")
        elif key in CARRIED:
            continue
        elif key in NOT_NEEDED:
            if value and value not in ("false", "0"):
                p.notes.append(f"{key}={value}: not carried over ({NOT_NEEDED[key]})")
        else:
            p.notes.append(f"{key}={value}: unknown to roost, not carried over")
    return p


def plan_import(
    eng: Engine,
    files: Sequence[str] | None = None,
    *,
    schroot_dir: str | None = None,
    chroots: Sequence[str] | None = None,
) -> tuple[list[Plan], list[str]]:
    """How schroot's chroots (in *files*, or all of *schroot_dir*) would become images; changes nothing.

    Returns the plans and the chroot.d files schroot itself would skip.
    """
    from .callerfs import CallerFiles

    reader = CallerFiles(eng.actor)  # schroot's files are read as the caller could read them
    directory = schroot_dir or SCHROOT_DIR
    skipped: list[str] = []
    if files:
        entries = [e for f in files for e in read_file(f, reader)]
    else:
        entries, skipped = read_all(directory, reader)
    if chroots:
        known = {e.name for e in entries}
        for name in chroots:
            if name not in known:
                raise NotFound(f"no schroot chroot {name!r} in {', '.join(files or [directory])}")
        entries = [e for e in entries if e.name in chroots]
    return [plan(e, eng, reader, schroot_dir=directory) for e in entries], skipped


def run(eng: Engine, plans: list[Plan], *, backend: str | None = None) -> list[Plan]:
    """Create an image for every plan without an error; an image that fails gets the error instead.

    A cancel (:class:`Cancelled`, from the caller's progress callback) stops the whole import:
    the images made before it stay, the one under way is not kept.
    """
    for p in plans:
        if p.error is not None or p.source is None or p.image is None:
            continue
        try:
            info = eng.create_image(
                p.image,
                p.source,
                backend=backend,
                profile=p.profile,
                description=p.description,
                settings=p.settings,
            )
        except Cancelled:
            raise
        except RoostError as e:
            p.error = str(e)
            p.error_code = e.exit_code
            continue
        p.imported = True
        p.generation = info.current
        eng.journal("image import-schroot", image=p.image, chroot=p.chroot, where=p.where, notes=len(p.notes))
    return plans

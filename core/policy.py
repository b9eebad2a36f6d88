"""Who may do what: the one function every engine operation asks (docs/security.md).

roost in system mode runs as root and is handed to other people through sudo.
Every operation names an *action* and, where there is one, the image or
session it acts on; :meth:`Policy.check` says yes or raises
:class:`NotPermitted` with one line. Front doors (command line, console,
plans, the schroot door) never decide access themselves.

Levels, from the image's ``users``, ``groups``, ``root-users`` and
``root-groups`` (the same lists as schroot's):

``admin``  real root (not through sudo), or a member of ``admin-group`` in
           roost.yaml: every action on every image, the host's state included.
``root``   the image's root-users and root-groups: maintenance sessions,
           promote, rollback, export, diffs of generations, commands as any user (root included)
           in any session of the image. Root in a session is root on the host
           in effect (a chroot is no boundary): grant it as you would sudo.
``user``   the image's users and groups: ordinary sessions of the image; run,
           enter, end and recover their own sessions, as themselves.
``none``   everyone else: nothing but listings of what they may use.

This module is on the hot path of ``session run``: it imports nothing but
the exception it raises.
"""

from __future__ import annotations

from .errors import NotPermitted

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Iterable, Mapping

    from .actor import Actor

ADMIN, ROOT, USER, NONE = "admin", "root", "user", "none"
_RANK = {NONE: 0, USER: 1, ROOT: 2, ADMIN: 3}

# --- actions -------------------------------------------------------------------------
# Images: the first five need an administrator; rollback, export (and sending to
# another host, which is an export) and receiving generations from another host the
# image's root-users (who may promote anything into it and read all of it as root already).
IMAGE_CREATE = "create images"
IMAGE_CONVERT = "convert images"
IMAGE_REMOVE = "remove images"
IMAGE_GC = "garbage-collect images"
IMAGE_ROLLBACK = "roll back"
IMAGE_EXPORT = "export"
IMAGE_DIFF = "see the changes in"
IMAGE_RECEIVE = "receive generations into"  # image receive and pull: changes current, like a promote
IMAGE_VIEW = "see"
# Sessions
SESSION_BEGIN = "begin sessions of"
SESSION_MAINTAIN = "maintain"
SESSION_VIEW = "see session"
SESSION_RUN = "run in session"
SESSION_ENTER = "enter session"
SESSION_END = "end session"
SESSION_RECOVER = "recover session"
SESSION_MARK = "mark session"
SESSION_PROMOTE = "promote session"
SESSION_NETWORK = "switch the network of session"
SESSION_LOOSEN = "loosen the network or limits of sessions of"
# The host: everything in the state root at once (recover --all, doctor --check,
# every lock and every image's sessions), and what anyone may read.
HOST_ADMIN = "manage the host's roost state"
HOST_VIEW = "see the host's backends and profiles"

#: The lowest level each action needs (on its image, or on the host for host actions).
NEEDS: dict[str, str] = {
    IMAGE_CREATE: ADMIN,
    IMAGE_CONVERT: ADMIN,
    IMAGE_REMOVE: ADMIN,
    IMAGE_GC: ADMIN,
    IMAGE_ROLLBACK: ROOT,
    IMAGE_EXPORT: ROOT,
    IMAGE_DIFF: ROOT,
    IMAGE_RECEIVE: ROOT,
    IMAGE_VIEW: USER,
    SESSION_BEGIN: USER,
    SESSION_MAINTAIN: ROOT,
    SESSION_VIEW: USER,
    SESSION_RUN: USER,
    SESSION_ENTER: USER,
    SESSION_END: USER,
    SESSION_RECOVER: USER,
    SESSION_MARK: USER,
    SESSION_PROMOTE: ROOT,
    SESSION_NETWORK: USER,
    SESSION_LOOSEN: ROOT,
    HOST_ADMIN: ADMIN,
    HOST_VIEW: NONE,
}

#: Session actions a ``user`` may take only on their own sessions, and only as themselves.
_OWN_ONLY = frozenset(
    (SESSION_VIEW, SESSION_RUN, SESSION_ENTER, SESSION_END, SESSION_RECOVER, SESSION_MARK, SESSION_NETWORK)
)


class ImageTarget:
    """An image as the policy sees it: its name and access lists."""

    __slots__ = ("access", "name")

    def __init__(self, name: str, access: Mapping[str, Iterable[str]]) -> None:
        self.name = name
        self.access = access

    def describe(self) -> str:
        return f"image {self.name}"


class SessionTarget:
    """A session as the policy sees it: its owner and the access lists it was begun with."""

    __slots__ = ("access", "id", "image", "owner_uid")

    def __init__(self, sid: str, image: str, owner_uid: int, access: Mapping[str, Iterable[str]]) -> None:
        self.id = sid
        self.image = image
        self.owner_uid = owner_uid
        self.access = access

    def describe(self) -> str:
        return f"session {self.id}"


Target = ImageTarget | SessionTarget


def _member(actor: Actor, names: Iterable[str], groups: Iterable[str]) -> bool:
    return actor.user in set(names) or bool(set(actor.groups) & set(groups))


class Policy:
    """Decides every action (see the module's documentation); *admin_group* comes from roost.yaml."""

    __slots__ = ("admin_group",)

    def __init__(self, admin_group: str | None = None) -> None:
        self.admin_group = admin_group or None

    def is_admin(self, actor: Actor) -> bool:
        if actor.real_root or actor.own_state:
            return True
        return self.admin_group is not None and self.admin_group in actor.groups

    def level(self, actor: Actor, access: Mapping[str, Iterable[str]] | None) -> str:
        """The actor's level on an image with these *access* lists (None: the host itself)."""
        if self.is_admin(actor):
            return ADMIN
        if access is None:
            return NONE
        if _member(actor, access.get("root_users", ()), access.get("root_groups", ())):
            return ROOT
        if _member(actor, access.get("users", ()), access.get("groups", ())):
            return USER
        return NONE

    def check(self, actor: Actor, action: str, target: Target | None = None, *, as_uid: int | None = None) -> None:
        """Allow *action* on *target* for *actor*, or raise :class:`NotPermitted` (one line)."""
        why = self.refusal(actor, action, target, as_uid=as_uid)
        if why is not None:
            raise NotPermitted(why)

    def permits(self, actor: Actor, action: str, target: Target | None = None, *, as_uid: int | None = None) -> bool:
        return self.refusal(actor, action, target, as_uid=as_uid) is None

    def refusal(
        self, actor: Actor, action: str, target: Target | None = None, *, as_uid: int | None = None
    ) -> str | None:
        """Why *actor* may not take *action* on *target*, or None if they may."""
        needed = NEEDS[action]
        have = self.level(actor, target.access if target is not None else None)
        if _RANK[have] >= _RANK[ROOT]:
            if _RANK[have] >= _RANK[needed]:
                return None
            return f"{actor.user} may not {action} (only root and the admin group may)"
        if _RANK[have] < _RANK[needed] or target is None:
            return self._denied(actor, action, target, needed)
        if isinstance(target, SessionTarget) and action in _OWN_ONLY:
            if target.owner_uid != actor.uid:
                return f"{actor.user} may not {action} {target.id}: it is someone else's (not in root-users)"
            if as_uid is not None and as_uid != actor.uid:
                return f"{actor.user} may only run as themselves in session {target.id} (not in root-users)"
        return None

    @staticmethod
    def _denied(actor: Actor, action: str, target: Target | None, needed: str) -> str:
        if target is None:
            return f"{actor.user} may not {action} (only root and the admin group may)"
        image = target.name if isinstance(target, ImageTarget) else target.image
        if needed == ADMIN:
            return f"{actor.user} may not {action} {image} (only root and the admin group may)"
        if needed == ROOT:
            what = f"{action} {target.id}" if isinstance(target, SessionTarget) else f"{action} {image}"
            return f"{actor.user} may not {what} (not in the root-users of image {image})"
        what = target.id if isinstance(target, SessionTarget) else image
        verb = action if isinstance(target, SessionTarget) else f"{action} image"
        return f"{actor.user} may not {verb} {what} (not in the users or root-users of image {image})"

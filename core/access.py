"""Who may do what: the image's users, groups, root-users and root-groups decide.

The rules follow schroot's, so an existing schroot.conf means the same here:

* root (real root, or root through sudo) may do anything;
* a user named in ``users`` (or in one of ``groups``) may begin sessions of the
  image and run commands in their own sessions, as themselves;
* a user named in ``root-users`` (or ``root-groups``) may also run as any user,
  root included, and may enter, run in and end other users' sessions;
* everyone else may only look.

``roost`` itself runs as root (through sudo for everyone else); the person
behind it is ``SUDO_USER``. This module imports nothing heavy: ``session run``
checks access on its hot path.
"""

from __future__ import annotations

from .errors import NotPermitted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


def _member(user: str, groups: Iterable[str], names: Iterable[str], group_names: Iterable[str]) -> bool:
    return user in set(names) or bool(set(groups) & set(group_names))


def level(user: str, uid: int, groups: Iterable[str], access: Mapping[str, Iterable[str]]) -> str:
    """``"root"``, ``"user"`` or ``"none"`` for *user* on an image with *access* lists."""
    if uid == 0:
        return "root"
    groups = tuple(groups)
    if _member(user, groups, access.get("root_users", ()), access.get("root_groups", ())):
        return "root"
    if _member(user, groups, access.get("users", ()), access.get("groups", ())):
        return "user"
    return "none"


def check_begin(user: str, uid: int, groups: Iterable[str], access: Mapping[str, Iterable[str]], image: str) -> str:
    got = level(user, uid, groups, access)
    if got == "none":
        raise NotPermitted(f"{user} may not use image {image} (not in its users, groups or root-users)")
    return got


def check_session(
    user: str,
    uid: int,
    groups: Iterable[str],
    access: Mapping[str, Iterable[str]],
    owner_uid: int,
    session: str,
    *,
    as_uid: int | None = None,
    verb: str = "use",
) -> None:
    """May *user* act on *session* (owned by *owner_uid*), running as *as_uid*?"""
    got = level(user, uid, groups, access)
    if got == "root":
        return
    if got == "none" or owner_uid != uid:
        raise NotPermitted(f"{user} may not {verb} session {session} (owned by someone else)")
    if as_uid is not None and as_uid != uid:
        raise NotPermitted(f"{user} may only run as themselves in session {session} (not in root-users)")

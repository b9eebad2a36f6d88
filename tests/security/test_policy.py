"""Every public operation of the engine asks the policy, and the policy's table says what it says."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from core.actor import Actor
from core.engine import Engine
from core.errors import NotPermitted
from core.importers import Source
from core.policy import (
    ADMIN,
    IMAGE_CREATE,
    IMAGE_ROLLBACK,
    NEEDS,
    SESSION_BEGIN,
    SESSION_PROMOTE,
    SESSION_RUN,
    ImageTarget,
    Policy,
    SessionTarget,
)
from tests.support.env import Env

#: Public methods that take no action on roost's state, and why they need no decision.
NO_DECISION = {
    "journal": "adds a history line for a client above the engine after an operation it was allowed",
}


class Spy(Policy):
    """The real policy, remembering every question."""

    def __init__(self, admin_group: str | None = None) -> None:
        super().__init__(admin_group)
        self.asked: list[str] = []

    def refusal(self, actor: Actor, action: str, target: Any = None, *, as_uid: int | None = None) -> str | None:
        self.asked.append(action)
        return super().refusal(actor, action, target, as_uid=as_uid)


def _outsider() -> Actor:
    return Actor(uid=65534, user="nobody", pid=1, groups=("nogroup",), via_sudo=True)


def _calls(image: str, session: str, launch: Any) -> dict[str, Callable[[Engine], object]]:
    return {
        "create_image": lambda e: e.create_image("new", Source("dir", path="/")),
        "resolve_image": lambda e: e.resolve_image(image),
        "image_names": lambda e: e.image_names(),
        "image_exists": lambda e: e.image_exists(image),
        "image_config": lambda e: e.image_config(image),
        "current_generation": lambda e: e.current_generation(image),
        "access_level": lambda e: e.access_level({"users": []}),
        "profile": lambda e: e.profile("default"),
        "session_exists": lambda e: e.session_exists(session),
        "convert_image": lambda e: e.convert_image(image, "dir", new_name="copy"),
        "list_images": lambda e: e.list_images(),
        "image_info": lambda e: e.image_info(image),
        "image_history": lambda e: e.image_history(image),
        "rollback": lambda e: e.rollback(image, 1),
        "remove_image": lambda e: e.remove_image(image),
        "gc": lambda e: e.gc(image),
        "export_image": lambda e: e.export_image(image, "/tmp/roost-policy-test.tar"),
        "publish_sbuild_tarball": lambda e: e.publish_sbuild_tarball(image, "/tmp", tarball_name="roost-policy-test"),
        "begin": lambda e: e.begin(image),
        "mark_failed": lambda e: e.mark_failed(session, "x"),
        "set_network": lambda e: e.set_network(session, "none"),
        "session_usage": lambda e: e.session_usage([]),
        "end": lambda e: e.end(session),
        "promote": lambda e: e.promote(session),
        "list_sessions": lambda e: e.list_sessions(),
        "session_info": lambda e: e.session_info(session),
        "launch": lambda e: e.launch(session, ["/bin/true"]),
        "start": lambda e: e.start(session, launch),
        "exec": lambda e: e.exec(session, launch),
        "run_in": lambda e: e.run_in(session, ["/bin/true"]),
        "run_auto": lambda e: e.run_auto(image, ["/bin/true"]),
        "recover": lambda e: e.recover(),
        "check": lambda e: e.check(),
        "backends": lambda e: e.backends(),
        "default_backend": lambda e: e.default_backend(),
        "locks": lambda e: e.locks(),
        "session_diff": lambda e: e.session_diff(session),
        "image_diff": lambda e: e.image_diff(image, 1, 1),
        # several hosts (core/replicate.py, core/fleet.py): refused before any stream or connection
        "image_inventory": lambda e: e.image_inventory(image),
        "send_image": lambda e: e.send_image(image, {"version": 1, "exists": False}, _devnull()),
        "receive_image": lambda e: e.receive_image(image, _devnull()),
        "push_image": lambda e: e.push_image(image, _nowhere()),
        "pull_image": lambda e: e.pull_image(_nowhere(), image),
        "summary": lambda e: e.summary(),
    }


def _devnull() -> int:
    import os

    return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)


def _nowhere() -> Any:
    from core.hosts import Host

    return Host(name="nowhere", address="127.0.0.1", port=1)


def _devnull() -> int:
    import os

    return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)


def _nowhere() -> Any:
    from core.hosts import Host

    return Host(name="nowhere", address="127.0.0.1", port=1)


def _public(cls: type) -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member) and not isinstance(member, property)
    }


def test_every_public_operation_of_the_engine_asks_the_policy(bb: Env) -> None:
    root = Engine(bb.settings())
    session = root.begin("bb")
    launch = root.launch(session.id, ["/bin/true"])
    try:
        calls = _calls("bb", session.id, launch)
        listed = set(calls) | set(NO_DECISION)
        assert _public(Engine) == listed, "a public operation of Engine is not classified here"
        for name, call in calls.items():
            spy = Spy()
            outsider = Engine(bb.settings(), actor=_outsider(), policy=spy)
            try:
                result = call(outsider)
            except NotPermitted:
                result = None
            assert spy.asked, f"Engine.{name} acted without asking the policy"
            if isinstance(result, list):
                assert name in ("list_images", "list_sessions", "locks", "backends", "image_names"), name
                if name in ("list_images", "list_sessions", "image_names"):
                    assert result == [], (name, result)
        assert root.session_info(session.id).state == "mounted"  # nothing an outsider did touched it
    finally:
        root.end(session.id)


@pytest.mark.parametrize(
    ("user", "groups", "action", "target", "allowed"),
    [
        ("root", (), IMAGE_CREATE, None, True),
        ("ada", ("admins",), IMAGE_CREATE, None, True),
        ("eve", (), IMAGE_CREATE, None, False),
        ("rita", (), IMAGE_CREATE, None, False),
        ("rita", (), IMAGE_ROLLBACK, "image", True),
        ("bob", (), IMAGE_ROLLBACK, "image", False),
        ("bob", (), SESSION_BEGIN, "image", True),
        ("gus", ("builders",), SESSION_BEGIN, "image", True),
        ("eve", (), SESSION_BEGIN, "image", False),
        ("bob", (), SESSION_PROMOTE, "image", False),
        ("rita", (), SESSION_PROMOTE, "image", True),
        ("bob", (), SESSION_RUN, "bobs", True),
        ("gus", ("builders",), SESSION_RUN, "bobs", False),
        ("rita", (), SESSION_RUN, "bobs", True),
    ],
)
def test_the_policy_table(user: str, groups: tuple[str, ...], action: str, target: str | None, allowed: bool) -> None:
    access = {"users": ["bob"], "groups": ["builders"], "root_users": ["rita"], "root_groups": []}
    uid = {"root": 0, "bob": 1001}.get(user, 2000)
    actor = Actor(uid=uid, user=user, pid=1, groups=groups, real_root=user == "root", via_sudo=user != "root")
    found = {
        None: None,
        "image": ImageTarget("shared", access),
        "bobs": SessionTarget("s", "shared", 1001, access),
    }[target]
    assert Policy("admins").permits(actor, action, found) is allowed
    assert NEEDS[IMAGE_CREATE] == ADMIN


def test_a_user_runs_only_as_themselves_in_their_own_session() -> None:
    access = {"users": ["bob"], "groups": [], "root_users": [], "root_groups": []}
    bob = Actor(uid=1001, user="bob", pid=1, groups=(), via_sudo=True)
    target = SessionTarget("s", "shared", 1001, access)
    rules = Policy()
    assert rules.permits(bob, SESSION_RUN, target, as_uid=1001)
    assert not rules.permits(bob, SESSION_RUN, target, as_uid=0)
    with pytest.raises(NotPermitted, match="only run as themselves"):
        rules.check(bob, SESSION_RUN, target, as_uid=0)

"""The rootless mode's pure parts: id layouts, paths, doctor's judgements (no namespace needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.errors import BadInput
from core.rootless import config, doctor, ids
from core.rootless.ids import Extent, IdMap
from core.rootless.lifecycle import check_idmap


def test_keep_id_maps_root_to_the_first_subordinate_id_and_the_user_to_itself() -> None:
    extents = ids.keep_id(1000, [(100000, 65536)])
    assert extents == (Extent(0, 100000, 1000), Extent(1000, 1000, 1), Extent(1001, 101000, 64536))
    m = IdMap(user="u", uid=1000, gid=1000, uids=extents, gids=extents)
    assert m.host_uid(0) == 100000
    assert m.host_uid(999) == 100999
    assert m.host_uid(1000) == 1000
    assert m.host_uid(1001) == 101000
    assert m.host_uid(65534) == 100000 + 65533  # nobody is mapped
    assert m.host_uid(65536) == 165535
    assert m.host_uid(65537) is None
    assert m.inside_uid(100000) == 0 and m.inside_uid(1000) == 1000 and m.inside_uid(5) is None
    assert m.newuidmap_args(42) == [
        "newuidmap",
        "42",
        "0",
        "100000",
        "1000",
        "1000",
        "1000",
        "1",
        "1001",
        "101000",
        "64536",
    ]


def test_keep_id_with_the_user_beyond_the_range_and_with_split_ranges() -> None:
    assert ids.keep_id(70000, [(100000, 65536)]) == (Extent(0, 100000, 65536), Extent(70000, 70000, 1))
    # two ranges are laid end to end; the user's own id splits the one it falls in
    extents = ids.keep_id(1000, [(200000, 500), (300000, 65536)])
    assert extents == (
        Extent(0, 200000, 500),
        Extent(500, 300000, 500),
        Extent(1000, 1000, 1),
        Extent(1001, 300500, 65036),
    )
    m = IdMap(user="u", uid=1000, gid=1000, uids=extents, gids=extents)
    inside = [m.inside_uid(h) for h in (200000, 200499, 300000, 300499, 300500, 1000)]
    assert inside == [0, 499, 500, 999, 1001, 1000]


def test_read_ranges_by_name_or_uid(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536\n# comment\nbob:x:1\n1001:300000:65536\nalice:500000:0\ncarol:200000:65536\n")
    assert ids.read_ranges(str(f), "alice", 1000) == [(100000, 65536)]
    assert ids.read_ranges(str(f), "dave", 1001) == [(300000, 65536)]
    assert ids.read_ranges(str(tmp_path / "missing"), "alice", 1000) == []


def test_for_user_says_what_is_missing_and_how_to_fix_it(tmp_path: Path) -> None:
    sub = tmp_path / "subuid"
    sub.write_text("alice:100000:65536\n")
    small = tmp_path / "subgid"
    small.write_text("alice:100000:1000\n")
    with pytest.raises(BadInput, match=r"no subordinate gid range .* sudo usermod --add-subgids START-END alice"):
        ids.for_user("alice", 1000, 1000, subuid=str(sub), subgid=str(small))
    with pytest.raises(BadInput, match="no subordinate uid range"):
        ids.for_user("bob", 1001, 1001, subuid=str(sub), subgid=str(sub))
    inside = tmp_path / "inside"
    inside.write_text("alice:0:65536\n")
    with pytest.raises(BadInput, match="holds their own uid 1000"):
        ids.for_user("alice", 1000, 1000, subuid=str(inside), subgid=str(sub))
    m = ids.for_user("alice", 1000, 1000, subuid=str(sub), subgid=str(sub))
    assert IdMap.from_json(m.to_json()) == m
    assert IdMap.from_json({"user": "x"}) is None


def test_a_state_root_keeps_the_id_layout_it_was_made_with(tmp_path: Path) -> None:
    m = IdMap(user="u", uid=1000, gid=1000, uids=ids.keep_id(1000, [(100000, 65536)]), gids=())
    check_idmap(str(tmp_path), m)
    check_idmap(str(tmp_path), m)
    other = m.replace(uids=ids.keep_id(1000, [(200000, 65536)]))
    with pytest.raises(BadInput, match="subordinate ids of u changed"):
        check_idmap(str(tmp_path), other)


def test_mode_follows_who_runs_roost_unless_asked() -> None:
    assert config.mode(0) == "system"
    assert config.mode(1000) == "user"
    assert config.mode(1000, "user") == "user"
    with pytest.raises(BadInput, match="--system needs root"):
        config.mode(1000, "system")
    with pytest.raises(BadInput, match="--user is for ordinary users"):
        config.mode(0, "user")


def test_user_paths_follow_xdg(tmp_path: Path) -> None:
    env = {"HOME": "/home/alice"}
    d = config.user_defaults(env)
    assert d == {
        "config_path": "/home/alice/.config/roost/roost.yaml",
        "state_root": "/home/alice/.local/share/roost",
        "run_root": "/home/alice/.local/state/roost/run",
        "profiles_dir": "/home/alice/.config/roost/profiles",
    }
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    env = {"HOME": "/home/alice", "XDG_DATA_HOME": "/data", "XDG_CONFIG_HOME": "/cfg", "XDG_RUNTIME_DIR": str(runtime)}
    d = config.user_defaults(env)
    assert (d["state_root"], d["run_root"], d["config_path"]) == (
        "/data/roost",
        f"{runtime}/roost",
        "/cfg/roost/roost.yaml",
    )
    os.chmod(runtime, 0o755)  # a runtime directory others may enter is not used
    assert config.user_defaults(env)["run_root"] == "/home/alice/.local/state/roost/run"
    # the file and ROOST_* still win over the defaults
    cfg = tmp_path / "roost.yaml"
    cfg.write_text(f"state-root: {tmp_path}/elsewhere\n")
    s = config.load(environ={"HOME": "/home/alice", "ROOST_CONFIG": str(cfg), "ROOST_RUN": "/r"})
    assert (s.state_root, s.run_root, s.config_path) == (f"{tmp_path}/elsewhere", "/r", str(cfg))


def test_doctor_names_the_sysctl_that_refuses_and_how_to_allow_it(tmp_path: Path) -> None:
    clone = tmp_path / "unprivileged_userns_clone"
    clone.write_text("0\n")
    count = tmp_path / "max_user_namespaces"
    count.write_text("15000\n")
    problems = doctor.kernel(
        ((str(clone), "0", "sudo sysctl -w kernel.unprivileged_userns_clone=1"), (str(count), "0", "x"))
    )
    assert len(problems) == 1 and problems[0].endswith("sudo sysctl -w kernel.unprivileged_userns_clone=1")
    assert doctor.kernel() == []  # this host allows them
    assert doctor.helpers() == []  # uidmap is installed, setuid root


def test_doctor_ranges(tmp_path: Path) -> None:
    f = tmp_path / "sub"
    f.write_text("alice:100000:65536\n")
    assert doctor.ranges("alice", 1000, 1000, subuid=str(f), subgid=str(f)) == []
    assert doctor.ranges("bob", 1001, 1001, subuid=str(f), subgid=str(f))[0].startswith("no subordinate uid range")


def test_binds_take_the_mounts_below_them_along(tmp_path: Path) -> None:
    from core import syscalls
    from core.rootless.setup import recursive_binds

    with_mount = tmp_path / "with-mount"
    (with_mount / "sub").mkdir(parents=True)
    syscalls.mount("tmpfs", str(with_mount / "sub"), "tmpfs", 0, "size=1m")
    try:
        specs = [
            {"type": "bind", "source": str(with_mount), "target": "/a"},
            {"type": "bind", "source": str(tmp_path), "target": "/b", "optional": True},
            {"type": "bind", "source": str(tmp_path / "missing"), "target": "/x", "optional": True},
            {"type": "tmpfs", "target": "/scratch"},
        ]
        out = recursive_binds(specs)
    finally:
        syscalls.umount(str(with_mount / "sub"))
    assert [s["type"] for s in out] == ["rbind", "rbind", "bind", "tmpfs"]

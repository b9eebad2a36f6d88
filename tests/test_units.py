"""Pure functions: names, mountinfo, NSS merging, configuration parsing, argv fast path."""

from __future__ import annotations

import pytest

from core import fastjson, names
from core.errors import BadInput, ConfigError
from core.imageconf import parse_image_config
from core.mounts import mounts_below, parse_mountinfo
from core.profiles import load_profile, parse_profile, profile_names
from core.settings import load as load_settings
from core.setup import merge_database
from roost import fastpath


@pytest.mark.parametrize("good", ["a", "bookworm-amd64", "x" * 64, "A1_.+-", "9"])
def test_valid_names(good: str) -> None:
    assert names.check_name(good) == good


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "-x", "x" * 65, "a b", "é", "a\nb", "_x"])
def test_invalid_names_are_one_clear_line(bad: str) -> None:
    with pytest.raises(BadInput) as e:
        names.check_name(bad, "image name")
    assert "\n" not in str(e.value)
    assert "image name" in str(e.value)


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "", "9999999999"])
def test_invalid_generations(value: str) -> None:
    with pytest.raises(BadInput):
        names.check_generation(value)


def test_mountinfo_parsing_unescapes_and_orders_deepest_first() -> None:
    text = (
        "20 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n"
        "30 20 0:5 / /run/roost/mnt/s rw - overlay overlay rw,lowerdir=/a\n"
        "31 30 0:6 / /run/roost/mnt/s/proc rw - proc proc rw\n"
        "32 30 0:7 / /run/roost/mnt/s/dev rw - tmpfs tmpfs rw\n"
        "33 32 0:8 / /run/roost/mnt/s/dev/pts rw - devpts devpts rw\n"
        "34 30 8:1 /home /run/roost/mnt/s/with\\040space rw - ext4 /dev/sda1 rw\n"
        "35 20 0:9 / /run/roost/mnt/s2 rw - overlay overlay rw\n"
    )
    table = parse_mountinfo(text)
    assert table[0].shared and not table[1].shared
    assert table[5].target == "/run/roost/mnt/s/with space"
    order = [m.target for m in mounts_below("/run/roost/mnt/s", table)]
    assert order[0] == "/run/roost/mnt/s/dev/pts"
    assert order[-1] == "/run/roost/mnt/s"
    assert "/run/roost/mnt/s2" not in order


def test_nss_merge_keeps_image_entries_and_adds_host_ones() -> None:
    image = b"root:x:0:0::/root:/bin/sh\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n"
    host = b"root:x:0:0:host root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n"
    merged, added = merge_database(image, host)
    assert merged.splitlines() == [
        b"root:x:0:0::/root:/bin/sh",
        b"_apt:x:42:65534::/nonexistent:/usr/sbin/nologin",
        b"alice:x:1000:1000::/home/alice:/bin/bash",
    ]
    assert added == [b"alice"]
    assert merge_database(merged, host) == (merged, [])


def test_image_config_rejects_unknown_keys_and_bad_values() -> None:
    assert parse_image_config({"backend": "dir", "users": ["alice"]}, "x").users == ("alice",)
    for bad in (
        {"backnd": "overlay"},
        {"backend": "lvm"},
        {"users": "alice"},
        {"users": ["../x"]},
        {"retention": 0},
        {"retention": True},
        {"profile": "a/b"},
        ["not", "a", "mapping"],
    ):
        with pytest.raises(ConfigError) as e:
            parse_image_config(bad, "image.yaml")
        assert str(e.value).startswith("image.yaml: ")


def test_builtin_profiles_parse() -> None:
    names_ = profile_names("/nonexistent")
    assert {"default", "minimal", "sbuild", "buildd"} <= set(names_)
    for name in names_:
        profile = load_profile(name, "/nonexistent")
        assert profile.name == name
    sbuild = load_profile("sbuild", "/nonexistent")
    assert any(m.target == "/build" for m in sbuild.mounts)


@pytest.mark.parametrize(
    "data",
    [
        {"mounts": [{"type": "bind", "source": "/x", "target": "/../etc"}]},
        {"mounts": [{"type": "bind", "source": "relative", "target": "/x"}]},
        {"mounts": [{"type": "nfs", "target": "/x"}]},
        {"mounts": [{"type": "tmpfs", "target": "/"}]},
        {"copy-files": ["etc/passwd"]},
        {"nss-databases": ["passwd", "aliases"]},
        {"environment": {"set": {"1BAD": "x"}}},
        {"dev": "none"},
        {"unknown": 1},
    ],
)
def test_bad_profiles_are_rejected(data: object) -> None:
    with pytest.raises(ConfigError):
        parse_profile("p", data, "p.yaml")


def test_settings_from_file_and_environment(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "roost.yaml"
    conf.write_text("# only comments\n")
    s = load_settings(environ={"ROOST_CONFIG": str(conf)})
    assert s.state_root == "/var/lib/roost" and s.retention == 5
    conf.write_text("state-root: /srv/roost\nretention: 3\nend-grace: 1\n")
    s = load_settings(environ={"ROOST_CONFIG": str(conf), "ROOST_RUN": "/tmp/r"})
    assert (s.state_root, s.retention, s.end_grace, s.run_root) == ("/srv/roost", 3, 1.0, "/tmp/r")
    s = load_settings("/x", environ={"ROOST_CONFIG": str(conf), "ROOST_ROOT": "/y"})
    assert s.state_root == "/x"
    for bad in ("retention: -1\n", "statte-root: /x\n", "state-root: relative\n", "[1, 2]\n", "a: [\n", "\xff"):
        conf.write_bytes(bad.encode("latin-1"))
        with pytest.raises(ConfigError):
            load_settings(environ={"ROOST_CONFIG": str(conf)})


def test_fastjson_matches_json() -> None:
    import json

    for value in ({"a": [1, 2.5, None, True, "é\n"], "b": {}}, [], "x", 3):
        assert fastjson.loads(json.dumps(value)) == value
    for bad in ("", "{", "[1] x", "nope"):
        with pytest.raises(ValueError):
            fastjson.loads(bad)


def test_fast_path_parses_only_plain_session_run() -> None:
    assert fastpath.parse(["session", "run", "s", "--", "true"]) == (None, "s", ["true"], None, None, False)
    assert fastpath.parse(
        ["--headless", "--root", "/r", "session", "run", "-u", "bob", "-d", "/tmp", "-p", "s", "--", "ls", "-l"]
    ) == (
        "/r",
        "s",
        ["ls", "-l"],
        "bob",
        "/tmp",
        True,
    )
    assert fastpath.parse(["session", "run", "s", "ls", "x"]) == (None, "s", ["ls", "x"], None, None, False)
    assert fastpath.parse(["session", "run", "s", "ls", "-l"]) is None  # argparse reads -l as an option
    for other in (
        ["session", "run", "--help"],
        ["session", "run", "s"],
        ["image", "run"],
        ["--bogus", "session", "run", "s", "--", "x"],
    ):
        assert fastpath.parse(other) is None


@pytest.mark.parametrize(
    "text",
    [
        "state-root: /srv/roost\nretention: 3\n",
        "end-grace: 1.5  # seconds\nlock-timeout: 30\n",
        "default-backend: overlay\n---\n# c\n",
        "retention: 010\n",
        "retention: 1e3\n",
        "retention: true\n",
        "state-root: '/srv/x'\n",
        "state-root: /srv/x # comment\n",
        "a: [1, 2]\n",
        "  indented: 1\n",
        "retention: -1\n",
        "x: ~\n",
        "end-grace: .5\n",
    ],
)
def test_flat_settings_parser_agrees_with_yaml_or_defers(text: str) -> None:
    import yaml

    from core.settings import _flat

    flat = _flat(text)
    if flat is not None:
        assert flat == (yaml.safe_load(text) or {})


def test_fastjson_dumps_matches_json() -> None:
    import json

    for value in ({"a": [1, -2.5, None, True, False, 'é\n"\\'], "b": {}, "c": [[]]}, [], "x", 3, (1, 2), 1e300):
        text = fastjson.dumps(value)
        assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        assert fastjson.loads(text) == json.loads(text)
    for bad in (float("nan"), {1: 2}, object()):
        with pytest.raises((TypeError, ValueError)):
            fastjson.dumps(bad)


def test_struct_records() -> None:
    from core.struct import Struct

    class Point(Struct):
        x: int
        y: int = 0
        tags: list[str] = []

    class Frozen(Struct, frozen=True):
        name: str

    a, b = Point(x=1), Point(1, 0)
    assert a == b and a.as_dict() == {"x": 1, "y": 0, "tags": []}
    a.tags.append("t")
    assert b.tags == [] and Point(x=2).tags == []
    assert repr(a) == "Point(x=1, y=0, tags=['t'])"
    assert a.replace(y=5).y == 5 and a.y == 0
    with pytest.raises(TypeError):
        Point()
    with pytest.raises(TypeError):
        Point(x=1, z=2)
    f = Frozen(name="n")
    with pytest.raises(AttributeError):
        f.name = "m"  # type: ignore[misc]
    assert hash(f) == hash(Frozen(name="n"))


def test_promote_transaction_round_trips_through_the_record_and_refuses_malformed_ones() -> None:
    from core.records import Session
    from core.session import PromoteTx

    def record(promote: object) -> Session:
        data = {
            "id": "s",
            "image": "bb",
            "generation": 3,
            "kind": "ordinary",
            "owner": "root",
            "uid": 0,
            "created": "2026-01-01T00:00:00Z",
            "state": "promoting",
            "backend": "overlay",
            "profile": "default",
            "mountpoint": "/run/roost/mnt/s/root",
            "clone": "/var/lib/roost/sessions/s",
            "lowers": [],
            "promote": promote,
        }
        return Session.from_json(fastjson.loads(fastjson.dumps(data)), "s.json")

    txn = PromoteTx(id="18c-1-abcdef", base=3, flatten=True, temporary_lease=True, message="m", author="ann")
    on_disk = txn.to_record()
    assert on_disk == {
        "tx": "18c-1-abcdef",
        "base": 3,
        "flatten": True,
        "temporary_lease": True,
        "message": "m",
        "author": "ann",
    }
    assert PromoteTx.of(record(on_disk)) == txn
    # a record written with only the keys that matter reads back with the defaults
    assert PromoteTx.of(record({"tx": "t", "base": 1})) == PromoteTx(
        id="t", base=1, flatten=False, temporary_lease=False
    )
    for bad in (
        None,
        [],
        {},
        {"tx": "t"},
        {"base": 1},
        {"tx": "", "base": 1},
        {"tx": 5, "base": 1},
        {"tx": "t", "base": "1"},
        {"tx": "t", "base": True},
    ):
        assert PromoteTx.of(record(bad)) is None, bad
    assert PromoteTx.id_of(record({"tx": "t", "base": "1"})) == "t"  # recover still finds its staging
    assert PromoteTx.id_of(record({"base": 1})) is None and PromoteTx.id_of(record(None)) is None
    with pytest.raises(AttributeError):
        txn.base = 4  # type: ignore[misc]


def test_fast_dispatch_takes_plain_forms_and_leaves_the_rest_to_argparse(monkeypatch: pytest.MonkeyPatch) -> None:
    from roost import session_commands

    calls: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr(session_commands, "execute", lambda func, ns: calls.append((func.__name__, vars(ns))) or 0)
    assert fastpath.dispatch(["session", "begin", "img", "--maintenance", "--name=x", "--json"]) == 0
    assert fastpath.dispatch(["--headless", "-q", "--root", "/r", "session", "end", "--force", "s1"]) == 0
    assert fastpath.dispatch(["run", "-u", "bob", "img", "--", "make", "-j2"]) == 0
    (b, begin), (e, end), (r, run) = calls
    assert (b, begin["image"], begin["maintenance"], begin["name"], begin["json"]) == (
        "cmd_session_begin",
        "img",
        True,
        "x",
        True,
    )
    assert (e, end["id"], end["force"], end["root"], end["quiet"]) == ("cmd_session_end", "s1", True, "/r", True)
    assert (r, run["image"], run["user"], run["command"]) == ("cmd_run", "img", "bob", ["make", "-j2"])
    for other in (
        ["session", "begin", "--help"],
        ["session", "begin", "a", "b"],
        ["session", "begin"],
        ["session", "end", "a", "b"],
        ["session", "end", "--bogus", "a"],
        ["run", "img"],
        ["run", "--bogus", "img", "--", "x"],
        ["--verbose", "session", "end", "a"],
        ["image", "list"],
        [],
    ):
        assert fastpath.dispatch(other) is None, other
    assert len(calls) == 3


def test_the_session_package_gives_each_name_from_its_module_on_first_use() -> None:
    """core.session imports its modules lazily; a module named like an export would shadow it."""
    import pkgutil
    import subprocess
    import sys

    import core.session as session_ops

    modules = {m.name for m in pkgutil.iter_modules(session_ops.__path__)}
    assert not modules & set(session_ops.__all__)
    assert set(session_ops._HOME) == set(session_ops.__all__)
    assert set(session_ops._HOME.values()) == modules
    for name in session_ops.__all__:
        value = getattr(session_ops, name)
        assert callable(value) and getattr(value, "__module__", "").startswith("core.session."), name
    # `session end`'s imports: no promote, running, query, images or profile set-up
    code = "import sys, core.engine, core.session as s; s.end; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    assert not loaded & {
        "core.session.promotion",
        "core.session.running",
        "core.session.query",
        "core.images",
        "core.setup",
        "core.profiles",
    }


def test_only_the_last_mount_of_a_fuse_file_system_waits_for_its_daemon() -> None:
    """A bind of the host's FUSE mount into a session is not drained: unmounting it aborts nothing."""
    from core.mounts import Mount, last_fuse_mounts

    def m(target: str, fstype: str, device: str) -> Mount:
        return Mount(
            mount_id=1,
            parent_id=0,
            root="/",
            target=target,
            fstype=fstype,
            source="x",
            options="rw",
            super_options="rw",
            device=device,
        )

    view = m("/run/roost/mnt/.stage/t/root", "fuse.zfs", "0:58")
    bound = m("/run/roost/mnt/.stage/t/root/home", "fuse.sshfs", "0:61")
    overlay = m("/run/roost/mnt/.stage/t/root/tmp", "overlay", "0:62")
    table = [m("/home", "fuse.sshfs", "0:61"), view, bound, overlay]
    assert last_fuse_mounts([bound, overlay, view], "/run/roost/mnt/.stage/t/root/", table) == {"0:58"}
    assert last_fuse_mounts([overlay], "/run/roost/mnt/.stage/t/root", table) == set()


#: What mmdebstrap 1.3 wrote to stderr creating a bookworm buildd root here, with a warning added.
MMDEBSTRAP_STDERR = """\
I: chroot architecture amd64 is equal to the host's architecture
I: finding correct signed-by value...
I: running apt-get update...
I: downloading packages with apt...
W: a warning between stages
I: extracting archives...
I: installing essential packages...
I: installing remaining packages inside the chroot...
I: cleaning package lists and apt cache...
I: success in 33.7679 seconds
"""


def test_mmdebstraps_stages_become_a_bar_with_their_names_on_a_terminal() -> None:
    import io

    from core.importers import MmdebstrapProgress
    from roost.output import TerminalProgress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    seen: list[tuple[float | None, str]] = []
    terminal = Terminal()
    bar = TerminalProgress(terminal)

    def progress(fraction: float | None, text: str) -> None:
        seen.append((fraction, text))
        bar(fraction, text)

    stages = MmdebstrapProgress(progress)
    for line in MMDEBSTRAP_STDERR.splitlines():
        stages.line(line)
    # Lines before the first stage have no fraction; a warning keeps the fraction reached.
    assert seen[0] == (None, "I: chroot architecture amd64 is equal to the host's architecture")
    assert seen[4] == (0.08, "W: a warning between stages")
    named = [text for fraction, text in seen if "(stage" in text]
    assert named == [
        "running apt-get update (stage 1 of 6)",
        "downloading packages with apt (stage 2 of 6)",
        "extracting archives (stage 3 of 6)",
        "installing essential packages (stage 4 of 6)",
        "installing remaining packages inside the chroot (stage 5 of 6)",
        "cleaning package lists and apt cache (stage 6 of 6)",
    ]
    fractions = [f for f, _ in seen if f is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 0.97
    # Every stage is drawn, however fast the next follows: a bar, its percentage and the stage's name.
    drawn = terminal.getvalue().split("\r\x1b[K")[1:]
    assert "[######..............]  30% installing essential packages (stage 4 of 6)" in drawn
    assert sum("(stage" in line for line in drawn) == 6
    # A stage announced again (or out of order) never moves the bar back.
    stages.line("I: running apt-get update...")
    assert seen[-1] == (0.97, "I: running apt-get update...")


def test_trusted_directories_above_a_checked_root_are_looked_at_once_but_never_trusted_as_roots(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import os

    from core import trust
    from core.errors import SystemFailure

    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)  # like /tmp: fine above a root, never a root itself
    (sticky / "state").mkdir(mode=0o755)
    (sticky / "state" / "images").mkdir(mode=0o755)
    (sticky / "state" / "open").mkdir()
    os.chmod(sticky / "state" / "open", 0o777)
    monkeypatch.setattr(trust, "_CHECKED", set())
    monkeypatch.setattr(trust, "_ABOVE", set())
    looked: list[str] = []
    real_lstat = os.lstat

    def counting_lstat(path: str) -> os.stat_result:
        looked.append(path)
        return real_lstat(path)

    monkeypatch.setattr(trust.os, "lstat", counting_lstat)
    trust.check_dir(str(sticky / "state"), "state root")
    first = len(looked)
    assert first == len(str(sticky / "state").split("/"))  # "/" and each component
    looked.clear()
    trust.check_dir(str(sticky / "state" / "images"), "image directory")
    assert looked == [str(sticky / "state" / "images")]  # what is above was found trustworthy already
    # A directory trusted above a root is still checked as a root in its own right, and a new
    # component below a trusted one is still looked at.
    with pytest.raises(SystemFailure, match="is writable by others"):
        trust.check_dir(str(sticky), "runtime root")
    with pytest.raises(SystemFailure, match="is writable by others"):
        trust.check_dir(str(sticky / "state" / "open"), "lock directory")

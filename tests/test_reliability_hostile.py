"""Hostile input: names, paths, option values, image.yaml, profiles, roost.yaml, planted
symlinks. Every rejection is one clear line with exit code 2 (or 4 for a well-formed name
that does not exist), no traceback, and the state root is byte-for-byte unchanged."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.names import is_valid_name
from roost.main import main
from tests.support import stats
from tests.support.env import Env

EXAMPLES = int(os.environ.get("ROOST_HOSTILE_EXAMPLES", "60"))
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def digest(root: Path) -> str:
    """Every name, type, mode, owner, size, symlink target and content below *root*."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            h.update(f"{path} {st_.st_mode} {st_.st_uid} {st_.st_gid} {st_.st_size} {st_.st_mtime_ns}".encode())
            if stat.S_ISLNK(st_.st_mode):
                h.update(os.readlink(path).encode())
            elif stat.S_ISREG(st_.st_mode):
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


@pytest.fixture
def inproc(bb: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """Run roost in this process (much faster for hundreds of examples) on the bb state."""
    for key in ("ROOST_ROOT", "ROOST_RUN", "ROOST_CONFIG", "ROOST_PROFILES"):
        monkeypatch.setenv(key, bb.environ[key])
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.delenv("SUDO_UID", raising=False)
    monkeypatch.chdir("/")
    yield bb


def run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse --help and the like
            code = int(e.code or 0)
    return code, err.getvalue()


def refused(argv: list[str], codes: tuple[int, ...] = (2,)) -> str:
    stats.bump("hostile inputs tried")
    code, err = run(argv)
    assert code in codes, (argv, code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("roost: "), (argv, err)
    assert "Traceback" not in err
    return lines[0]


hostile_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="./-_+\\ \n\t\x00é\udcff", max_size=20),
    st.sampled_from(["", ".", "..", "../x", "a/b", "/etc", "-x", "x" * 65, "x" * 100_000, "bb/../bb", "\udcff\udcfe"]),
)


@HYPOTHESIS
@given(name=hostile_text)
def test_hostile_names(inproc: Env, name: str) -> None:
    before = digest(inproc.state)
    codes = (4,) if is_valid_name(name) else (2,)
    for argv in (
        ["image", "info", name],
        ["image", "history", name],
        ["image", "rollback", name],
        ["image", "remove", name],
        ["image", "gc", name],
        ["session", "begin", name],
        ["session", "info", name],
        ["session", "end", name],
        ["session", "promote", name],
        ["session", "recover", name],
        ["session", "run", name, "--", "true"],
        ["run", name, "--", "true"],
        ["profile", "show", name],
    ):
        refused(argv, codes)
    if not is_valid_name(name):
        refused(["image", "create", name, "--from-dir", "/nonexistent"])
        refused(["session", "begin", "bb", "--name", name])
    assert digest(inproc.state) == before


@HYPOTHESIS
@given(value=hostile_text)
def test_hostile_option_values(inproc: Env, value: str) -> None:
    before = digest(inproc.state)
    cases: list[list[str]] = [
        ["image", "create", "new", "--from-dir", "/nonexistent", "--backend", value],
        ["image", "create", "new", "--from-tar", value + "-missing"],
    ]
    if not (value.strip().isdigit() and value.isascii() and int(value) >= 1):
        cases.append(["image", "gc", "bb", "--keep", value])
    if not value.isdigit():
        cases.append(["image", "rollback", "bb", value])
    if value.strip() and not is_valid_name(value):
        cases.append(["image", "create", "new", "--from-dir", str(inproc.base), "--profile", value])
    if "\x00" in value or len(value) > 4096:
        cases.append(["image", "create", "new", "--from-dir", str(inproc.base), "--description", value])
    for argv in cases:
        refused(argv, (2,))
    assert digest(inproc.state) == before


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30))
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
image_keys = st.sampled_from(
    [
        "backend",
        "profile",
        "users",
        "groups",
        "root-users",
        "aliases",
        "retention",
        "overlay-max-depth",
        "personality",
        "command-prefix",
        "durable",
        "package-cache",
        "suite",
        "bogus",
    ]
)


@HYPOTHESIS
@given(content=st.one_of(st.dictionaries(image_keys, yaml_values, max_size=4), yaml_values), raw=st.binary(max_size=64))
def test_hostile_image_yaml(inproc: Env, content: object, raw: bytes) -> None:
    import yaml

    conf = inproc.state / "images" / "bb" / "image.yaml"
    original = conf.read_bytes()
    try:
        for text in (yaml.safe_dump(content).encode(), raw, b"backend: overlay\n" + raw):
            conf.write_bytes(text)
            before = digest(inproc.state)
            stats.bump("hostile inputs tried")
            code, err = run(["session", "begin", "bb"])
            if code == 0:
                # the content happened to be a valid image.yaml: the session is real, end it
                sid = inproc.engine().list_sessions()[0].session.id
                assert run(["session", "end", sid])[0] == 0
                continue
            assert code == 2, (text, code, err)
            assert len(err.strip().splitlines()) == 1 and "image.yaml" in err, err
            assert digest(inproc.state) == before
    finally:
        conf.write_bytes(original)


profile_keys = st.sampled_from(["description", "dev", "mounts", "copy-files", "nss-databases", "environment", "bogus"])
mount_entries = st.lists(
    st.dictionaries(
        st.sampled_from(["type", "source", "target", "options", "readonly", "optional"]),
        st.one_of(
            st.sampled_from(["bind", "rbind", "tmpfs", "/", "/..", "../etc", "/tmp", "/x/../../etc"]), yaml_scalars
        ),
        max_size=5,
    ),
    max_size=3,
)


@HYPOTHESIS
@given(content=st.dictionaries(profile_keys, st.one_of(yaml_values, mount_entries), max_size=4))
def test_hostile_profiles(inproc: Env, content: dict[str, object]) -> None:
    import yaml

    site = inproc.profiles / "default.yaml"  # replaces the built-in profile bb uses
    try:
        site.write_text(yaml.safe_dump(content))
        before = digest(inproc.state)
        stats.bump("hostile inputs tried")
        code, err = run(["session", "begin", "bb"])
        if code == 0:
            sid = inproc.engine().list_sessions()[0].session.id
            assert run(["session", "end", sid])[0] == 0
            return
        # a profile naming a source that is missing on this host is bad input, as is any malformed one
        assert code == 2, (content, code, err)
        assert len(err.strip().splitlines()) == 1, err
        assert digest(inproc.state) == before
    finally:
        site.unlink(missing_ok=True)


@HYPOTHESIS
@given(
    raw=st.one_of(
        st.binary(max_size=64), st.dictionaries(st.text(max_size=15), yaml_values, max_size=3).map(repr).map(str.encode)
    )
)
def test_hostile_roost_yaml(inproc: Env, raw: bytes) -> None:
    conf = Path(inproc.environ["ROOST_CONFIG"])
    original = conf.read_bytes()
    try:
        conf.write_bytes(raw)
        before = digest(inproc.state)
        stats.bump("hostile inputs tried")
        code, err = run(["image", "list"])
        if code != 0:
            assert code == 2 and len(err.strip().splitlines()) == 1 and str(conf) in err, (raw, code, err)
        assert digest(inproc.state) == before
    finally:
        conf.write_bytes(original)


def test_oversized_and_binary_values(inproc: Env) -> None:
    before = digest(inproc.state)
    sid = inproc.begin()
    before = digest(inproc.state)
    refused(["session", "promote", sid, "-m", "x" * 5000])
    refused(["session", "promote", sid, "-m", "a\x00b"])
    refused(["session", "run", sid, "-d", "relative", "--", "true"])
    refused(["session", "run", sid, "-u", "no-such-user-\udcff", "--", "true"], (4,))
    refused(["image", "create", "x" * 300, "--from-dir", "/"])
    assert digest(inproc.state) == before
    inproc.ok("session", "end", sid)


# --- planted symlinks -------------------------------------------------------------------------


def test_planted_symlinks_in_the_state_root_are_not_followed(inproc: Env, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious\n")
    (victim / "image.yaml").write_text("backend: overlay\n")
    sessions = inproc.state / "sessions"
    # a record that is a symlink to a host file
    (sessions / "evil.json").symlink_to(victim / "keep")
    refused(["session", "end", "evil"], (2, 4, 5))
    refused(["session", "info", "evil"], (2, 4, 5))
    assert (victim / "keep").read_text() == "precious\n"
    (sessions / "evil.json").unlink()
    # an image directory that is a symlink to a host directory
    (inproc.state / "images" / "evil").symlink_to(victim)
    refused(["image", "remove", "evil"], (2, 4, 5))
    refused(["session", "begin", "evil"], (2, 4, 5))
    assert (victim / "keep").read_text() == "precious\n"
    (inproc.state / "images" / "evil").unlink()
    # the journal as a symlink: operations go on, the target is never written
    journal = inproc.state / "journal.jsonl"
    journal.rename(tmp_path / "journal.saved")
    journal.symlink_to(victim / "keep")
    sid = inproc.begin()
    inproc.ok("session", "end", sid)
    assert (victim / "keep").read_text() == "precious\n"
    journal.unlink()
    (tmp_path / "journal.saved").rename(journal)
    # current pointing outside the image
    current = inproc.state / "images" / "bb" / "current"
    saved = os.readlink(current)
    current.unlink()
    current.symlink_to(victim)
    refused(["session", "begin", "bb"], (5,))
    current.unlink()
    current.symlink_to(saved)
    assert (victim / "keep").read_text() == "precious\n"
    assert sorted(os.listdir(victim)) == ["image.yaml", "keep"]
    stats.bump("hostile inputs tried", 8)


def test_planted_symlinks_in_the_runtime_root_are_refused(inproc: Env, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    locks = inproc.run / "locks"
    moved = tmp_path / "locks.saved"
    locks.rename(moved)
    locks.symlink_to(victim)
    line = refused(["session", "begin", "bb"], (5,))
    assert "symbolic link" in line
    assert os.listdir(victim) == []
    locks.unlink()
    moved.rename(locks)
    # a lock file planted as a symlink to a host file
    (locks / "image.bb.lock").unlink(missing_ok=True)
    (locks / "image.bb.lock").symlink_to(victim / "target")
    refused(["session", "begin", "bb"], (5,))
    assert not (victim / "target").exists()
    (locks / "image.bb.lock").unlink()
    stats.bump("hostile inputs tried", 2)

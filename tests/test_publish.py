"""image publish --sbuild-tarball: a generation as the tarball sbuild's unshare mode unpacks.

The tarball's contents are the generation's (less /dev's entries), its name
SUITE-ARCH of the generation unless given; it replaces the previous one
atomically (a publish killed half-way leaves the old one intact), after every
promote when image.yaml says ``publish:``, and with the caller's rights
through sudo. The real sbuild --chroot-mode=unshare build from a published
tarball is in tests/test_sbuild.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.support.env import Env, need_root
from tests.support.mounts import mounts_under

ARCH = "amd64"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _members(tarball: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tarball) as tar:  # zstd is not in tarfile: tests use .tar or .tar.gz
        return {m.name: m for m in tar.getmembers()}


def _debianish(tree: Path) -> None:
    """What publish reads to name a tarball: os-release (a symlink, as in Debian) and dpkg's status."""
    (tree / "usr" / "lib").mkdir(parents=True, exist_ok=True)
    (tree / "usr" / "lib" / "os-release").write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'
    )
    (tree / "etc" / "os-release").symlink_to("../usr/lib/os-release")
    (tree / "var" / "lib" / "dpkg").mkdir(parents=True, exist_ok=True)
    (tree / "var" / "lib" / "dpkg" / "status").write_text(
        "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n\n"
        f"Package: dpkg\nStatus: install ok installed\nPriority: required\nArchitecture: {ARCH}\nVersion: 1.21\n"
        " continued: line\n\n"
    )
    os.mknod(tree / "dev" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    (tree / "dev" / "fd").symlink_to("/proc/self/fd")


@pytest.fixture
def deb(env: Env, busybox_tree: Path) -> Env:
    """Image ``deb``: busybox dressed as Debian bookworm, with 12 MiB that do not compress (a publish takes a while)."""
    tree = env.base / "tree"
    shutil.copytree(busybox_tree, tree, symlinks=True)
    _debianish(tree)
    (tree / "var" / "lib" / "noise").write_bytes(os.urandom(12 << 20))
    env.ok("image", "create", "deb", "--from-dir", str(tree))
    return env


def _promote(env: Env, image: str, script: str) -> int:
    sid = env.begin(image, "--maintenance")
    assert env.sh(sid, script).code == 0
    r = env.roost("session", "promote", sid)
    assert r.code == 0, r.err
    return int(env.roost("image", "info", image, "--json").json()["current"])


def test_publish_writes_the_generation_named_suite_arch_without_dev(deb: Env) -> None:
    out = deb.base / "out"
    out.mkdir()
    r = deb.roost("image", "publish", "deb", "--sbuild-tarball", str(out), "--compression", "none", "--json")
    assert r.code == 0, r.err
    result = r.json()
    tarball = out / f"bookworm-{ARCH}.tar"
    assert result == {
        "image": "deb",
        "generation": 1,
        "path": str(tarball),
        "name": f"bookworm-{ARCH}",
        "compression": "none",
        "size": tarball.stat().st_size,
    }
    assert os.listdir(out) == [tarball.name]
    assert tarball.stat().st_mode & 0o777 == 0o644
    members = _members(tarball)
    assert "./dev" in members and not [n for n in members if n.startswith("./dev/")]  # sbuild makes /dev itself
    assert members["./etc/os-release"].issym() and members["./bin/busybox"].isfile()
    assert members["./var/lib/noise"].size == 12 << 20
    # the same generation gives the same bytes (export's reproducible tar stream)
    first = _sha256(tarball)
    assert deb.roost("image", "publish", "deb", "--sbuild-tarball", str(out), "--compression", "none").code == 0
    assert _sha256(tarball) == first and os.listdir(out) == [tarball.name]
    journal = [json.loads(line) for line in (deb.state / "journal.jsonl").read_text().splitlines()]
    assert [e["file"] for e in journal if e["operation"] == "image publish"] == [str(tarball)] * 2
    assert mounts_under(deb.run / "mnt") == []


def test_publish_of_a_layered_generation_and_its_names(deb: Env) -> None:
    number = _promote(deb, "deb", "echo promoted > /etc/stamp && rm /var/lib/noise")
    out = deb.base / "out"
    out.mkdir()
    r = deb.roost("image", "publish", "deb", "--sbuild-tarball", str(out), "--name", "sid-amd64-sbuild", "--json")
    assert r.code == 0, r.err
    assert r.json()["generation"] == number == 2 and r.json()["path"] == str(out / "sid-amd64-sbuild.tar.zst")
    listing = subprocess.run(
        ["tar", "--zstd", "-tf", str(out / "sid-amd64-sbuild.tar.zst")], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "./etc/stamp" in listing and "./var/lib/noise" not in listing  # the merged view, whiteouts applied
    r = deb.roost("image", "publish", "deb", "--sbuild-tarball", str(out), "--generation", "1", "--compression", "gzip")
    assert r.code == 0, r.err
    older = _members(out / f"bookworm-{ARCH}.tar.gz")
    assert "./etc/stamp" not in older and "./var/lib/noise" in older
    assert mounts_under(deb.run / "mnt") == [] and os.listdir(deb.run / "mnt" / ".stage") == []


def test_bad_publishes_are_one_line_and_change_nothing(bb: Env, deb: Env) -> None:
    out = deb.base / "out"
    out.mkdir()
    (out / f"bookworm-{ARCH}.tar").write_text("an older tarball of another format")
    cases = [
        (("bb", "--sbuild-tarball", str(out)), 2, "does not say its suite and architecture"),
        (("deb", "--sbuild-tarball", str(out)), 3, f"already has bookworm-{ARCH}.tar for bookworm-{ARCH}"),
        (("deb", "--sbuild-tarball", str(out / "missing")), 2, "no such directory"),
        (("deb", "--sbuild-tarball", str(out), "--name", "../x"), 2, "invalid tarball name"),
        (("deb", "--sbuild-tarball", str(out), "--generation", "9"), 4, "has no generation 9"),
        (("nope", "--sbuild-tarball", str(out)), 4, "no image"),
    ]
    for args, code, words in cases:
        r = deb.roost("image", "publish", *args)
        assert r.code == code and words in r.err and len(r.err.splitlines()) == 1, (args, r)
    assert os.listdir(out) == [f"bookworm-{ARCH}.tar"]
    assert deb.roost("image", "publish", "deb").code == 2  # --sbuild-tarball is the one kind of publish


@pytest.mark.parametrize("step", ["streaming", "written"])
def test_a_publish_killed_half_way_leaves_the_previous_tarball_intact(deb: Env, step: str) -> None:
    out = deb.base / "out"
    out.mkdir()
    tarball = out / f"bookworm-{ARCH}.tar"
    deb.ok("image", "publish", "deb", "--sbuild-tarball", str(out), "--compression", "none")
    before = _sha256(tarball)
    _promote(deb, "deb", "echo new > /etc/stamp")  # generation 2: a layered view is mounted while publishing
    r = deb.roost(
        "image", "publish", "deb", "--sbuild-tarball", str(out), "--compression", "none",
        env={"ROOST_CRASH_AT": f"publish:{step}"},
    )  # fmt: skip
    assert r.code == -9, r
    assert _sha256(tarball) == before  # the old tarball, whole
    left = [n for n in os.listdir(out) if n != tarball.name]
    assert len(left) == 1 and left[0].startswith(f".{tarball.name}.tmp-"), left  # never a name sbuild picks
    if step == "streaming":
        assert 0 < (out / left[0]).stat().st_size < tarball.stat().st_size
    # what the killed publish held (its view of generation 2, its pin) is cleaned up by recover
    deb.ok("session", "recover", "--all")
    assert mounts_under(deb.run / "mnt") == [] and os.listdir(deb.run / "mnt" / ".stage") == []
    # the next publish replaces the tarball and removes the dead writer's file
    deb.ok("image", "publish", "deb", "--sbuild-tarball", str(out), "--compression", "none")
    assert os.listdir(out) == [tarball.name] and "./etc/stamp" in _members(tarball)
    assert deb.roost("doctor", "--check").code == 0


def test_every_promote_publishes_when_image_yaml_says_so(deb: Env) -> None:
    out = deb.base / "published"
    out.mkdir(mode=0o755)
    config_path = deb.state / "images" / "deb" / "image.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["publish"] = {"sbuild-tarball": {"directory": str(out), "compression": "gzip"}}
    config_path.write_text(yaml.safe_dump(config))
    assert os.listdir(out) == []
    _promote(deb, "deb", "echo 2 > /etc/stamp")
    tarball = out / f"bookworm-{ARCH}.tar.gz"
    assert _members(tarball)["./etc/stamp"].size == 2
    # the schroot door's source: sessions promote too, and so publish
    r = deb.roost("schroot", "-c", "source:deb", "--", "sh", "-c", "echo three > /etc/stamp")
    assert r.code == 0, r.err
    assert _members(tarball)["./etc/stamp"].size == 6
    journal = [json.loads(line) for line in (deb.state / "journal.jsonl").read_text().splitlines()]
    assert [e["generation"] for e in journal if e["operation"] == "image publish"] == [2, 3]

    # a directory others may write is refused: the promote stands, the command says what failed
    out.chmod(0o777)
    sid = deb.begin("deb", "--maintenance")
    r = deb.roost("session", "promote", sid)
    assert r.code == 5 and len(r.err.splitlines()) == 1, r
    assert "deb is at generation 4, but publishing its sbuild tarball failed" in r.err and "writable" in r.err
    assert deb.roost("image", "info", "deb", "--json").json()["current"] == 4
    assert deb.roost("session", "list", "--json").json() == []
    assert _members(tarball)["./etc/stamp"].size == 6  # the last good publish stays
    out.chmod(0o755)


@pytest.mark.parametrize(
    ("publish", "words"),
    [
        ({"sbuild-tarball": {"directory": "relative"}}, "directory must be an absolute path"),
        ({"sbuild-tarball": {"directory": "/srv", "compression": "lz4"}}, "compression must be one of"),
        ({"sbuild-tarball": {"directory": "/srv", "name": "a/b"}}, "invalid name"),
        ({"sbuild-tarball": {"directory": "/srv", "owner": "x"}}, "unknown key 'owner'"),
        ({"docker": "/srv"}, "publish must be a mapping with the key sbuild-tarball"),
    ],
)
def test_bad_publish_settings_are_refused_naming_the_file(bb: Env, publish: object, words: str) -> None:
    config_path = bb.state / "images" / "bb" / "image.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["publish"] = publish
    config_path.write_text(yaml.safe_dump(config))
    r = bb.roost("image", "info", "bb")
    assert r.code == 2 and words in r.err and str(config_path) in r.err, r


def test_publish_through_sudo_writes_the_callers_cache_with_the_callers_rights(busybox_tree: Path) -> None:
    need_root()
    from tests.support import sudo

    inst = sudo.make_installation("roost-t-cl")
    try:
        maintainer = inst.add_user("pub")
        builder = inst.add_user("bld")
        inst.allow_sudo()
        tree = inst.base / "tree"
        shutil.copytree(busybox_tree, tree, symlinks=True)
        _debianish(tree)
        inst.root_ok("image", "create", "deb", "--from-dir", str(tree))
        config_path = inst.state / "images" / "deb" / "image.yaml"
        config = yaml.safe_load(config_path.read_text())
        config.update({"users": [builder], "root-users": [maintainer]})
        config_path.write_text(yaml.safe_dump(config))

        home = inst.home(maintainer)
        assert not (home / ".cache").exists()
        r = inst.sudo(maintainer, "image", "publish", "deb", "--sbuild-tarball", "--json")
        assert r.code == 0, r.err
        tarball = home / ".cache" / "sbuild" / f"bookworm-{ARCH}.tar.zst"
        assert r.json()["path"] == str(tarball)
        uid = home.stat().st_uid
        for path in (home / ".cache", home / ".cache" / "sbuild", tarball):
            assert path.stat().st_uid == uid, path  # made by the caller, not by root
        # a directory the caller may not write in is refused as the system refuses the caller
        r = inst.sudo(maintainer, "image", "publish", "deb", "--sbuild-tarball", "/root")
        assert r.code == 2 and len(r.err.splitlines()) == 1, r
        assert not list(Path("/root").glob("bookworm-*"))
        # publishing hands out every file of the image: the image's root level, as export
        r = inst.sudo(builder, "image", "publish", "deb", "--sbuild-tarball")
        assert r.code == 2 and "may not export deb" in r.err, r
        assert not (inst.home(builder) / ".cache").exists()
    finally:
        sudo.remove(inst)

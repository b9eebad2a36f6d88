"""Rootless image content, made by a real unprivileged user: tarballs, directories, mmdebstrap, export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support.rootless import Rootless


def test_export_is_an_unshare_tarball_and_imports_back(rl_bb: Rootless) -> None:
    rl = rl_bb
    sid = rl.begin("bb", "--maintenance")
    script = "echo hello > /etc/greeting; mkdir -p /srv/app; chown 1000:1000 /srv/app; echo x > /srv/app/data"
    assert rl.roost("session", "run", sid, "-u", "root", "--", "/bin/sh", "-c", script).code == 0
    rl.promote(sid)
    out = rl.base / "bb.tar.gz"
    rl.ok("image", "export", "bb", str(out))
    st = os.stat(out)
    assert (st.st_uid, st.st_gid) == (rl.user.uid, rl.user.gid)  # the file is the user's
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    # ids inside the namespace, as sbuild's and mmdebstrap's unshare tarballs carry them
    assert (members["./etc/greeting"].uid, members["./etc/greeting"].gid) == (0, 0)
    assert (members["./srv/app"].uid, members["./srv/app"].gid) == (1000, 1000)
    assert (members["./bin/busybox"].uid, members["./bin/busybox"].gid) == (0, 0)
    # reproducible: the same generation gives the same bytes
    again = rl.base / "again.tar.gz"
    rl.ok("image", "export", "bb", str(again))
    assert out.read_bytes() == again.read_bytes()

    rl.ok("image", "create", "copy", "--from-tar", str(out))
    r = rl.roost("run", "copy", "-u", "root", "--", "/bin/sh", "-c", "cat /etc/greeting; ls -nd /srv/app | cut -c1-40")
    assert r.code == 0, r.err
    greeting, listing = r.out.splitlines()
    assert greeting == "hello" and listing.split()[2:4] == ["1000", "1000"]
    # on disk: root's files are the first subordinate id's, inside id 1000 is subordinate too
    layer = rl.state / "images" / "copy" / "generations" / "1" / "layer"
    assert os.stat(layer / "etc" / "greeting").st_uid == rl.user.subuid
    expected = rl.user.subuid + 1000 - (1 if rl.user.uid < 1000 else 0)
    assert os.stat(layer / "srv" / "app").st_uid == expected
    rl.ok("image", "remove", "copy")
    assert not (rl.state / "images" / "copy").exists()
    assert os.listdir(rl.state / "trash") == []


def test_from_dir_refuses_files_it_cannot_represent(rl: Rootless) -> None:
    tree = rl.base / "root-owned"  # made by the suite, as root
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    r = rl.roost("image", "create", "rootowned", "--from-dir", str(tree))
    assert r.code == 2, r.err
    assert len(r.err.splitlines()) == 1 and "is owned by 0:0" in r.err
    assert not (rl.state / "images" / "rootowned").exists()
    assert os.listdir(rl.state / "staging") == []


def test_a_failed_import_leaves_nothing(rl: Rootless) -> None:
    bad = rl.base / "broken.tar.gz"
    rl.as_user("sh", "-c", f"head -c 100000 /dev/urandom | gzip > {bad}")
    r = rl.roost("image", "create", "broken", "--from-tar", str(bad))
    assert r.code == 5 and len(r.err.splitlines()) == 1, r.err
    assert not (rl.state / "images" / "broken").exists()
    assert os.listdir(rl.state / "staging") == []


def test_doctor_finds_nothing_missing_for_a_user_with_ranges(rl: Rootless) -> None:
    assert json.loads(rl.ok("--json", "doctor", "--check")) == {"problems": []}
    assert not rl.state.exists()  # doctor makes nothing
    assert [p.name for p in rl.base.iterdir() if p.name.startswith(".roost-doctor")] == []  # its probe left nothing


@pytest.mark.slow
def test_debian_root_from_a_tarball_with_device_nodes_and_apt(rl: Rootless, debian_tarball: Path) -> None:
    # the suite's cached tarball was made by mmdebstrap as root: it holds /dev nodes, which a user
    # namespace cannot make and a session does not need
    tarball = rl.base / debian_tarball.name
    shutil.copy(debian_tarball, tarball)
    os.chown(tarball, rl.user.uid, rl.user.gid)
    rl.ok("image", "create", "deb", "--from-tar", str(tarball), "--profile", "sbuild", timeout=900)
    sid = rl.begin("deb", "--maintenance")
    r = rl.roost(
        "session",
        "run",
        sid,
        "-u",
        "root",
        "--",
        "/bin/sh",
        "-c",
        "export DEBIAN_FRONTEND=noninteractive; apt-get -q update >/dev/null && "
        "apt-get install -q -y --no-install-recommends hello >/dev/null && hello",
        timeout=900,
    )
    assert r.code == 0 and r.out == "Hello, world!\n", r.err
    rl.promote(sid, "-m", "install hello")
    r = rl.roost("run", "deb", "--", "/bin/sh", "-c", "hello; dpkg-query -W -f='${Status}\\n' hello; id -un")
    assert r.out == f"Hello, world!\ninstall ok installed\n{rl.user.name}\n", r.err

    # published as sbuild's unshare mode wants it: SUITE-ARCH read from the generation (two layers,
    # mounted inside the user's namespace), the user's own file, no /dev contents, nothing else left
    cache = rl.base / "cache"
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    out = json.loads(rl.ok("--json", "image", "publish", "deb", "--sbuild-tarball", env={"XDG_CACHE_HOME": str(cache)}))
    published = cache / "sbuild" / f"bookworm-{arch}.tar.zst"
    assert (out["path"], out["generation"], out["name"]) == (str(published), 2, f"bookworm-{arch}"), out
    st = os.stat(published)
    assert (st.st_uid, st.st_mode & 0o777, st.st_size) == (rl.user.uid, 0o644, out["size"])
    assert os.listdir(cache / "sbuild") == [published.name]
    names = subprocess.run(["tar", "-tf", str(published)], capture_output=True, text=True, check=True).stdout.split()
    assert "./usr/bin/hello" in names and "./dev/" in names
    assert not [n for n in names if n.startswith("./dev/") and n != "./dev/"]
    rl.ok("image", "create", "pub", "--from-tar", str(published), timeout=900)
    assert rl.roost("run", "pub", "--", "hello").out == "Hello, world!\n"


@pytest.mark.slow
def test_image_create_with_mmdebstrap_in_unshare_mode(rl: Rootless, debian_tarball: Path) -> None:
    # debian_tarball proves mmdebstrap and the mirror work here; this runs it as the user
    r = rl.roost("image", "create", "mm", "--mmdebstrap", "bookworm", "--variant", "minbase", timeout=1800)
    assert r.code == 0, r.err
    r = rl.roost(
        "run", "mm", "--", "/bin/sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME; stat -c %u /usr/bin/env"
    )
    assert r.out == "bookworm\n0\n", r.err
    layer = rl.state / "images" / "mm" / "generations" / "1" / "layer"
    assert os.stat(layer / "usr" / "bin" / "env").st_uid == rl.user.subuid
    # mmdebstrap's temporary directory was in the staging directory, and is gone with it
    assert os.listdir(rl.state / "staging") == []
    out = subprocess.run(
        ["find", str(rl.state / "images" / "mm" / "generations" / "1" / "layer" / "dev")],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert out == [str(layer / "dev")]  # device nodes are not unpacked


def test_publish_needs_a_suite_and_architecture_or_a_name(rl_bb: Rootless) -> None:
    """busybox has no os-release or dpkg: publishing says so in one line and writes nothing; --name does."""
    rl = rl_bb
    where = rl.base / "published"
    rl.as_user("mkdir", str(where))
    r = rl.roost("image", "publish", "bb", "--sbuild-tarball", str(where))
    assert r.code == 2 and len(r.err.splitlines()) == 1 and "name the tarball" in r.err, r.err
    assert os.listdir(where) == []
    r = rl.roost("image", "publish", "bb", "--sbuild-tarball", str(where), "--name", "x/y")
    assert r.code == 2 and "invalid tarball name" in r.err, r.err
    rl.ok("image", "publish", "bb", "--sbuild-tarball", str(where), "--name", "bb-test", "--compression", "gzip")
    assert os.listdir(where) == ["bb-test.tar.gz"]
    with tarfile.open(where / "bb-test.tar.gz") as tar:
        assert tar.getmember("./bin/busybox").uid == 0

"""image export: a generation as a tarball, and back with --from-tar, byte for byte."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core import backends, generations, pins
from core.exports import COMPRESSIONS
from tests.support.env import Env
from tests.support.manifest import Manifest, manifest
from tests.support.mounts import mounts_under

#: a POSIX ACL (user::rw- user:1234:r-- group::r-- mask::r-- other::---) as the kernel stores it
_ANY = 0xFFFFFFFF
ACL = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", tag, perm, ident)
    for tag, perm, ident in ((1, 6, _ANY), (2, 4, 1234), (4, 4, _ANY), (0x10, 4, _ANY), (0x20, 0, _ANY))
)
#: a file capability (v2): cap_net_raw permitted and effective
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


def add_edge_cases(root: Path) -> None:
    """What a root file system may hold that a careless copy loses."""
    d = root / "edge"
    d.mkdir()
    (d / "xattrs").write_bytes(b"x")
    os.setxattr(d / "xattrs", "user.roost", b"value\x00with a NUL")
    os.setxattr(d / "xattrs", "trusted.roost", b"trusted")
    os.link(d / "xattrs", d / "hardlink")
    (d / "acl").write_text("acl")
    os.setxattr(d / "acl", "system.posix_acl_access", ACL)
    (d / "acl-default").mkdir()
    os.setxattr(d / "acl-default", "system.posix_acl_default", ACL)
    (d / "capability").write_bytes(b"\x7fELF")
    os.setxattr(d / "capability", "security.capability", CAPABILITY)
    os.chmod(d / "capability", 0o4755)
    os.mknod(d / "block", 0o660 | stat.S_IFBLK, os.makedev(7, 200))
    os.mknod(d / "char", 0o600 | stat.S_IFCHR, os.makedev(4, 64))
    os.mkfifo(d / "fifo", 0o640)
    with open(d / "sparse", "wb") as f:
        f.seek(64 << 20)
        f.write(b"end")
        f.seek(0)
        f.write(b"start")
    os.chown(d / "sparse", 12345, 54321)
    os.utime(d / "sparse", ns=(1, 1_234_567_891_234_567_891))
    (d / "sticky").mkdir(mode=0o1777)
    os.chmod(d / "sticky", 0o3777)
    (d / "empty").write_bytes(b"")
    (d / "name with spaces\nand a newline").write_text("odd name")
    with open(os.fsencode(d) + b"/not-utf8-\xff\xfe", "w") as f:
        f.write("bytes")
    os.symlink("../nowhere", d / "dangling")
    os.lchown(d / "dangling", 321, 654)
    os.utime(d / "dangling", ns=(1, 123_456_789_123_456_789), follow_symlinks=False)
    os.utime(d, ns=(1, 1_000_000_000_123_456_789))


def generation_tree(env: Env, image: str, number: int = 1) -> Path:
    return env.state / "images" / image / "generations" / str(number) / "layer"


@contextmanager
def merged_view(env: Env, image: str, number: int) -> Iterator[Path]:
    """A read-only overlay mount of a generation's layers: what the generation is."""
    eng = env.engine()
    meta = generations.read_meta(eng.store, image, number)
    backend = backends.get(meta.backend)
    lowers = backend.lowers(eng.store.generations_dir(image), list(meta.stack))
    scratch = tempfile.mkdtemp(dir=env.run / "mnt", prefix=".view-")  # a private mount directory
    try:
        with backend.view(str(eng.store.generation_dir(image, number)), lowers, scratch) as tree:
            yield Path(tree)
    finally:
        os.rmdir(scratch)


def assert_same(a: Manifest, b: Manifest) -> None:
    diff = a.diff(b)
    assert not diff, "\n".join(diff)


def assert_round_trip(env: Env, image: str, reference: Manifest, archive: Path, *extra: str) -> None:
    """Export *image* to *archive*, import it as a new image, compare with *reference*."""
    env.ok("image", "export", image, str(archive), *extra)
    copy = f"{image}-copy-{archive.name.split('.', 1)[1].replace('.', '-')}"
    env.ok("image", "create", copy, "--from-tar", str(archive))
    assert_same(reference, manifest(generation_tree(env, copy)))
    env.ok("image", "remove", copy)


def no_whiteouts_or_overlay_xattrs(m: Manifest) -> None:
    for path, entry in m.entries.items():
        assert entry.rdev != (0, 0), f"a whiteout leaked into the export: {path!r}"
        assert not any(name.startswith("trusted.overlay.") for name, _ in entry.xattrs), path


# --- the acceptance test: a Debian root from mmdebstrap -----------------------------------


@pytest.mark.slow
def test_export_import_round_trip_of_an_mmdebstrap_root(env: Env, debian_tarball: Path) -> None:
    original = env.base / "debian"
    original.mkdir()
    subprocess.run(
        f"zstd -dcq {debian_tarball} | tar -x -C {original} --numeric-owner --same-owner -p "
        "--xattrs --xattrs-include='*' --acls",
        shell=True,
        check=True,
    )
    add_edge_cases(original)
    want = manifest(original)
    assert len(want.entries) > 5000 and want.links  # a real root, with hard links (perl) and devices
    assert any(e.kind == "char" for e in want.entries.values())
    env.ok("image", "create", "deb", "--from-dir", str(original), timeout=600)
    assert_same(want, manifest(generation_tree(env, "deb")))

    # generation 1, a single complete tree
    assert_round_trip(env, "deb", want, env.base / "deb-1.tar.zst")

    # generation 2, a layer over it: whiteouts, an opaque directory, a renamed directory
    sid = env.begin("deb", "--maintenance")
    r = env.sh(
        sid,
        "set -e; rm /usr/bin/perlbug; rm -r /usr/share/doc/apt; mv /usr/share/common-licenses /usr/share/licenses;"
        "rm -r /etc/apt/apt.conf.d && mkdir /etc/apt/apt.conf.d && echo new > /etc/apt/apt.conf.d/99new;"
        "ln /usr/bin/perl /usr/local/bin/perl-link; chmod 700 /edge/empty; chown 7:8 /etc/hostname;"
        "echo changed >> /etc/debian_version; mkfifo /edge/fifo2",
    )
    assert r.code == 0, r.err
    mnt = env.run / "mnt" / sid / "root"
    os.setxattr(mnt / "etc" / "debian_version", "user.changed", b"yes")
    os.removexattr(mnt / "edge" / "xattrs", "user.roost")
    env.ok("session", "promote", sid, "-m", "layered changes")
    with merged_view(env, "deb", 2) as view:
        layered = manifest(view)
    assert (b"usr/share/licenses/GPL-3") in layered.entries
    assert b"usr/share/common-licenses" not in layered.entries and b"usr/bin/perlbug" not in layered.entries
    assert layered.entries[b"edge/xattrs"].xattrs == (("trusted.roost", b"trusted"),)
    no_whiteouts_or_overlay_xattrs(layered)
    assert_round_trip(env, "deb", layered, env.base / "deb-2.tar.zst")

    # an older generation on request, while another is current
    assert_round_trip(env, "deb", want, env.base / "deb-1-again.tar.zst", "--generation", "1")
    assert mounts_under(env.run / "mnt") == []
    env.ok("image", "remove", "deb")


# --- every compression, both backends, on a busybox root ----------------------------------


def test_every_compression_round_trips_a_layered_generation(bb: Env) -> None:
    add_edge_cases_in_session(bb)
    with merged_view(bb, "bb", 2) as view:
        want = manifest(view)
    for suffix, *_ in COMPRESSIONS:
        assert_round_trip(bb, "bb", want, bb.base / f"bb{suffix}")


def add_edge_cases_in_session(env: Env) -> None:
    sid = env.begin("bb", "--maintenance")
    add_edge_cases(env.run / "mnt" / sid / "root")
    # never /home or /tmp: the default profile binds the host's there
    assert env.sh(sid, "rm /bin/vi && mv /var /var2 && rm -r /sbin && mkdir /sbin && touch /sbin/new").code == 0
    env.ok("session", "promote", sid)


def test_dir_backend_generations_export_too(env: Env, busybox_tree: Path) -> None:
    env.ok("image", "create", "plain", "--from-dir", str(busybox_tree), "--backend", "dir")
    sid = env.begin("plain", "--maintenance")
    add_edge_cases(env.run / "mnt" / sid / "root")
    env.ok("session", "promote", sid)
    want = manifest(generation_tree(env, "plain", 2))
    assert b"edge/sparse" in want.entries
    assert_round_trip(env, "plain", want, env.base / "plain.tar.gz")


def test_an_export_is_reproducible_and_leaves_nothing_behind(bb: Env) -> None:
    add_edge_cases_in_session(bb)
    first, second = bb.base / "one.tar", bb.base / "two.tar"
    r = bb.roost("image", "export", "bb", str(first), "--json")
    assert r.code == 0, r.err
    report = r.json()
    assert report == {
        "image": "bb",
        "generation": 2,
        "path": str(first),
        "compression": "none",
        "size": first.stat().st_size,
        "tar_bytes": first.stat().st_size,
    }
    bb.ok("image", "export", "bb", str(second))
    assert first.read_bytes() == second.read_bytes()
    assert stat.S_IMODE(first.stat().st_mode) == 0o600  # a root file system holds /etc/shadow
    assert not [n for n in os.listdir(bb.base) if ".tmp-" in n]
    assert mounts_under(bb.run / "mnt") == []
    assert os.listdir(bb.run / "mnt") == [".stage"] and os.listdir(bb.run / "mnt" / ".stage") == []
    assert not [n for n in os.listdir(bb.run / "locks") if n.startswith(("pin.", "tx."))]
    assert bb.roost("doctor", "--check").code == 0
    entry = (bb.state / "journal.jsonl").read_text().splitlines()[-1]
    assert '"operation":"image export"' in entry and f'"file":"{second}"' in entry


def test_bad_exports_are_one_line_and_change_nothing(bb: Env) -> None:
    existing = bb.base / "exists.tar"
    existing.write_text("keep me")
    (bb.base / "dir.tar").mkdir()
    cases = [
        (("image", "export", "bb", str(bb.base / "x.zip")), 2, "the file name must end in one of"),
        (("image", "export", "bb", str(bb.base / "missing" / "x.tar")), 2, "no such directory"),
        (("image", "export", "bb", str(bb.base / "dir.tar")), 2, "is a directory"),
        (("image", "export", "bb", str(bb.base / "x.tar"), "--generation", "x"), 2, "invalid generation"),
        (("image", "export", "../bb", str(bb.base / "x.tar")), 2, "invalid image name"),
        (("image", "export", "nope", str(bb.base / "x.tar")), 4, "no image 'nope'"),
        (("image", "export", "bb", str(bb.base / "x.tar"), "--generation", "9"), 4, "has no generation 9"),
        (("image", "export", "bb", str(existing)), 3, "already exists (use --force"),
    ]
    for args, code, words in cases:
        r = bb.roost(*args)
        assert r.code == code and words in r.err and len(r.err.splitlines()) == 1, (args, r)
    assert existing.read_text() == "keep me"
    assert not (bb.base / "x.tar").exists()
    bb.ok("image", "export", "bb", str(existing), "--force")
    assert existing.stat().st_size > 10240


def test_a_failed_export_leaves_no_file_no_mount_and_no_pin(bb: Env) -> None:
    add_edge_cases_in_session(bb)  # a layered generation: the export mounts its view
    small = bb.base / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        for name in ("full.tar", "full.tar.zst"):
            r = bb.roost("image", "export", "bb", str(small / name))
            assert r.code == 5, r
            assert "No space left on device" in r.err and len(r.err.splitlines()) == 1, r.err
            assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert (
        mounts_under(bb.run / "mnt") == []
        and os.listdir(bb.run / "mnt") == [".stage"]
        and os.listdir(bb.run / "mnt" / ".stage") == []
    )
    assert not [n for n in os.listdir(bb.run / "locks") if n.startswith(("pin.", "tx."))]
    assert bb.roost("doctor", "--check").code == 0


def test_a_pinned_generation_survives_gc_and_blocks_remove(bb: Env) -> None:
    def promote() -> None:
        sid = bb.begin("bb", "--maintenance")
        assert bb.sh(sid, "date > /etc/stamp").code == 0
        bb.ok("session", "promote", sid)

    promote()
    promote()
    bb.ok("image", "rollback", "bb", "1")  # generations 2 and 3 become a dead branch
    promote()  # generation 4, on 1
    eng = bb.engine()
    pin = pins.pin(eng.ctx, "bb", 3, "export bb 3")
    try:
        held = [s for s in bb.roost("locks", "--json").json() if s["lock"].startswith("pin.bb.3.")]
        assert len(held) == 1 and held[0]["pid"] == os.getpid() and held[0]["operation"] == "export bb 3"
        gc = bb.roost("image", "gc", "bb", "--keep", "1", "--json").json()
        assert gc[0]["removed"] == [] and gc[0]["kept"] == [1, 2, 3, 4]  # 3 stands on 2
        r = bb.roost("image", "remove", "bb", "--force")
        assert r.code == 3 and "is being read (generation 3 by pid" in r.err
    finally:
        pin.release(remove=True)
    gc = bb.roost("image", "gc", "bb", "--keep", "1", "--json").json()
    assert gc[0]["removed"] == [2, 3] and gc[0]["kept"] == [1, 4]
    bb.ok("image", "remove", "bb")


def test_a_dead_exporters_pin_is_stale_and_swept(bb: Env) -> None:
    lock_dir = bb.run / "locks"
    stale = lock_dir / "pin.bb.1.0-1-000000.lock"
    stale.write_text('{"pid": 1, "start": 0, "user": "root", "operation": "export", "since": "x"}\n')
    other = lock_dir / "pin.bb.x.1.0-1-000000.lock"  # image "bb.x", not "bb"
    other.write_text("")
    eng = bb.engine()
    assert pins.pinned(eng.ctx, "bb") == {}
    bb.ok("image", "gc", "bb")
    assert not stale.exists() and other.exists()
    other.unlink()

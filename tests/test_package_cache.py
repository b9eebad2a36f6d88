"""The package cache shared by sessions of one suite and architecture (core/pkgcache.py).

A busybox image stands in for Debian: a maintenance session gives it an apt
cache directory and a Packages list naming files and their SHA-256, as apt's
verified lists would; sessions then write .debs where apt puts downloads.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tests.support.checks import consistent
from tests.support.env import Env
from tests.support.mounts import mount_table, mounts_under

LISTED = {
    "good_1.0_all.deb": b"good content\n",
    "evil_1.0_all.deb": b"the archive's own bytes\n",
    "last_2%3a1.0_all.deb": b"listed last in its stanza\n",
    "linked_1.0_all.deb": b"a link's target\n",
}


def _arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


def packages_list() -> str:
    stanzas = []
    for name, data in LISTED.items():
        sha = hashlib.sha256(data).hexdigest()
        package, version, _ = name.split("_")
        if name.startswith("last"):  # an epoch: apt's name spells it, the pool's leaves it out
            filename = f"Filename: pool/main/x/{package}/{package}_1.0_all.deb"
            stanzas.append(f"Package: last\nVersion: 2:1.0\nSHA256: {sha}\n{filename}\n")
        else:
            filename = f"Filename: pool/main/x/{package}/{name}"
            stanzas.append(f"Package: {package}\nVersion: {version}\n{filename}\nSize: {len(data)}\nSHA256: {sha}\n")
    # a stanza whose version is not the one the file name spells vouches for nothing
    sha = hashlib.sha256(b"other version\n").hexdigest()
    stanzas.append(f"Package: other\nVersion: 2.0\nFilename: pool/main/o/other/other_1.0_all.deb\nSHA256: {sha}\n")
    return "\n".join(stanzas)


def debian_like(env: Env) -> Path:
    """Give bb a suite, an architecture, an apt cache directory and verified-looking lists; the cache's path."""
    conf = env.state / "images" / "bb" / "image.yaml"
    conf.write_text(conf.read_text() + f"suite: bookworm\narchitecture: {_arch()}\n")
    m = env.begin("bb", "--maintenance")
    env.sh(m, "mkdir -p /var/cache/apt/archives/partial /var/lib/apt/lists")
    lists = env.base / "Packages"
    lists.write_text(packages_list())
    r = env.roost(
        "session",
        "run",
        m,
        "--",
        "sh",
        "-c",
        "cat > /var/lib/apt/lists/x_dists_bookworm_Packages",
        input=lists.read_text(),
    )
    assert r.code == 0, r.err
    env.ok("session", "promote", m, "-m", "apt lists")
    return env.state / "package-cache" / f"bookworm-{_arch()}"


def archives_mounted(env: Env, sid: str) -> bool:
    target = str(env.run / "mnt" / sid / "root" / "var" / "cache" / "apt" / "archives")
    found = [m for m in mount_table() if m.target == target]
    assert all(" shared:" not in m.line and " master:" not in m.line for m in found), found  # private, as its root
    return bool(found)


def write(env: Env, sid: str, name: str, data: bytes) -> None:
    r = env.roost(
        "session", "run", sid, "--", "sh", "-c", f"cat > '/var/cache/apt/archives/{name}'", input=data.decode()
    )
    assert r.code == 0, r.err


def test_only_files_the_lists_vouch_for_reach_the_cache_and_other_sessions(bb: Env) -> None:
    cache = debian_like(bb)
    a = bb.begin()
    assert archives_mounted(bb, a)
    write(bb, a, "good_1.0_all.deb", LISTED["good_1.0_all.deb"])
    write(bb, a, "evil_1.0_all.deb", b"planted by the session's root\n")  # a listed name, other bytes
    write(bb, a, "unlisted_1.0_all.deb", b"nobody vouches for this\n")
    write(bb, a, "last_2%3a1.0_all.deb", LISTED["last_2%3a1.0_all.deb"])
    write(bb, a, "other_1.0_all.deb", b"other version\n")
    bb.sh(a, "echo -n 'a link'\"'\"'s target' > /root/t && ln -s /root/t /var/cache/apt/archives/linked_1.0_all.deb")
    bb.sh(a, "echo partial > /var/cache/apt/archives/partial/good_1.0_all.deb")
    bb.ok("session", "end", a)
    debs = cache / "debs"
    assert sorted(p.name for p in debs.iterdir()) == ["good_1.0_all.deb", "last_2%3a1.0_all.deb"]
    assert (debs / "good_1.0_all.deb").read_bytes() == LISTED["good_1.0_all.deb"]
    assert not (cache / "sessions" / a).exists()

    # the next session finds it where apt looks; changing it changes only its own copy
    b = bb.begin()
    assert bb.sh(b, "cat /var/cache/apt/archives/good_1.0_all.deb").out == "good content\n"
    write(bb, b, "good_1.0_all.deb", b"tampered\n")
    bb.sh(b, "rm /var/cache/apt/archives/last_2%3a1.0_all.deb")
    c = bb.begin()  # begun while b is live: b's changes are not its
    assert bb.sh(c, "cat /var/cache/apt/archives/good_1.0_all.deb").out == "good content\n"
    bb.ok("session", "end", b)
    assert (debs / "good_1.0_all.deb").read_bytes() == LISTED["good_1.0_all.deb"]
    assert (debs / "last_2%3a1.0_all.deb").exists()
    # two sessions bring the same file: the cache keeps one, never replaced
    d = bb.begin()
    write(bb, c, "evil_1.0_all.deb", LISTED["evil_1.0_all.deb"])
    write(bb, d, "evil_1.0_all.deb", LISTED["evil_1.0_all.deb"])
    before = None
    for sid in (c, d):
        bb.ok("session", "end", sid)
        inode = (debs / "evil_1.0_all.deb").stat().st_ino
        assert before is None or inode == before
        before = inode
    assert (debs / "evil_1.0_all.deb").read_bytes() == LISTED["evil_1.0_all.deb"]
    assert sorted(p.name for p in (cache / "sessions").iterdir()) == []
    consistent(bb)


def test_the_cache_never_ends_up_in_a_generation(bb: Env) -> None:
    cache = debian_like(bb)
    m = bb.begin("bb", "--maintenance")
    assert archives_mounted(bb, m)
    write(bb, m, "good_1.0_all.deb", LISTED["good_1.0_all.deb"])
    bb.sh(m, "echo kept > /etc/maintained")
    bb.ok("session", "promote", m, "-m", "with a download")
    assert bb.roost("image", "info", "bb", "--json").json()["current"] == 3
    layer = bb.state / "images" / "bb" / "generations" / "3" / "layer"
    assert (layer / "etc" / "maintained").exists()
    assert not (layer / "var" / "cache" / "apt" / "archives" / "good_1.0_all.deb").exists()
    assert (cache / "debs" / "good_1.0_all.deb").exists()  # the lists of its base vouched for it
    s = bb.begin()
    assert bb.sh(s, "cat /var/cache/apt/archives/good_1.0_all.deb").out == "good content\n"
    bb.ok("session", "end", s)
    consistent(bb)


def test_recover_remounts_the_cache_and_removes_orphan_layers(bb: Env) -> None:
    cache = debian_like(bb)
    sid = bb.begin()
    write(bb, sid, "good_1.0_all.deb", LISTED["good_1.0_all.deb"])
    for target in sorted(mounts_under(bb.run / "mnt" / sid), key=len, reverse=True):
        subprocess.run(["umount", target], check=True)
    ghost = cache / "sessions" / "bb-ghost"
    (ghost / "upper").mkdir(parents=True)
    report = bb.ok("session", "recover", "--all")
    assert f"session {sid}: remounted" in report and f"removed orphan package cache layers {ghost}" in report
    assert archives_mounted(bb, sid)
    assert bb.sh(sid, "cat /var/cache/apt/archives/good_1.0_all.deb").out == "good content\n"
    bb.ok("session", "end", sid)
    assert (cache / "debs" / "good_1.0_all.deb").exists() and not ghost.exists()
    consistent(bb)


def test_images_without_a_suite_or_with_the_cache_off_get_none(bb: Env) -> None:
    s = bb.begin()  # bb names no suite
    assert not archives_mounted(bb, s)
    bb.ok("session", "end", s)
    cache = debian_like(bb)
    conf = bb.state / "images" / "bb" / "image.yaml"
    before = conf.read_text()
    conf.write_text(before + "package-cache: false\n")
    s = bb.begin()
    assert not archives_mounted(bb, s)
    write(bb, s, "good_1.0_all.deb", LISTED["good_1.0_all.deb"])
    bb.ok("session", "end", s)
    assert not (cache / "debs").exists() or list((cache / "debs").iterdir()) == []
    for bad in ("maybe", "'false'", "0", "[]"):
        conf.write_text(before + f"package-cache: {bad}\n")
        r = bb.roost("session", "begin", "bb")
        assert r.code == 2 and "package-cache must be true or false" in r.err, (bad, r.err)
    conf.write_text(before)
    assert bb.roost("session", "list", "--json").json() == []

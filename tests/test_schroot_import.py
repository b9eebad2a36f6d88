"""image import-schroot: schroot.conf and chroot.d entries become images, with a report."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from core.binfmt import host_arch
from core.errors import ConfigError
from core.schrootimport import parse
from tests.support.env import Env

# --- the key-file format (no root needed) ------------------------------------------------------


def test_parse_groups_keys_and_comments() -> None:
    entries = parse("# comment\n\n[a]\ntype=directory\n description = with spaces \n[b]\nkey=\n", "f")
    assert [(e.name, e.line, e.keys) for e in entries] == [
        ("a", 3, {"type": "directory", "description": "with spaces"}),
        ("b", 6, {"key": ""}),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("key=value\n", "outside a \\[chroot\\] group"),
        ("[a]\njust words\n", "expected key=value"),
        ("[a]\nx=1\nx=2\n", "set twice"),
        ("[a]\n[a]\n", "defined twice"),
        ("[a\n", "malformed group"),
    ],
)
def test_parse_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^f:[0-9]+: .*{message}"):
        parse(text, "f")


# --- importing -------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def image_yaml(env: Env, image: str) -> dict[str, object]:
    return yaml.safe_load((env.state / "images" / image / "image.yaml").read_text())  # type: ignore[no-any-return]


def test_directory_chroot_with_everything_carried_over(env: Env, busybox_tree: Path) -> None:
    conf = write(
        env.base / "chroot.d" / "bookworm",
        f"[bookworm]\n"
        f"description=Debian bookworm\n"
        f"type=directory\n"
        f"directory={busybox_tree}\n"
        f"union-type=overlay\n"
        f"union-overlay-directory=/srv/union\n"
        f"users=alice,bob\n"
        f"groups=sbuild\n"
        f"root-users=alice\n"
        f"root-groups=root\n"
        f"aliases=stable,bookworm-amd64-sbuild\n"
        f"profile=sbuild\n"
        f"personality=linux32\n"
        f"command-prefix=eatmydata,--\n",
    )
    r = env.roost("image", "import-schroot", str(conf))
    assert r.code == 0, r.err
    assert r.out.splitlines()[0] == (
        f"imported: bookworm as image bookworm (generation 1, profile sbuild) from dir {busybox_tree}"
    )
    assert r.out.splitlines()[1:] == [
        "  note: union-overlay-directory=/srv/union: not carried over (roost keeps session clones in its state root)"
    ]
    assert image_yaml(env, "bookworm") == {
        "backend": "overlay",
        "description": "Debian bookworm",
        "profile": "sbuild",
        "users": ["alice", "bob"],
        "groups": ["sbuild"],
        "root-users": ["alice"],
        "root-groups": ["root"],
        "aliases": ["stable", "bookworm-amd64-sbuild"],
        "personality": "linux32",
        "command-prefix": ["eatmydata", "--"],
        "architecture": host_arch(),  # found in the tree at image create
    }
    # the command prefix and the personality apply inside
    r = env.roost("schroot", "-c", "stable", "--", "sh", "-c", "echo $0")
    assert r.code == 1 and "eatmydata: command not found" in r.err  # no eatmydata in busybox: the prefix is used
    history = env.roost("image", "history", "bookworm", "--json").json()
    assert history[0]["message"] == f"created from dir {busybox_tree}"


def test_file_btrfs_zfs_and_unsupported_types(env: Env, busybox_tree: Path) -> None:
    tarball = env.base / "root.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(busybox_tree), "."], check=True)
    conf = write(
        env.base / "schroot.conf",
        f"[tarred]\ntype=file\nfile={tarball}\nfile-repack=true\n\n"
        f"[snap]\ntype=btrfs-snapshot\nbtrfs-source-subvolume={busybox_tree}\nbtrfs-snapshot-directory=/srv/snaps\n\n"
        f"[zfs]\ntype=zfs-snapshot\nzfs-dataset=tank/roost-test-not-mounted\n\n"
        f"[lvm]\ntype=lvm-snapshot\ndevice=/dev/vg/x\n\n"
        f"[inside]\ntype=file\nfile={tarball}\nlocation=/srv/root\n\n"
        f"[bad~name]\ntype=directory\ndirectory={busybox_tree}\n\n"
        f"[gone]\ntype=directory\ndirectory={env.base}/nonexistent\n",
    )
    empty = env.base / "no-schroot-profiles"  # profiles are compared with schroot's files there
    r = env.roost("image", "import-schroot", str(conf), "--json", "--schroot-dir", str(empty))
    assert r.code == 2, r.err  # some chroots could not be imported
    by_name = {c["chroot"]: c for c in r.json()["chroots"]}
    assert by_name["tarred"]["imported"] and by_name["tarred"]["source"] == f"tar {tarball}"
    assert by_name["tarred"]["notes"] == [
        "file-repack=true: not carried over (changes go through source: sessions, which are promoted into new "
        "generations)"
    ]
    assert by_name["snap"]["imported"] and by_name["snap"]["notes"][0].startswith("btrfs-snapshot: the subvolume")
    assert "is not mounted" in by_name["zfs"]["error"]
    assert by_name["lvm"]["error"].startswith("type=lvm-snapshot is not supported")
    assert "location=/srv/root" in by_name["inside"]["error"]
    assert "not a valid roost image name" in by_name["bad~name"]["error"]
    assert "no such directory" in by_name["gone"]["error"]
    for name in ("tarred", "snap"):
        r = env.roost("schroot", "-c", name, "--", "cat", "/etc/hostname")
        assert (r.code, r.out) == (0, "busybox\n"), r.err
    assert sorted(i["name"] for i in env.roost("image", "list", "--json").json()) == ["snap", "tarred"]


def test_all_reads_schroot_conf_and_chroot_d_like_schroot(env: Env, busybox_tree: Path) -> None:
    etc = env.base / "etc-schroot"
    write(etc / "schroot.conf", f"[one]\ntype=directory\ndirectory={busybox_tree}\nprofile=desktop\n")
    write(etc / "chroot.d" / "two", f"[two]\ntype=directory\ndirectory={busybox_tree}\nunion-type=overlay\n")
    write(etc / "chroot.d" / "two~", "[backup]\ntype=directory\n")
    write(etc / "chroot.d" / "three.dpkg-old", "[old]\ntype=directory\n")
    # a site's schroot profile with a mount roost's profile does not have
    write(etc / "desktop" / "fstab", "/proc /proc none rw,bind 0 0\n/srv/data /data none rw,bind 0 0\n")
    write(etc / "default" / "fstab", "/dev /dev none rw,bind 0 0\n/home /home none rw,bind 0 0\n")
    write(etc / "default" / "nssdatabases", "passwd\nnetgroup\n")
    r = env.roost("image", "import-schroot", "--all", "--schroot-dir", str(etc), "--dry-run")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        f"would import: one as image one (profile default) from dir {busybox_tree}",
        "  note: union-type=none: sessions are copy-on-write clones in roost; change the image through source:one",
        "  note: profile=desktop has no roost counterpart: using default (write /etc/roost/profiles/desktop.yaml "
        "and set profile: in image.yaml)",
        "  note: profile desktop: fstab mounts /srv/data at /data, which roost profile default does not",
        f"would import: two as image two (profile default) from dir {busybox_tree}",
        "  note: profile default: fstab binds the host's /dev; roost profile default gives sessions a private /dev "
        "(a profile with dev: host binds the host's)",
        "  note: profile default: copies the netgroup database, which roost profile default does not",
        f"skipped: {etc}/chroot.d/three.dpkg-old (schroot does not read it either)",
        f"skipped: {etc}/chroot.d/two~ (schroot does not read it either)",
    ]
    assert env.roost("image", "list", "--json").json() == []  # a dry run changes nothing
    r = env.roost("image", "import-schroot", "--all", "--schroot-dir", str(etc), "--chroot", "two")
    assert r.code == 0 and [i["name"] for i in env.roost("image", "list", "--json").json()] == ["two"]
    r = env.roost("image", "import-schroot", "--all", "--schroot-dir", str(etc), "--chroot", "nope")
    assert r.code == 4 and "no schroot chroot 'nope'" in r.err


def test_conflicting_names_and_aliases_are_refused_one_by_one(env: Env, busybox_tree: Path) -> None:
    env.ok("image", "create", "taken", "--from-dir", str(busybox_tree))
    tarball = env.base / "root.tar"
    subprocess.run(["tar", "-cf", str(tarball), "-C", str(busybox_tree), "."], check=True)
    conf = write(
        env.base / "chroots",
        f"[taken]\ntype=file\nfile={tarball}\n"
        f"[fresh]\ntype=file\nfile={tarball}\naliases=taken\n"
        f"[fine]\ntype=file\nfile={tarball}\naliases=fine-alias\n"
        f"[other]\ntype=file\nfile={tarball}\naliases=fine-alias\n",
    )
    r = env.roost("image", "import-schroot", str(conf), "--schroot-dir", str(env.base / "no-schroot-profiles"))
    assert r.code == 3
    assert r.out.splitlines() == [
        "not imported: taken (" + str(conf) + ":1): image taken already exists",
        "not imported: fresh (" + str(conf) + ":4): alias taken is already the name of an image",
        f"imported: fine as image fine (generation 1, profile default) from tar {tarball}",
        "not imported: other (" + str(conf) + ":12): alias fine-alias is already an alias of image fine",
    ]
    assert sorted(i["name"] for i in env.roost("image", "list", "--json").json()) == ["fine", "taken"]


def test_access_keys_and_odd_values_are_reported(env: Env, busybox_tree: Path) -> None:
    conf = write(
        env.base / "chroots",
        f"[x]\ntype=plain\ndirectory={busybox_tree}\nusers=ok,not ok\nsource-users=carol\n"
        f"source-root-groups=root\nroot-groups=root\npersonality=sunos\npreserve-environment=true\n"
        f"description[de]=Hallo\nfancy-key=1\nmessage-verbosity=quiet\n",
    )
    r = env.roost("image", "import-schroot", str(conf), "--dry-run", "--json")
    assert r.code == 0
    (plan,) = r.json()["chroots"]
    assert plan["profile"] == "minimal" and plan["settings"] == {"users": ["ok"], "root-groups": ["root"]}
    assert plan["notes"] == [
        "type=plain: no setup in schroot; roost sessions still get /proc, /sys and /dev (minimal)",
        "users: 'not ok' is not a valid roost name, left out",
        "source-users=carol: not carried over (in roost only root-users and root-groups may maintain an image "
        "through source:)",
        "personality=sunos: not carried over (roost knows linux, linux32, linux64, undefined)",
        "preserve-environment=true: not carried over (pass -p per command (roost schroot -p, roost session run -p))",
        "description[de]: translations are not carried over",
        "fancy-key=1: unknown to roost, not carried over",
        "message-verbosity=quiet: not carried over (use -q or -v per command)",
    ]

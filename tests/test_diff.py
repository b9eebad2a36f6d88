"""Diffs of sessions and generations: dpkg's version order, the overlay layer model, every
overlay special on overlay, btrfs and zfs (and the image-file backends), and apt in a real
Debian root."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core import mounts
from core.backends.overlayfs import mount_overlay
from core.diff import dpkg, xattrs
from core.diff.trees import DirFds, Tree, compare
from tests.support.checks import consistent
from tests.support.env import Env, Result, assert_no_leaks, make_env, need_root

# --- dpkg's version order -------------------------------------------------------------

TRICKY = [
    ("1.0", "1.0"),
    ("1.0", "1.0-0"),
    ("1.0~rc1", "1.0"),
    ("1.0~~", "1.0~"),
    ("1.0~", "1.0"),
    ("1.0", "1.0+b1"),
    ("1.0a", "1.0"),
    ("1.0.1", "1.0a"),
    ("1:0.9", "2.0"),
    ("0:1.0", "1.0"),
    ("2.10-2", "2.10-3"),
    ("2.10-3", "2.10-3+deb12u1"),
    ("2.36-9+deb12u4", "2.36-9+deb12u10"),
    ("1.2.3-1ubuntu1", "1.2.3-1"),
    ("10", "9"),
    ("1.001", "1.1"),
    ("1.0-1~bpo12+1", "1.0-1"),
    ("7.2-1", "7.2-1.1"),
    ("1.0+dfsg-1", "1.0-1"),
    ("a", "b"),
    ("1.0.", "1.0"),
    ("1-2-3", "1-2"),
    ("3.0-1", "3.0+really2.9-1"),
    ("1:1.0", "1.0"),
]


def _dpkg_order(a: str, b: str) -> int:
    for op, result in (("lt", -1), ("eq", 0)):
        if subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode == 0:
            return result
    return 1


def _sign(n: int) -> int:
    return (n > 0) - (n < 0)


def test_version_order_is_dpkgs() -> None:
    rng = random.Random(16)
    alphabet = "0123456789.~+-abcz:"
    pairs = list(TRICKY)
    while len(pairs) < len(TRICKY) + 200:
        a, b = (_random_version(rng, alphabet) for _ in range(2))
        try:
            dpkg.parse_version(a)
            dpkg.parse_version(b)
        except dpkg.BadVersion:
            continue
        pairs.append((a, b))
    mismatches = [
        (a, b, dpkg.compare_versions(a, b), _dpkg_order(a, b))
        for a, b in pairs
        if _sign(dpkg.compare_versions(a, b)) != _dpkg_order(a, b)
    ]
    assert mismatches == []


def _random_version(rng: random.Random, alphabet: str) -> str:
    epoch = f"{rng.randint(0, 2)}:" if rng.random() < 0.2 else ""
    upstream = str(rng.randint(0, 12)) + "".join(rng.choice(alphabet[:-1]) for _ in range(rng.randint(0, 6)))
    revision = f"-{rng.randint(0, 3)}" + "".join(rng.choice("0123456789.~+abc") for _ in range(rng.randint(0, 3)))
    return epoch + upstream.rstrip("-") + (revision if rng.random() < 0.7 else "")


def test_bad_versions_are_refused() -> None:
    for bad in ("", "a b", "x:1.0", "1.0-", ":1.0"):
        with pytest.raises(dpkg.BadVersion):
            dpkg.parse_version(bad)


STATUS_OLD = b"""\
Package: dpkg
Status: install ok installed
Architecture: amd64
Version: 1.21.22

Package: hello
Status: install ok installed
Architecture: amd64
Version: 2.10-2
Description: example
 multi-line description
 Version: 9.9

Package: nano
Status: install ok installed
Architecture: amd64
Version: 7.2-1

Package: gone-long-ago
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: libfoo1
Status: install ok installed
Architecture: i386
Version: 2.0-1
"""

STATUS_NEW = b"""\
Package: dpkg
Status: install ok installed
Architecture: amd64
Version: 1.21.22

Package: hello
Status: install ok installed
Architecture: amd64
Version: 2.10-3

Package: figlet
Status: install ok installed
Architecture: amd64
Version: 2.2.5-3+b1

Package: nano
Status: deinstall ok config-files
Architecture: amd64
Version: 7.2-1

Package: libfoo1
Status: install ok installed
Architecture: i386
Version: 1:1.0-1~bpo1
"""


def test_package_changes_from_status_files() -> None:
    old = list(dpkg.read_status(STATUS_OLD.splitlines(keepends=True)))
    new = list(dpkg.read_status(STATUS_NEW.splitlines(keepends=True)))
    assert {p.name for p in old} == {"dpkg", "hello", "nano", "libfoo1"}  # config-files is not installed
    got = [(c.display, c.change, c.old, c.new) for c in dpkg.changes(old, new)]
    assert got == [
        ("figlet", "installed", None, "2.2.5-3+b1"),
        ("hello", "upgraded", "2.10-2", "2.10-3"),
        ("libfoo1:i386", "upgraded", "2.0-1", "1:1.0-1~bpo1"),  # the epoch wins
        ("nano", "removed", "7.2-1", None),
    ]
    down = [(c.name, c.change) for c in dpkg.changes(new, old)]
    assert ("hello", "downgraded") in down and ("libfoo1", "downgraded") in down


# --- the overlay layer model against the kernel ---------------------------------------------


def _session(base: Path, lowers: list[str], name: str, script: Any) -> str:
    """Mount *lowers* with a fresh upper directory, let *script* change the merged tree, return the upper."""
    upper, work, merged = base / name, base / f"{name}.work", base / "merged"
    upper.mkdir()
    work.mkdir()
    merged.mkdir(exist_ok=True)
    mount_overlay(str(merged), lowers, str(upper), str(work))
    try:
        script(str(merged))
    finally:
        mounts.unmount_tree(str(merged), force=True)
    return str(upper)


def _listing(tree: Tree) -> dict[str, tuple[Any, ...]]:
    """Every entry of *tree* as the model resolves it."""
    out: dict[str, tuple[Any, ...]] = {}
    stack = [("", tree.root())]
    while stack:
        path, node = stack.pop()
        for name in tree.names(node):
            child = tree.child(node, name)
            if child is None:
                continue
            state = tree.state(child)
            out[f"{path}/{name}"] = (state.type, state.mode, state.size, state.target, state.xattrs, state.links)
            if child.is_dir:
                stack.append((f"{path}/{name}", child))
    return out


def _kernel_listing(root: str) -> dict[str, tuple[Any, ...]]:
    """Every entry of a mounted tree, read with plain system calls."""
    fds = DirFds()
    try:
        return _listing(Tree([root], fds, overlay=False))
    finally:
        fds.close()


def _layers(base: Path) -> list[list[str]]:
    """Stacks of real overlay layers with every special: whiteouts (both forms), opaque
    directories, relative and absolute redirects (nested), hard links, xattrs, escaped xattrs."""
    l0 = base / "l0"
    for d in ("a/b", "c/d", "e", "f/g/h", "k", "z/y"):
        (l0 / d).mkdir(parents=True)
    for f in ("a/b/1", "a/2", "c/d/3", "c/4", "e/5", "f/g/h/6", "k/7", "z/y/8", "top"):
        (l0 / f).write_text(f)
    os.link(l0 / "c/4", l0 / "c/4b")
    os.symlink("a/2", l0 / "sym")

    def first(m: str) -> None:
        os.rename(f"{m}/a", f"{m}/a2")  # relative redirect
        os.makedirs(f"{m}/new/deep")
        os.rename(f"{m}/c", f"{m}/new/deep/c")  # absolute redirect
        shutil.rmtree(f"{m}/e")
        os.mkdir(f"{m}/e")  # opaque
        Path(f"{m}/e/fresh").write_text("x")
        os.unlink(f"{m}/top")  # whiteout
        os.link(f"{m}/k/7", f"{m}/k/7b")  # hard link (copies 7 up)
        os.setxattr(f"{m}/z/y/8", "user.t", b"1")
        os.chmod(f"{m}/f/g", 0o700)
        os.unlink(f"{m}/sym")
        os.symlink("top", f"{m}/sym")

    u1 = _session(base, [str(l0)], "u1", first)

    def second(m: str) -> None:
        os.rename(f"{m}/a2/b", f"{m}/bb")  # a directory out of a redirected one
        os.rename(f"{m}/new/deep", f"{m}/deep2")  # a directory holding an absolute redirect
        os.rename(f"{m}/f", f"{m}/f2")
        os.rename(f"{m}/f2/g/h", f"{m}/hh")
        os.mkdir(f"{m}/top")  # a directory over a whiteout
        Path(f"{m}/top/t").write_text("t")
        shutil.rmtree(f"{m}/z")

    u2 = _session(base, [u1, str(l0)], "u2", second)
    # What the kernel never writes into an upper layer but reads in a lower one.
    u3 = base / "u3"
    (u3 / "k").mkdir(parents=True)
    (u3 / "k" / "7").touch()
    os.setxattr(u3 / "k" / "7", "trusted.overlay.whiteout", b"")
    os.setxattr(u3 / "k", "trusted.overlay.opaque", b"x")
    (u3 / "esc").write_text("e")
    os.setxattr(u3 / "esc", "trusted.overlay.overlay.foo", b"bar")
    return [[str(l0)], [u1, str(l0)], [u2, u1, str(l0)], [str(u3), u2, u1, str(l0)]]


@pytest.fixture
def layer_stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[list[str]]]]:
    need_root()
    base = Path(tempfile.mkdtemp(prefix="roost-test-layers-", dir=tmp_path_factory.getbasetemp()))
    try:
        yield base, _layers(base)
    finally:
        assert_no_leaks(base)


def _mounted(base: Path, name: str, layers: list[str]) -> str:
    if len(layers) == 1:
        return layers[0]
    target = base / name
    target.mkdir(exist_ok=True)
    mount_overlay(str(target), layers)
    return str(target)


@pytest.mark.parametrize("native_xattrs", [True, False], ids=["listxattrat", "proc-paths"])
def test_layer_model_matches_the_kernels_overlay(
    layer_stacks: tuple[Path, list[list[str]]], native_xattrs: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not native_xattrs:  # what kernels before 6.13 get
        monkeypatch.setattr(xattrs, "_native", False)
    base, stacks = layer_stacks
    for layers in stacks:
        fds = DirFds()
        try:
            model = _listing(Tree(layers, fds, overlay=True))
        finally:
            fds.close()
        view = _mounted(base, "view", layers)
        try:
            kernel = _kernel_listing(view)
        finally:
            mounts.unmount_tree(str(base / "view"), force=True)
        assert model == kernel, len(layers)
    assert "/k/7" not in model and "/esc" in model and model["/esc"][4] == ("trusted.overlay.foo",)


def test_layer_comparison_equals_comparing_the_mounted_trees(layer_stacks: tuple[Path, list[list[str]]]) -> None:
    base, stacks = layer_stacks
    for a, b in [(0, 1), (1, 2), (0, 2), (2, 3), (0, 3), (3, 0), (2, 2)]:
        fds = DirFds()
        try:
            cheap = [
                c.to_json() for c in compare(Tree(stacks[a], fds, overlay=True), Tree(stacks[b], fds, overlay=True))
            ]
        finally:
            fds.close()
        old, new = _mounted(base, "old", stacks[a]), _mounted(base, "new", stacks[b])
        fds = DirFds()
        try:
            full = [c.to_json() for c in compare(Tree([old], fds, overlay=False), Tree([new], fds, overlay=False))]
        finally:
            fds.close()
            mounts.unmount_tree(str(base / "old"), force=True)
            mounts.unmount_tree(str(base / "new"), force=True)
        assert cheap == full, (a, b)
        assert (a == b) == (cheap == [])


def test_equal_size_and_time_prove_equal_contents_only_for_files_settled_before_the_trees_parted(
    tmp_path: Path,
) -> None:
    """A file rewritten in the second its copy was taken keeps its time on whole-second file systems."""
    second = 1_700_000_000
    for side, text in (("old", "before\n"), ("new", "AFTER!\n")):
        (tmp_path / side).mkdir()
        (tmp_path / side / "f").write_text(text)
        os.utime(tmp_path / side / "f", ns=(second * 10**9, second * 10**9))

    def changes(settled_before: int | None) -> list[tuple[str, tuple[str, ...]]]:
        fds = DirFds()
        try:
            old, new = (
                Tree([str(tmp_path / "old")], fds, overlay=False),
                Tree([str(tmp_path / "new")], fds, overlay=False),
            )
            return [(c.path, c.what) for c in compare(old, new, settled_before=settled_before)]
        finally:
            fds.close()

    assert changes(None) == [("/f", ("content",))]  # no bound known: compared
    assert changes(second * 10**9) == [("/f", ("content",))]  # written in the tick the trees parted: compared
    assert changes((second + 1) * 10**9) == []  # settled before: size and time are trusted


# --- file-level changes on every backend ------------------------------------------------------

#: Every backend; btrfs twice: a state root on btrfs, and a pool on btrfs beside one that is not.
VARIANTS = ["overlay", "dir", "btrfs", "btrfs-pool", "zfs", "squashfs", "erofs"]


@dataclass
class Store:
    env: Env
    backend: str


@pytest.fixture(params=VARIANTS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    need_root()
    variant = request.param
    backend = "btrfs" if variant == "btrfs-pool" else variant
    dataset = pool = None
    if variant == "btrfs":
        base = Path(tempfile.mkdtemp(prefix="roost-test-", dir=request.getfixturevalue("btrfs_mnt")))
    else:
        base = Path(tempfile.mkdtemp(prefix="roost-test-", dir=tmp_path_factory.getbasetemp()))
    env = make_env(base)
    if variant == "btrfs-pool":
        pool = Path(tempfile.mkdtemp(prefix="roost-pool-", dir=request.getfixturevalue("btrfs_mnt")))
        with open(env.config, "a", encoding="utf-8") as f:
            f.write(f"btrfs-pool: {pool}\n")
    if backend == "zfs":
        dataset = f"{request.getfixturevalue('zfs_pool')}/{base.name.replace('roost-test-', 't')}"
        subprocess.run(["zfs", "create", "-o", "mountpoint=none", "-o", "canmount=off", dataset], check=True)
        with open(env.config, "a", encoding="utf-8") as f:
            f.write(f"zfs-dataset: {dataset}\n")
    try:
        yield Store(env, backend)
        for session in env.roost("session", "list", "--json").json():
            env.ok("session", "end", "--force", session["id"])
        for image in env.roost("image", "list", "--json").json():
            env.ok("image", "remove", "--force", image["name"])
        assert_no_leaks(base)
    finally:
        if dataset is not None:
            subprocess.run(["zfs", "destroy", "-r", dataset], capture_output=True, check=False)
        for where in (base, pool):
            if where is not None:
                subprocess.run(["rm", "-rf", "--one-file-system", str(where)], check=False)


@pytest.fixture(scope="module")
def data_tree(busybox_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox with a /data directory for every kind of change."""
    root = tmp_path_factory.mktemp("datatree") / "root"
    subprocess.run(["cp", "-a", str(busybox_tree), str(root)], check=True)
    data = root / "data"
    for d in ("opaque", "moved/sub", "dir-to-file/inner", "keep"):
        (data / d).mkdir(parents=True)
    for f in (
        "gone.txt",
        "opaque/a",
        "opaque/b",
        "moved/x",
        "moved/sub/y",
        "dir-to-file/inner/z",
        "link-src",
        "xattr-file",
        "mode-file",
        "owner-file",
        "same-size",
        "touched",
        "keep/unchanged",
    ):
        (data / f).write_text(f"{f}\n")
        # written long before any session: a change always moves the time, even on whole-second file systems
        os.utime(data / f, (1_600_000_000, 1_600_000_000))
    os.symlink("keep/unchanged", data / "sym")
    return root


SCENARIO = """
set -e
cd /data
rm gone.txt
rm -rf opaque && mkdir opaque && echo c > opaque/c
mv moved renamed
ln link-src link-dst
chmod 600 mode-file
chown 1:1 owner-file
echo SAME-SIZE > same-size
touch -d '2001-02-03 04:05:06' touched
rm -rf dir-to-file && echo now-a-file > dir-to-file
ln -sf missing sym
mkfifo fifo
mknod dev c 1 3
"""

EXPECTED = [
    ("/data/dev", "added", ()),
    ("/data/dir-to-file", "changed", ("type",)),
    ("/data/dir-to-file/inner", "removed", ()),
    ("/data/dir-to-file/inner/z", "removed", ()),
    ("/data/fifo", "added", ()),
    ("/data/gone.txt", "removed", ()),
    ("/data/link-dst", "added", ()),
    ("/data/link-src", "changed", ("links",)),
    ("/data/mode-file", "changed", ("mode",)),
    ("/data/moved", "removed", ()),
    ("/data/moved/sub", "removed", ()),
    ("/data/moved/sub/y", "removed", ()),
    ("/data/moved/x", "removed", ()),
    ("/data/opaque/a", "removed", ()),
    ("/data/opaque/b", "removed", ()),
    ("/data/opaque/c", "added", ()),
    ("/data/owner-file", "changed", ("owner",)),
    ("/data/renamed", "added", ()),
    ("/data/renamed/sub", "added", ()),
    ("/data/renamed/sub/y", "added", ()),
    ("/data/renamed/x", "added", ()),
    ("/data/same-size", "changed", ("content", "mtime")),
    ("/data/sym", "changed", ("target",)),
    ("/data/touched", "changed", ("mtime",)),
    ("/data/xattr-file", "changed", ("xattrs",)),
]

METHOD = {"overlay": "layers", "dir": "layers", "btrfs": "btrfs", "zfs": "tree"}
METHOD |= {"squashfs": "layers", "erofs": "layers"}  # the session's upper over the image's view
IMAGE_METHOD = {**METHOD, "squashfs": "tree", "erofs": "tree"}


def _data_changes(r: Result) -> tuple[dict[str, Any], list[tuple[str, str, tuple[str, ...]]]]:
    assert r.code == 0, r.err
    doc = r.json()
    return doc, [
        (f["path"], f["change"], tuple(f.get("what", ()))) for f in doc["files"] if f["path"].startswith("/data/")
    ]


def test_every_kind_of_change_on_every_backend(store: Store, data_tree: Path) -> None:
    env = store.env
    env.ok("image", "create", "bb", "--from-dir", str(data_tree), "--backend", store.backend, "--profile", "minimal")
    sid = env.begin("bb", "--maintenance")
    r = env.sh(sid, SCENARIO)
    assert r.code == 0, r.err
    expected = EXPECTED
    if store.backend == "zfs":  # zfs-fuse has no extended attributes (ENOTSUP)
        expected = [e for e in EXPECTED if e[0] != "/data/xattr-file"]
    else:
        mountpoint = env.roost("session", "info", sid, "--json").json()["mountpoint"]
        os.setxattr(f"{mountpoint}/data/xattr-file", "user.roost", b"diff")  # from the host, as root

    doc, changes = _data_changes(env.roost("session", "diff", sid, "--json"))
    assert changes == expected
    assert doc["method"] == METHOD[store.backend] and doc["packages"] is None
    assert doc["from"] == {"image": "bb", "generation": 1} and doc["to"]["session"] == sid
    by_path = {f["path"]: f for f in doc["files"]}
    assert by_path["/data/link-src"]["link_to"] == "/data/link-dst"
    assert by_path["/data/link-dst"]["new"]["links"] == 2
    if store.backend != "zfs":
        assert by_path["/data/xattr-file"]["new"]["xattrs"] == ["user.roost"]
    assert by_path["/data/dev"]["new"]["device"] == "1:3" and by_path["/data/fifo"]["new"]["type"] == "fifo"
    assert by_path["/data/owner-file"]["new"]["uid"] == 1 and by_path["/data/mode-file"]["new"]["mode"] == "0600"
    assert (
        by_path["/data/sym"]["old"]["target"] == "keep/unchanged" and by_path["/data/sym"]["new"]["target"] == "missing"
    )
    assert doc["summary"]["files"]["added"] == sum(1 for f in doc["files"] if f["change"] == "added")

    text = env.ok("session", "diff", sid)
    assert "D /data/gone.txt  file 0644 0:0" in text and "M /data/mode-file  mode 0644 -> 0600\n" in text
    assert "A /data/renamed/sub/" in text and text.rstrip().splitlines()[-1].startswith("files: ")
    summary = env.roost("session", "diff", sid, "--summary", "--json").json()
    assert "files" not in summary and summary["summary"] == doc["summary"]

    env.ok("session", "promote", sid, "-m", "every kind of change")
    gen, gen_changes = _data_changes(env.roost("image", "diff", "bb", "--json"))
    assert gen_changes == expected  # the generation says what the session said
    assert gen["method"] == IMAGE_METHOD[store.backend]
    assert (gen["from"], gen["to"]) == ({"image": "bb", "generation": 1}, {"image": "bb", "generation": 2})
    back = _data_changes(env.roost("image", "diff", "bb", "2", "1", "--json"))[1]
    flip = {"added": "removed", "removed": "added", "changed": "changed"}
    assert sorted(back) == sorted((p, flip[c], w) for p, c, w in expected)
    assert _data_changes(env.roost("image", "diff", "bb", "2", "--json"))[1] == []  # 2 against current (2)
    consistent(env)


@pytest.mark.parametrize("store", ["btrfs", "btrfs-pool", "zfs"], indirect=True)
def test_pruned_and_quick_comparisons_equal_full_ones(store: Store, data_tree: Path) -> None:
    """What btrfs's tree search and inode quick checks skip is really the same, also mid-session."""
    env = store.env
    env.ok("image", "create", "bb", "--from-dir", str(data_tree), "--backend", store.backend, "--profile", "minimal")
    sid = env.begin("bb", "--maintenance")
    assert env.sh(sid, SCENARIO).code == 0
    eng = env.engine()
    with eng.session_diff(sid) as d:
        fast = [c.to_json() for c in d.entries()]
        assert d.old is not None and d.new is not None
        full = [c.to_json() for c in compare(d.old, d.new)]
    assert fast == full
    data = [(c["path"], c["change"], tuple(c.get("what", ()))) for c in fast if c["path"].startswith("/data/")]
    assert data == [e for e in EXPECTED if e[0] != "/data/xattr-file"]
    env.ok("session", "promote", sid)
    sid = env.begin("bb", "--maintenance")
    assert env.sh(sid, "echo more > /data/keep/more && rm /data/link-dst").code == 0
    env.ok("session", "promote", sid)
    for old, new in ((1, 3), (3, 1), (2, 3)):
        with eng.image_diff("bb", old, new) as d:
            fast = [c.to_json() for c in d.entries()]
            assert d.old is not None and d.new is not None
            full = [c.to_json() for c in compare(d.old, d.new)]
        assert fast == full, (old, new)
    with eng.image_diff("bb", 2, 3) as d:
        assert [c.path for c in d.entries()] == ["/data/keep/more", "/data/link-dst", "/data/link-src"]
        assert d.method == ("btrfs" if store.backend == "btrfs" else "tree")
    consistent(env)


# --- apt in a real Debian root ---------------------------------------------------------------

APT = "export DEBIAN_FRONTEND=noninteractive; set -e; "
#: What apt and dpkg keep for themselves, and what a session's profile writes (resolver, users).
BOOKKEEPING = ("/var/lib/dpkg/", "/var/lib/apt/", "/var/cache/", "/var/log/", "/etc/ld.so.cache")
PROFILE_FILES = {"/etc/resolv.conf", "/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"}


def _installed(env: Env, sid: str) -> dict[tuple[str, str], str]:
    fmt = "${Package} ${Architecture} ${Version} ${db:Status-Status}\\n"
    r = env.sh(sid, f"dpkg-query -W -f='{fmt}'")
    assert r.code == 0, r.err
    rows = [line.split() for line in r.out.splitlines()]
    return {(n, a): v for n, a, v, state in rows if state not in ("not-installed", "config-files")}


def _files(env: Env, sid: str, package: str) -> tuple[set[str], set[str]]:
    """What dpkg wrote for *package*: (its files, everything it lists), where they are (merged /usr)."""
    script = (
        f"dpkg -L {package} | while read -r f; do "
        + 'p="$(readlink -f "${f%/*}")/${f##*/}"; if [ -d "$f" ]; then echo "d ${p#/}"; else echo "f ${p#/}"; fi; done'
    )
    r = env.sh(sid, script)
    assert r.code == 0, r.err
    rows = [line.split(" ", 1) for line in r.out.splitlines()]
    return {"/" + p for kind, p in rows if kind == "f"}, {"/" + p for _, p in rows}


@pytest.mark.slow
def test_apt_install_remove_and_upgrade_in_a_maintenance_session(env: Env, debian_tarball: Path) -> None:
    env.ok("image", "create", "deb", "--from-tar", str(debian_tarball), "--profile", "minimal", timeout=300)
    # Generation 2 gets bullseye's hello (to upgrade) and figlet (to remove).
    prep = env.begin("deb", "--maintenance")
    r = env.sh(
        prep,
        APT + "echo 'deb http://deb.debian.org/debian bullseye main' > /etc/apt/sources.list.d/bullseye.list; "
        "apt-get -q update >/dev/null; apt-get install -q -y --no-install-recommends hello=2.10-2 figlet >/dev/null",
        timeout=900,
    )
    assert r.code == 0, r.err
    env.ok("session", "promote", prep, "-m", "old hello, figlet")

    sid = env.begin("deb", "--maintenance")
    before = _installed(env, sid)
    removed_files, removed_listed = _files(env, sid, "figlet")
    old_hello, old_hello_listed = _files(env, sid, "hello")
    r = env.sh(
        sid,
        APT + "apt-get -q update >/dev/null; apt-get install -q -y --no-install-recommends hello sl >/dev/null; "
        "apt-get purge -q -y figlet >/dev/null",
        timeout=900,
    )
    assert r.code == 0, r.err
    after = _installed(env, sid)
    expected_packages = []
    for key in sorted(before.keys() | after.keys()):
        if key not in before:
            expected_packages.append((*key, "installed"))
        elif key not in after:
            expected_packages.append((*key, "removed"))
        elif before[key] != after[key]:
            order = dpkg.compare_versions(before[key], after[key])
            expected_packages.append((*key, "upgraded" if order < 0 else "downgraded"))
    new_packages = {name for name, _, change in expected_packages if change in ("installed", "upgraded")}
    listed = {name: _files(env, sid, name) for name in new_packages}
    written = {name: files for name, (files, _) in listed.items()}
    doc = env.roost("session", "diff", sid, "--json", timeout=300).json()
    got = sorted((p["name"], p["architecture"], p["change"]) for p in doc["packages"])
    assert got == expected_packages
    assert ("hello", "amd64", "upgraded") in got and ("sl", "amd64", "installed") in got
    assert ("figlet", "amd64", "removed") in got
    hello = next(p for p in doc["packages"] if p["name"] == "hello")
    assert (hello["old"], hello["new"]) == ("2.10-2", after[("hello", "amd64")])

    files = {f["path"]: f for f in doc["files"]}
    for package, paths in written.items():  # every file dpkg wrote is in the diff
        for path in paths - old_hello if package == "hello" else paths:
            assert files[path]["change"] in ("added", "changed"), (package, path)
    assert files["/usr/bin/hello"]["change"] == "changed" and "content" in files["/usr/bin/hello"]["what"]
    for path in removed_files:  # and every file of the removed package
        assert files[path]["change"] == "removed", path
    # ... and nothing else: the packages' files, dpkg's and apt's bookkeeping, alternatives' links
    ours = set().union(removed_listed, old_hello_listed, *(every for _, every in listed.values()))
    for path, f in files.items():
        state = f.get("new") or f["old"]
        if path in ours or path in PROFILE_FILES or path.startswith(BOOKKEEPING):
            continue
        if state["type"] == "dir" or path.startswith("/etc/alternatives/"):
            continue
        assert state.get("target", "").startswith("/etc/alternatives/"), path
    assert doc["summary"]["packages"] == {
        "installed": sum(1 for c in got if c[2] == "installed"),
        "removed": sum(1 for c in got if c[2] == "removed"),
        "upgraded": sum(1 for c in got if c[2] == "upgraded"),
        "downgraded": 0,
    }

    env.ok("session", "promote", sid, "-m", "hello upgraded, sl in, figlet out")
    gen = env.roost("image", "diff", "deb", "--json", timeout=300).json()
    assert gen["packages"] == doc["packages"] and gen["files"] == doc["files"]  # the generation says the same
    assert (gen["from"]["generation"], gen["to"]["generation"]) == (2, 3)
    text = env.ok("image", "diff", "deb", "--summary")
    assert "  upgraded    hello" in text and "2.10-2 -> " in text and "A /" not in text
    back = env.roost("image", "diff", "deb", "3", "2", "--summary", "--json").json()
    assert sorted((p["name"], p["change"]) for p in back["packages"]) == sorted(
        (n, {"installed": "removed", "removed": "installed", "upgraded": "downgraded"}[c]) for n, _, c in got
    )
    consistent(env)


# --- errors, locks (who may see what: tests/security/test_trust.py) --------------------------


@pytest.fixture
def mini(env: Env, busybox_tree: Path) -> Env:
    """Image ``mini`` (busybox, overlay) with the minimal profile: sessions bind nothing of the host's."""
    env.ok("image", "create", "mini", "--from-dir", str(busybox_tree), "--profile", "minimal")
    return env


def test_bad_arguments_get_one_line(mini: Env) -> None:
    env = mini
    for args, code, words in [
        (("session", "diff", "nosuch"), 4, "no session"),
        (("session", "diff", "../x"), 2, "invalid session id"),
        (("image", "diff", "nosuch"), 4, "no image"),
        (("image", "diff", "mini"), 2, "has no parent"),
        (("image", "diff", "mini", "7"), 4, "no generation 7"),
        (("image", "diff", "mini", "x"), 2, "invalid generation"),
        (("image", "diff", "mini", "1", "0"), 2, "generations start at 1"),
    ]:
        r = env.roost(*args)
        assert r.code == code and words in r.err and len(r.err.strip().splitlines()) == 1, (args, r)


def test_a_diff_holds_its_session_and_pins_its_generations(mini: Env) -> None:
    env = mini
    with open(env.config, "a", encoding="utf-8") as f:
        f.write("lock-timeout: 1\n")
    for n in (2, 3):
        sid = env.begin("mini", "--maintenance")
        assert env.sh(sid, f"echo {n} > /root/{n}").code == 0
        env.ok("session", "promote", sid)
    sid = env.begin("mini")
    assert env.sh(sid, "echo x > /root/x").code == 0
    eng = env.engine()
    with eng.session_diff(sid) as d:
        assert [c.path for c in d.entries() if c.path.startswith("/root")] == ["/root/x"]
        r = env.roost("session", "end", sid)  # end waits for the diff: here, until its lock timeout
        assert r.code == 3, r
    env.ok("session", "end", sid)
    with eng.image_diff("mini", 1, 3) as d:
        r = env.roost("image", "remove", "mini")  # the generations read are pinned
        assert r.code == 3 and "diff mini 1 3" in r.err, r
        assert [c.path for c in d.entries() if c.path.startswith("/root")] == ["/root/2", "/root/3"]
    consistent(env)
    env.ok("image", "remove", "mini")


USER_DATABASES = ("/etc/passwd", "/etc/group")


def test_the_host_entries_a_session_is_given_are_no_change_but_its_own_are(env: Env, busybox_tree: Path) -> None:
    """The default profile merges the host's users and groups into a session's databases; promote takes
    them out again, so a diff does not list them, and lists what the session itself added."""
    env.ok("image", "create", "bb", "--from-dir", str(busybox_tree))
    image_passwd = (busybox_tree / "etc" / "passwd").read_bytes()
    for kind in ((), ("--maintenance",)):
        sid = env.begin("bb", *kind)
        if not kind:  # (a maintenance session gets its owner's entries only: root's are the image's)
            merged = env.sh(sid, "cat /etc/passwd")
            assert merged.code == 0 and merged.out.encode() != image_passwd  # the host's entries are there
        eng = env.engine()
        with eng.session_diff(sid) as d:  # (the image has no shadow files: the host's are copied, and listed)
            assert [c.path for c in d.entries() if c.path in USER_DATABASES] == []
        assert env.sh(sid, "echo 'builder:x:4242:4242::/nonexistent:/bin/false' >> /etc/passwd").code == 0
        with eng.session_diff(sid) as d:
            changed = [(c.path, c.what) for c in d.entries() if c.path in USER_DATABASES]
        assert changed == [("/etc/passwd", ("content", "size", "mtime"))]
        if kind:
            env.ok("session", "promote", sid)
            with eng.image_diff("bb") as d:  # what the promote made is what the session diff said
                assert [(c.path, c.what) for c in d.entries() if c.path in USER_DATABASES] == changed
        else:
            env.ok("session", "end", sid)
    consistent(env)


def test_completion_offers_generations_and_sessions(mini: Env) -> None:
    env = mini
    sid = env.begin("mini", "--maintenance")
    env.ok("session", "promote", sid)
    sid = env.begin("mini")

    def ask(*words: str) -> list[str]:
        out = env.ok("__complete", "zsh", "roost", *words).splitlines()
        assert out[0] == "words", out
        return [line.split("\t")[0] for line in out[1:]]

    assert ask("image", "diff", "") == ["mini"]
    assert ask("image", "diff", "mini", "") == ["2", "1"]
    assert ask("image", "diff", "mini", "1", "") == ["2", "1"]
    assert ask("session", "diff", "") == [sid]
    assert "--summary" in ask("session", "diff", sid, "--")
    env.ok("session", "end", sid)


def test_a_status_file_too_big_for_dpkg_is_refused_in_one_line(mini: Env) -> None:
    env = mini
    sid = env.begin("mini")
    mountpoint = env.roost("session", "info", sid, "--json").json()["mountpoint"]
    status = Path(mountpoint) / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_bytes(b"Package: x\nStatus: install ok installed\nVersion: 1\n" + b"y" * 100_000 + b"\n")
    r = env.roost("session", "diff", sid, "--summary", "--json")  # a line longer than a read: still fine
    assert r.code == 0 and r.json()["packages"] == [
        {"name": "x", "architecture": "", "change": "installed", "old": None, "new": "1"}
    ], r
    with open(status, "r+b") as f:
        f.truncate(200 << 20)  # sparse: what an owner could plant to make roost read without end
    r = env.roost("session", "diff", sid)
    assert r.code == 2 and "more than a status file dpkg writes" in r.err and len(r.err.splitlines()) == 1, r
    env.ok("session", "end", sid)

"""Each way a sudo user once became root, read root's files or broke others' sessions: now refused.

The numbers are those of the report that found them; every test runs real
users through a real sudo rule and checks the refusal (exit code, one line)
and that nothing changed.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.trust import Cast, fingerprint, grant, refused, state_fingerprint


def _begin(cast: Cast, user: str, image: str = "shared", *extra: str) -> str:
    r = cast.inst.sudo(user, "session", "begin", image, *extra)
    assert r.code == 0, r.err
    return r.out.strip()


def _end(cast: Cast, sid: str) -> None:
    cast.inst.root_ok("session", "end", "--force", sid)


# --- 1. image create made its sudo caller a root-user -----------------------------------------


def test_1_image_create_needs_an_administrator_and_grants_nobody_anything(cast: Cast, busybox_tree: Path) -> None:
    inst = cast.inst
    before = state_fingerprint(inst)
    for user in (cast.eve, cast.bob, cast.rita):
        refused(inst.sudo(user, "image", "create", "mine", "--from-dir", str(busybox_tree)), 2, "may not create images")
    assert state_fingerprint(inst) == before
    tree = inst.home(cast.ada) / "tree"
    subprocess.run(["cp", "-a", str(busybox_tree), str(tree)], check=True)
    subprocess.run(["chown", "-R", f"{cast.ada}:", str(tree)], check=True)
    try:
        r = inst.sudo(cast.ada, "image", "create", "adas", "--from-dir", str(tree))
        assert r.code == 0, r.err
        config = (inst.state / "images" / "adas" / "image.yaml").read_text()
        assert cast.ada not in config  # creating grants nothing: access is given in image.yaml
        info = json.loads(inst.sudo(cast.ada, "image", "info", "adas", "--json").out)
        assert info["access"] == "admin"
        refused(inst.sudo(cast.eve, "image", "info", "adas"), 2, "may not see")
    finally:
        inst.root("image", "remove", "--force", "adas")


def test_1_root_in_a_session_is_only_for_root_users(cast: Cast) -> None:
    inst = cast.inst
    sid = _begin(cast, cast.bob)
    try:
        refused(inst.sudo(cast.bob, "session", "run", sid, "-u", "root", "--", "/bin/id", "-u"), 2, "as themselves")
        refused(inst.sudo(cast.bob, "session", "run", sid, "-u", "0", "--", "/bin/id", "-u"), 2, "as themselves")
        refused(inst.sudo(cast.bob, "session", "begin", "shared", "--maintenance"), 2, "root-users")
        r = inst.sudo(cast.bob, "session", "run", sid, "--", "/bin/id", "-u")
        assert r.code == 0 and r.out.strip() == str(pwd.getpwnam(cast.bob).pw_uid), r
        r = inst.sudo(cast.rita, "session", "run", sid, "-u", "root", "--", "/bin/id", "-u")
        assert r.code == 0 and r.out.strip() == "0", r
    finally:
        _end(cast, sid)


# --- 2. --root and ROOST_* chose where records were read --------------------------------------


def _forged_state(cast: Cast) -> Path:
    """A state root a user made, with a record that says "run as root at /" and "delete this"."""
    home = cast.inst.home(cast.eve)
    forged = home / "state"
    victim = home / "victim"
    script = (
        f"mkdir -p {forged}/sessions {forged}/images {victim} && echo keep > {victim}/file && "
        f'printf \'%s\' \'{{"id":"x","image":"shared","generation":1,"kind":"ordinary","owner":"root","uid":0,'
        f'"created":"t","state":"active","backend":"overlay","profile":"default","mountpoint":"/",'
        f'"clone":"{victim}","lowers":[],"access":{{"root_users":["{cast.eve}"]}}}}\' > {forged}/sessions/x.json'
    )
    r = cast.inst.as_user(cast.eve, "/bin/sh", "-c", script)
    assert r.code == 0, r.err
    return forged


def test_2_a_sudo_caller_cannot_choose_the_state_root(cast: Cast) -> None:
    inst = cast.inst
    forged = _forged_state(cast)
    victim = forged.parent / "victim" / "file"
    for args in (
        ("--root", str(forged), "session", "run", "x", "--", "/usr/bin/id"),
        (f"--root={forged}", "session", "end", "x"),
        ("--root", str(forged), "session", "recover", "--all"),
        ("--headless", "--root", str(forged), "image", "list"),
    ):
        refused(inst.sudo(cast.eve, *args), 2, "through sudo")
    refused(inst.sudo(cast.eve, "--root", str(forged), "schroot", "-l"), 1, "through sudo")
    refused(inst.sudo(cast.eve, "--root", str(forged), "schroot", "-r", "-c", "session:x", "--", "/usr/bin/id"), 1, "")
    assert victim.read_text() == "keep\n"
    # where a host keeps ROOST_* through sudo (env_keep), roost refuses them itself
    for name, value in (
        ("ROOST_ROOT", str(forged)),
        ("ROOST_RUN", str(forged)),
        ("ROOST_CONFIG", str(forged / "roost.yaml")),
        ("ROOST_PROFILES", str(forged)),
        ("ROOST_SYSLOG", str(forged / "log")),
    ):
        r = inst.as_user(cast.eve, "env", f"{name}={value}", "sudo", "-n", str(inst.roost_bin), "image", "list")
        refused(r, 2, f"{name} is set")
        r = inst.as_user(cast.eve, "env", f"{name}={value}", "sudo", "-n", str(inst.schroot_bin), "-l")
        refused(r, 1, f"{name} is set")
    # without SETENV in the rule, sudo refuses -E and VAR=value itself:
    r = inst.as_user(cast.eve, "env", f"ROOST_ROOT={forged}", "sudo", "-n", "-E", str(inst.roost_bin), "image", "list")
    assert r.code != 0 and "roost" not in r.out
    r = inst.as_user(cast.eve, "sudo", "-n", f"ROOST_ROOT={forged}", str(inst.roost_bin), "image", "list")
    assert r.code != 0
    assert victim.read_text() == "keep\n"


def test_2_records_are_believed_only_from_roots_nobody_else_can_write(cast: Cast) -> None:
    """Root itself pointing roost at a user-writable state root is refused too."""
    inst = cast.inst
    forged = _forged_state(cast)
    env = {"PATH": "/usr/bin:/bin", "ROOST_ROOT": str(forged), "ROOST_RUN": str(forged / "run")}
    proc = subprocess.run(
        [str(inst.roost_bin), "session", "run", "x", "--", "/usr/bin/id"], capture_output=True, text=True, env=env
    )
    refused(type("R", (), {"code": proc.returncode, "err": proc.stderr})(), 5, "refusing to use")
    assert (forged.parent / "victim" / "file").read_text() == "keep\n"


def test_2_a_record_that_names_other_places_is_refused(cast: Cast) -> None:
    """A record in the real state root that names / as its mount point and a victim as its clone."""
    inst = cast.inst
    sid = _begin(cast, cast.bob)
    victim = inst.base / "victim-dir"
    victim.mkdir()
    (victim / "file").write_text("keep\n")
    record = inst.state / "sessions" / f"{sid}.json"
    original = record.read_text()
    data = json.loads(original)
    try:
        data.update(mountpoint="/", clone=str(victim))
        record.write_text(json.dumps(data))
        for args in (("session", "run", sid, "--", "/bin/true"), ("session", "end", sid)):
            refused(inst.sudo(cast.bob, *args), 5, "refusing it")
        refused(inst.sudo_schroot(cast.bob, "-r", "-c", f"session:{sid}", "--", "/bin/true"), 1, "refusing it")
        assert (victim / "file").read_text() == "keep\n"
    finally:
        record.write_text(original)
        _end(cast, sid)
        (victim / "file").unlink()
        victim.rmdir()


# --- 3. export, rollback, convert, remove and gc checked no access -----------------------------


def test_3_image_operations_are_refused_without_rights(cast: Cast) -> None:
    inst = cast.inst
    sid = _begin(cast, cast.rita, "shared", "--maintenance")
    inst.sudo(cast.rita, "session", "run", sid, "--", "/bin/sh", "-c", "echo 2 > /gen")
    r = inst.sudo(cast.rita, "session", "promote", sid, "-m", "two")
    assert r.code == 0, r.err
    before = state_fingerprint(inst)
    home = inst.home(cast.eve)
    for args, words in (
        (("image", "export", "shared", f"{home}/out.tar"), "may not export"),
        (("image", "export", "shared", "/root/out.tar"), "may not export"),
        (("image", "rollback", "shared"), "may not roll back"),
        (("image", "convert", "shared", "--backend", "dir"), "may not convert"),
        (("image", "convert", "shared", "--backend", "dir", "--to", "copy"), "may not convert"),
        (("image", "remove", "shared", "--force"), "may not remove"),
        (("image", "gc", "shared", "--keep", "1"), "may not garbage-collect"),
        (("image", "gc", "--keep", "1"), "may not garbage-collect"),
        (("image", "history", "private"), "may not see"),
    ):
        refused(inst.sudo(cast.eve, *args), 2, words)
    for args, words in (
        (("image", "rollback", "shared"), "root-users"),
        (("image", "export", "shared", f"{inst.home(cast.bob)}/out.tar"), "root-users"),
        (("image", "remove", "shared"), "admin group"),
    ):
        refused(inst.sudo(cast.bob, *args), 2, words)
    assert state_fingerprint(inst) == before
    assert not (home / "out.tar").exists() and not os.path.exists("/root/out.tar")
    # a root-user exports where *they* may write, not where root may
    refused(inst.sudo(cast.rita, "image", "export", "shared", "/root/out.tar"), 2, "")
    assert not os.path.exists("/root/out.tar")
    out = inst.home(cast.rita) / "shared.tar"
    r = inst.sudo(cast.rita, "image", "export", "shared", str(out))
    assert r.code == 0, r.err
    assert out.stat().st_uid == pwd.getpwnam(cast.rita).pw_uid
    out.unlink()
    r = inst.sudo(cast.rita, "image", "rollback", "shared")
    assert r.code == 0, r.err


# --- 4. error lines echoed root-only files ----------------------------------------------------


def test_4_files_a_caller_names_are_read_with_the_callers_rights(cast: Cast) -> None:
    inst = cast.inst
    secret = inst.base / "secret"
    secret.write_text("[chroot]\ntype=directory\nTOPSECRET-LINE=1\n")
    secret.chmod(0o600)
    for user in (cast.eve, cast.ada):
        for args in (
            ("image", "import-schroot", str(secret), "--dry-run"),
            ("image", "import-schroot", "/etc/shadow", "--dry-run"),
            ("batch", "/etc/shadow"),
            ("batch", str(secret)),
            ("batch", "--check", str(secret)),
        ):
            r = inst.sudo(user, *args)
            refused(r, 2, "Permission denied")
            assert "TOPSECRET" not in r.err + r.out and "root:" not in r.err + r.out
    # a schroot directory whose copyfiles is a symlink to a root-only file
    conf = inst.home(cast.ada) / "schroot"
    script = (
        f"mkdir -p {conf}/chroot.d {conf}/default {conf}/tree && "
        f"printf '[c]\\ntype=directory\\ndirectory={conf}/tree\\n' > {conf}/chroot.d/c && "
        f"ln -s {secret} {conf}/default/copyfiles && ln -s /etc/shadow {conf}/default/nssdatabases"
    )
    assert inst.as_user(cast.ada, "/bin/sh", "-c", script).code == 0
    r = inst.sudo(cast.ada, "image", "import-schroot", "--all", "--schroot-dir", str(conf), "--dry-run")
    assert r.code == 0, r.err
    assert "TOPSECRET" not in r.out + r.err and "root:" not in r.out + r.err
    # an admin through sudo imports only what they could read themselves
    unreadable = inst.base / "unreadable-tree"
    subprocess.run(["cp", "-a", str(inst.home(cast.ada) / "schroot" / "tree"), str(unreadable)], check=True)
    (unreadable / "only-root").write_text("x")
    (unreadable / "only-root").chmod(0o600)
    r = inst.sudo(cast.ada, "image", "create", "stolen", "--from-dir", str(unreadable))
    assert r.code != 0 and "Traceback" not in r.err, r
    assert not (inst.state / "images" / "stolen").exists()
    tarball = inst.base / "secret.tar"
    subprocess.run(["tar", "-cf", str(tarball), "-C", str(unreadable), "."], check=True)
    tarball.chmod(0o600)
    refused(inst.sudo(cast.ada, "image", "create", "stolen", "--from-tar", str(tarball)), 2, "")
    assert not (inst.state / "images" / "stolen").exists()


# --- 5. a name that was another image's alias --------------------------------------------------


def test_5_names_and_aliases_are_one_namespace(cast: Cast, busybox_tree: Path) -> None:
    inst = cast.inst
    tree = inst.home(cast.ada) / "tree5"
    subprocess.run(["cp", "-a", str(busybox_tree), str(tree)], check=True)
    subprocess.run(["chown", "-R", f"{cast.ada}:", str(tree)], check=True)
    refused(inst.sudo(cast.ada, "image", "create", "shared-alias", "--from-dir", str(tree)), 3, "alias of image shared")
    assert not (inst.state / "images" / "shared-alias").exists()
    # a clash made by hand-editing image.yaml is refused, not resolved in anyone's favour
    grant(inst, "private", aliases=["shared"])
    try:
        r = inst.sudo_schroot(cast.bob, "-c", "shared", "--", "/bin/true")
        assert r.code == 1 and "alias of image private" in r.err, r
    finally:
        grant(inst, "private", aliases=[])


# --- 6. a session named X.json -------------------------------------------------------------------


def test_6_session_names_cannot_collide_with_records(cast: Cast) -> None:
    inst = cast.inst
    sid = _begin(cast, cast.bob)
    try:
        record = (inst.state / "sessions" / f"{sid}.json").read_bytes()
        for name in (f"{sid}.json", "y.json", "x.lock", "a.tmp-1-2", "n.yaml", "w.lock.wait-1"):
            refused(inst.sudo(cast.bob, "session", "begin", "shared", "--name", name), 2, "roost's own files")
            refused(inst.sudo_schroot(cast.bob, "-b", "-c", "shared", "-n", name), 1, "roost's own files")
        assert (inst.state / "sessions" / f"{sid}.json").read_bytes() == record
        r = inst.sudo(cast.bob, "session", "run", sid, "--", "/bin/true")
        assert r.code == 0, r.err
        # a directory named like a record (left by anything) does not break recover --all
        (inst.state / "sessions" / "y.json").mkdir()
        try:
            r = inst.root("session", "recover", "--all")
            assert r.code == 0, r.err
        finally:
            (inst.state / "sessions" / "y.json").rmdir()
    finally:
        _end(cast, sid)


# --- 7. a users-level member promoted, with the host's accounts in the session ------------------


def test_7_only_root_users_promote_and_host_accounts_never_enter_a_generation(cast: Cast) -> None:
    inst = cast.inst
    sid = _begin(cast, cast.bob)
    try:
        passwd = inst.sudo(cast.bob, "session", "run", sid, "--", "/bin/cat", "/etc/passwd").out
        assert cast.eve in passwd  # the default profile merges the host's users in
        refused(inst.sudo(cast.bob, "session", "promote", sid), 2, "root-users")
        before = json.loads(inst.root_ok("image", "history", "shared", "--json"))
        assert len(before) == len(json.loads(inst.root_ok("image", "history", "shared", "--json")))
        r = inst.sudo(cast.rita, "session", "run", sid, "-u", "root", "--", "/bin/sh", "-c", "echo seven > /seven")
        assert r.code == 0, r.err
        r = inst.sudo(cast.rita, "session", "promote", sid, "-m", "ordinary session promoted")
        assert r.code == 0, r.err
    except BaseException:
        _end(cast, sid)
        raise
    # A maintenance session merges its owner's account only (sbuild checks `getent passwd USER`
    # and would otherwise add the user to the image); promote takes it out again.
    check = _begin(cast, cast.rita, "shared", "--maintenance")
    promoted = False
    try:
        out = inst.sudo(cast.rita, "session", "run", check, "-u", "root", "--", "/bin/cat", "/etc/passwd", "/seven").out
        assert "seven" in out and f"\n{cast.rita}:" in out
        for user in (cast.eve, cast.bob, cast.ada, "root:x:0:0:root:/root:/bin/bash"):
            assert user not in out, out
        r = inst.sudo(cast.rita, "session", "run", check, "-u", "root", "--", "/bin/sh", "-c", "echo 8 > /eight")
        assert r.code == 0, r.err
        r = inst.sudo(cast.rita, "session", "promote", check, "-m", "eight")
        assert r.code == 0, r.err
        promoted = True
        r = inst.sudo(cast.rita, "image", "diff", "shared", "--json")
        assert r.code == 0, r.err
        assert [f["path"] for f in json.loads(r.out)["files"]] == ["/eight"]  # the account left no trace
    finally:
        if not promoted:
            _end(cast, check)


# --- 8. mmdebstrap options through --mirror -----------------------------------------------------


def test_8_helper_programs_never_take_a_value_as_an_option(cast: Cast) -> None:
    inst = cast.inst
    canary = inst.base / "pwned"
    for args in (
        ("--mirror", f"--setup-hook=touch {canary}"),
        ("--mirror", f"--customize-hook=touch {canary}"),
        ("--mirror", "file:///root"),
        ("--include", f"--setup-hook=touch {canary}"),
        ("--include", "/root/x.deb"),
        ("--arch", "--verbose"),
        ("--variant", "--help"),
    ):
        refused(inst.sudo(cast.ada, "image", "create", "m", "--mmdebstrap", "bookworm", *args), 2, "")
    refused(inst.sudo(cast.ada, "image", "create", "m", "--mmdebstrap", "--setup-hook=x"), 2, "")
    refused(inst.sudo(cast.ada, "image", "create", "m", "--from-dir", "--preserve=all"), 2, "")
    assert not canary.exists()
    assert not (inst.state / "images" / "m").exists()


# --- 9. session roots reachable by everyone -------------------------------------------------------


def test_9_nobody_but_its_owner_reaches_a_session_and_nobody_a_generation(cast: Cast) -> None:
    """Session roots sit behind a gate only their owner may pass (sbuild checks its session's root exists)."""
    inst = cast.inst
    sid = _begin(cast, cast.bob)
    try:
        mnt = inst.runtime / "mnt"
        assert stat.S_IMODE(mnt.stat().st_mode) == 0o711  # walk through, never list
        assert stat.S_IMODE((mnt / sid).stat().st_mode) == 0o710  # root's; the group bits show the ACL's mask
        assert stat.S_IMODE((mnt / ".stage").stat().st_mode) == 0o700
        inside = mnt / sid / "root" / "bin" / "busybox"
        layer = inst.state / "images" / "shared" / "generations" / "1" / "layer" / "bin" / "busybox"
        for path, users in ((inside, (cast.eve, cast.gus, cast.rita)), (layer, (cast.eve, cast.bob, cast.rita))):
            for user in users:
                r = inst.as_user(user, "/bin/ls", str(path))
                assert r.code != 0 and "Permission denied" in r.err, (path, user, r)
        for user in (cast.eve, cast.bob):
            r = inst.as_user(user, "/bin/ls", str(mnt))
            assert r.code != 0 and "Permission denied" in r.err, r
        r = inst.as_user(cast.bob, "/bin/sh", "-c", f"test -d {mnt / sid / 'root'} && ls {inside}")
        assert r.code == 0, r  # the owner, as schroot lets a session's user see its location
        clone = inst.state / "sessions" / sid
        assert stat.S_IMODE(clone.stat().st_mode) == 0o700
    finally:
        _end(cast, sid)


# --- 10. unmounts redirected through a planted symlink -----------------------------------------


def test_10_an_unmount_never_follows_a_symlink_to_someone_elses_mount(cast: Cast) -> None:
    """A mount point's path gets a symlink in the way: the mount is refused, never another one unmounted."""
    from core import mounts, syscalls

    inst = cast.inst
    elsewhere = inst.base / "elsewhere"
    (elsewhere / "inner").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "canary", str(elsewhere / "inner")], check=True)
    decoy = inst.base / "decoy"
    (decoy / "inner").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "decoy", str(decoy / "inner")], check=True)
    try:
        target = [m for m in mounts.mounts() if m.target == str(decoy / "inner")][-1]
        assert mounts.is_mount_root(str(decoy / "inner")) and not mounts.is_mount_root(str(decoy))
        os.rename(decoy, inst.base / "decoy.moved")
        os.symlink(str(elsewhere), decoy)  # the path the table named now leads to the canary mount
        with pytest.raises(OSError):
            mounts.umount_exact(target)
        # the check a command's start makes (is the session's root mounted?) is not fooled either
        assert not mounts.is_mount_root(str(decoy / "inner"))
        assert mounts.is_mount_root(str(elsewhere / "inner"))
        assert mounts.is_mounted(str(elsewhere / "inner"))
        assert mounts.is_mounted(str(inst.base / "decoy.moved" / "inner"))
    finally:
        if decoy.is_symlink():
            decoy.unlink()
        for path in (elsewhere / "inner", inst.base / "decoy.moved" / "inner", decoy / "inner"):
            if mounts.is_mounted(str(path)):
                syscalls.umount(str(path))
        for path in (elsewhere / "inner", elsewhere, inst.base / "decoy.moved" / "inner", inst.base / "decoy.moved"):
            if path.exists():
                path.rmdir()


def test_10_symlinks_at_every_bind_target_keep_mounts_inside_the_session(cast: Cast, busybox_tree: Path) -> None:
    """An image whose mount targets are symlinks out of it: mounts land inside, end takes down only those."""
    from core import mounts

    inst = cast.inst
    outside = inst.base / "host-dir"
    outside.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "host-canary", str(outside)], check=True)
    tree = inst.base / "hostile-tree"
    subprocess.run(["cp", "-a", str(busybox_tree), str(tree)], check=True)
    for rel in ("home", "proc", "sys", "dev", "build"):
        path = tree / rel
        if path.is_dir() and not path.is_symlink():
            subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)
        os.symlink(str(outside), path)
    try:
        inst.root_ok("image", "create", "hostile", "--from-dir", str(tree))
        grant(inst, "hostile", users=[cast.bob])
        sid = _begin(cast, cast.bob, "hostile")
        inside = [m.target for m in mounts.mounts_below(str(inst.runtime / "mnt" / sid))]
        assert any(t.endswith(str(outside) + "/proc") or t.endswith(str(outside)) for t in inside), inside
        assert [m.target for m in mounts.mounts() if m.target.startswith(str(outside))] == [str(outside)]
        r = inst.sudo(cast.bob, "session", "end", sid)
        assert r.code == 0, r.err
        assert mounts.is_mounted(str(outside))
        assert mounts.mounts_below(str(inst.runtime / "mnt" / sid)) == []
        # a target that loops through its own image is refused with one line, and nothing stays mounted
        (tree / "tmp").rmdir()
        os.symlink(str(outside), tree / "tmp")
        inst.root_ok("image", "create", "looping", "--from-dir", str(tree))
        grant(inst, "looping", users=[cast.bob])
        refused(inst.sudo(cast.bob, "session", "begin", "looping"), 5, "symbolic links")
        assert mounts.mounts_below(str(inst.runtime / "mnt")) == []
        assert mounts.is_mounted(str(outside))
    finally:
        for image in ("hostile", "looping"):
            inst.root("image", "remove", "--force", image)
        subprocess.run(["umount", str(outside)], check=False)
        outside.rmdir()
        subprocess.run(["rm", "-rf", "--one-file-system", str(tree)], check=True)


# --- 11. recover without an owner check, no session limit ---------------------------------------


def test_11_recover_checks_the_owner_and_sessions_per_user_are_limited(cast: Cast) -> None:
    inst = cast.inst
    sid = _begin(cast, cast.bob)
    try:
        refused(inst.sudo(cast.eve, "session", "recover", sid), 2, "")
        refused(inst.sudo(cast.gus, "session", "recover", sid), 2, "someone else's")
        refused(inst.sudo(cast.gus, "session", "end", sid), 2, "someone else's")
        refused(inst.sudo(cast.gus, "session", "run", sid, "--", "/bin/true"), 2, "someone else's")
        refused(inst.sudo(cast.eve, "session", "recover", "--all"), 2, "admin group")
        assert inst.sudo(cast.bob, "session", "recover", sid).code == 0
        more = [_begin(cast, cast.bob), _begin(cast, cast.bob)]
        refused(inst.sudo(cast.bob, "session", "begin", "shared"), 3, "max-sessions-per-user")
        refused(inst.sudo_schroot(cast.bob, "-b", "-c", "shared"), 1, "max-sessions-per-user")
        for other in more:
            _end(cast, other)
        r = inst.sudo(cast.ada, "session", "begin", "shared")  # administrators are not counted
        assert r.code == 0, r.err
        _end(cast, r.out.strip())
    finally:
        _end(cast, sid)


# --- listings show what the caller may use ---------------------------------------------------------


def test_listings_show_only_what_the_caller_may_use(cast: Cast) -> None:
    inst = cast.inst
    sid = _begin(cast, cast.bob)
    try:
        names = {i["name"] for i in json.loads(inst.sudo(cast.eve, "image", "list", "--json").out)}
        assert names == set()
        names = {i["name"] for i in json.loads(inst.sudo(cast.gus, "image", "list", "--json").out)}
        assert names == {"shared"}
        assert json.loads(inst.sudo(cast.eve, "session", "list", "--json").out) == []
        assert json.loads(inst.sudo(cast.gus, "session", "list", "--json").out) == []
        assert [s["id"] for s in json.loads(inst.sudo(cast.rita, "session", "list", "--json").out)] == [sid]
        assert inst.sudo_schroot(cast.eve, "-l").out == ""
        assert "chroot:shared" in inst.sudo_schroot(cast.gus, "-l").out.split()
        assert "source:shared" not in inst.sudo_schroot(cast.gus, "-l", "--all-source-chroots").out
        locks = json.loads(inst.sudo(cast.eve, "locks", "--json").out)
        assert all(not lock["lock"].startswith(("session.", "image.")) for lock in locks), locks
        refused(inst.sudo(cast.eve, "doctor", "--check"), 2, "admin group")
    finally:
        _end(cast, sid)


def test_doctor_reports_roots_open_to_others(cast: Cast) -> None:
    inst = cast.inst
    mnt = inst.runtime / "mnt"
    mnt.chmod(0o755)
    inst.state.chmod(0o777)
    try:
        r = inst.root("doctor", "--check", "--json")
        problems = json.loads(r.out)["problems"]
        assert r.code == 5
        assert any("state root" in p and "writable by others" in p for p in problems), problems
        assert any("mount directory" in p and "0711" in p for p in problems), problems
    finally:
        inst.state.chmod(0o755)
        mnt.chmod(0o711)
    assert fingerprint(inst.base / "etc")  # the installation itself was never touched


def test_locks_and_the_journal_name_the_person_behind_sudo(cast: Cast) -> None:
    inst = cast.inst
    sid = _begin(cast, cast.rita, "shared", "--maintenance")
    try:
        (writer,) = [
            lk for lk in json.loads(inst.sudo(cast.rita, "locks", "--json").out) if lk["lock"] == "writer.shared"
        ]
        assert writer["user"] == cast.rita
        info = json.loads(inst.sudo(cast.rita, "session", "info", sid, "--json").out)
        assert info["owner"] == cast.rita
    finally:
        r = inst.sudo(cast.rita, "session", "end", sid)
        assert r.code == 0, r.err
    last = json.loads((inst.state / "journal.jsonl").read_text().splitlines()[-1])
    assert (last["user"], last["operation"]) == (cast.rita, "session end")


def test_diffs_show_a_session_to_those_who_may_see_it_and_generations_to_root_users(cast: Cast) -> None:
    """A session's diff is its owner's (and root-users'); a generation's names paths only root may list."""
    inst = cast.inst
    sid = _begin(cast, cast.bob)
    try:
        r = inst.sudo(cast.bob, "session", "diff", sid, "--json")  # its owner
        assert r.code == 0, r.err
        assert json.loads(r.out)["to"]["session"] == sid
        r = inst.sudo(cast.rita, "session", "diff", sid, "--summary")  # a root-user of the image
        assert r.code == 0, r.err
        for user in (cast.eve, cast.gus):  # nobody's, and a user of the image who is not the owner
            refused(inst.sudo(user, "session", "diff", sid), 2, "may not see session")
        for user in (cast.eve, cast.bob, cast.gus):
            refused(inst.sudo(user, "image", "diff", "shared", "1", "1"), 2, "may not see the changes in")
        r = inst.sudo(cast.rita, "image", "diff", "shared", "1", "1", "--json")
        assert r.code == 0 and json.loads(r.out)["files"] == [], r.err
    finally:
        _end(cast, sid)

"""sbuild end to end: a chroot made by sbuild-createchroot, imported, built in, updated, built in again.

sbuild-createchroot really runs (debootstrap from the Debian archive) and
writes its chroot.d file and /etc/sbuild/chroot link, which are removed
afterwards. sbuild is pointed at the front door with the one line a build
host adds to its sbuild configuration (``$conf->set('SCHROOT', …)``); the
host's /usr/bin/schroot is never touched.
"""

from __future__ import annotations

import glob
import grp
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.env import REPO, Env, need_root
from tests.support.mounts import mounts_under
from tests.support.sbuild import front_door, sbuild

pytestmark = pytest.mark.slow

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"


def _arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


@dataclass
class Created:
    """What sbuild-createchroot made: the tree, its chroot.d file, its name and alias."""

    name: str
    alias: str
    tree: Path
    conf: Path


@pytest.fixture(scope="module")
def createchroot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Created]:
    need_root()
    for tool in ("sbuild-createchroot", "sbuild", "sbuild-update", "debootstrap"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (apt-get install sbuild debootstrap)")
    base = Path(tempfile.mkdtemp(prefix="roost-sbuild-", dir=tmp_path_factory.getbasetemp()))
    prefix = f"roost-test-{os.getpid()}"
    name = f"{prefix}-{_arch()}-sbuild"
    alias = f"{prefix}-alias"
    tree = base / "chroot"
    link_dir = Path("/etc/sbuild/chroot")
    link_dir_existed = link_dir.exists()
    before = set(os.listdir("/etc/schroot/chroot.d"))
    try:
        proc = subprocess.run(
            ["sbuild-createchroot", f"--chroot-prefix={prefix}", f"--alias={alias}", SUITE, str(tree), MIRROR],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=1200,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        written = [f for f in set(os.listdir("/etc/schroot/chroot.d")) - before if f.startswith(name)]
        assert len(written) == 1, written
        yield Created(name, alias, tree, Path("/etc/schroot/chroot.d") / written[0])
    finally:
        for f in set(os.listdir("/etc/schroot/chroot.d")) - before:
            if f.startswith(name):
                os.unlink(os.path.join("/etc/schroot/chroot.d", f))
        link = link_dir / name
        if link.is_symlink():
            link.unlink()
        if not link_dir_existed and link_dir.exists() and not os.listdir(link_dir):
            link_dir.rmdir()
        assert mounts_under(base) == [], "sbuild-createchroot left mounts behind"
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=True)


@pytest.fixture(scope="module")
def hello_dsc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hello source package, fetched with apt-get source (private lists, nothing changed on the host)."""
    need_root()
    base = tmp_path_factory.mktemp("hello-source")
    apt = base / "apt"
    for d in ("lists/partial", "cache/archives/partial", "parts"):
        (apt / d).mkdir(parents=True)
    (apt / "sources.list").write_text(f"deb-src {MIRROR} {SUITE} main\n")
    options = [
        f"-oDir::Etc::SourceList={apt / 'sources.list'}",
        f"-oDir::Etc::SourceParts={apt / 'parts'}",
        f"-oDir::State::Lists={apt / 'lists'}",
        f"-oDir::Cache={apt / 'cache'}",
        "-oAPT::Sandbox::User=root",
        "-qq",
    ]
    subprocess.run(["apt-get", *options, "update"], check=True, timeout=600)
    src = base / "src"
    src.mkdir()
    subprocess.run(["apt-get", *options, "source", "--download-only", "hello"], cwd=src, check=True, timeout=600)
    found = sorted(src.glob("hello_*.dsc"))
    assert len(found) == 1, found
    return found[0]


def import_created(env: Env, created: Created) -> dict[str, object]:
    r = env.roost("image", "import-schroot", str(created.conf), "--json", timeout=600)
    assert r.code == 0, r.err
    result = r.json()
    assert result["skipped"] == []
    (entry,) = result["chroots"]
    return entry  # type: ignore[no-any-return]


def test_import_of_sbuild_createchroot_gives_a_working_image(env: Env, createchroot: Created) -> None:
    entry = import_created(env, createchroot)
    assert entry["imported"] and entry["error"] is None and entry["image"] == createchroot.name
    assert entry["profile"] == "sbuild" and entry["type"] == "directory"
    assert entry["settings"] == {
        "groups": ["root", "sbuild"],
        "root-groups": ["root", "sbuild"],
        "aliases": [createchroot.alias],
    }
    # union-type is what sbuild-createchroot found (overlay, or none where modprobe is unavailable);
    # every note names a key the import could not carry over as it was
    assert all("=" in note for note in entry["notes"]), entry["notes"]  # type: ignore[union-attr]
    info = env.roost("image", "info", createchroot.name, "--json").json()
    assert info["aliases"] == [createchroot.alias] and info["profile"] == "sbuild"
    description = (env.state / "images" / createchroot.name / "image.yaml").read_text()
    assert f"description: Debian {SUITE}/{_arch()} autobuilder" in description
    # it works: by name and by alias, through the front door and the headless command line
    r = env.roost("schroot", "-c", createchroot.alias, "--", "sh", "-c", "dpkg -s build-essential >/dev/null && pwd")
    assert (r.code, r.out) == (0, "/\n"), r.err
    r = env.roost(
        "run", createchroot.name, "--", "sh", "-c", "getent group sbuild >/dev/null && cat /etc/debian_version"
    )
    assert r.code == 0 and r.out.startswith("12."), r.err
    r = env.roost("schroot", "-l", "--all-source-chroots")
    assert r.out.splitlines() == sorted([f"source:{createchroot.name}", f"source:{createchroot.alias}"])
    # the original tree and its chroot.d file are only read
    assert createchroot.conf.exists() and (createchroot.tree / "etc" / "debian_version").exists()
    # importing again is refused, and changes nothing
    r = env.roost("image", "import-schroot", str(createchroot.conf))
    assert r.code == 3 and "already exists" in r.out


def _begins(env: Env, image: str) -> list[int]:
    """The generation of every session begun on *image*, from the journal."""
    with open(env.state / "journal.jsonl", encoding="utf-8") as f:
        entries = [json.loads(line) for line in f]
    return [
        e["generation"]
        for e in entries
        if e.get("operation") == "session begin" and e.get("image") == image and e.get("result") == "ok"
    ]


def _check_build(out: Path, dsc: Path) -> None:
    version = dsc.name.removeprefix("hello_").removesuffix(".dsc")
    debs = sorted(glob.glob(str(out / f"hello_{version}_*.deb")))
    assert len(debs) == 1, sorted(os.listdir(out))
    fields = subprocess.run(
        ["dpkg-deb", "--field", debs[0], "Package", "Version"], capture_output=True, text=True, check=True
    ).stdout
    assert fields == f"Package: hello\nVersion: {version}\n"
    contents = subprocess.run(["dpkg-deb", "--contents", debs[0]], capture_output=True, text=True, check=True).stdout
    assert "./usr/bin/hello" in contents
    changes = (out / f"hello_{version}_{_arch()}.changes").read_text()
    assert "Source: hello" in changes


def test_sbuild_builds_through_the_front_door_and_again_after_sbuild_update(
    env: Env, createchroot: Created, hello_dsc: Path
) -> None:
    entry = import_created(env, createchroot)
    image = str(entry["image"])
    # `sbuild -d bookworm` looks for bookworm-<arch>-sbuild: give the image that alias in its image.yaml
    config_path = env.state / "images" / image / "image.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["aliases"] = [*config["aliases"], f"{SUITE}-{_arch()}-sbuild"]
    config_path.write_text(yaml.safe_dump(config))

    base = env.base / "sbuild"
    base.mkdir()
    launcher = front_door(env, base)
    sbuildrc = base / "sbuildrc"
    sbuildrc.write_text(
        f"$conf->set('SCHROOT', '{launcher}');  # the one line that moves sbuild to roost\n"
        "$run_lintian = 0;\n$run_autopkgtest = 0;\n$run_piuparts = 0;\n1;\n"
    )
    first = base / "first"
    first.mkdir()
    r = sbuild(sbuildrc, first, "sbuild", "-d", SUITE, str(hello_dsc))
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-2000:])
    _check_build(first, hello_dsc)
    log = (first / f"{hello_dsc.stem}_{_arch()}.build").read_text()
    assert f"replace '{str(env.run / 'mnt').lstrip('/')}/" in log  # the session's root, from `schroot -i`
    assert "Status: successful" in log
    assert _begins(env, image) == [1]

    # sbuild-update maintains the image through source:, which promotes it into generation 2
    r = sbuild(sbuildrc, base, "sbuild-update", "-udcar", SUITE)
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-2000:])
    history = env.roost("image", "history", image, "--json").json()
    assert [g["generation"] for g in history] == [1, 2] and history[-1]["current"]
    assert history[-1]["message"].startswith(f"schroot source:{SUITE}-{_arch()}-sbuild session ")
    assert env.roost("session", "list", "--json").json() == []

    second = base / "second"
    second.mkdir()
    r = sbuild(sbuildrc, second, "sbuild", "-d", SUITE, str(hello_dsc))
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-2000:])
    _check_build(second, hello_dsc)
    assert _begins(env, image) == [1, 1, 2]  # the first build, sbuild-update's source session, the second build
    assert env.roost("session", "list", "--json").json() == []
    assert REPO.exists()


def test_sbuild_as_an_ordinary_user_through_the_sudo_wrapper(createchroot: Created, hello_dsc: Path) -> None:
    """What docs/schroot.md tells a build host: a wrapper running `sudo roost-schroot`, a sudo rule, no -E.

    The image is adopted from sbuild-createchroot's output with the one command docs/schroot.md
    gives; the ordinary user builds, updates the image with sbuild-update, publishes it and
    builds again with sbuild's unshare mode from the published tarball.
    """
    from tests.support import sudo

    inst = sudo.make_installation("roost-t-sb")
    try:
        builder = inst.add_user("builder", ["sbuild"])
        inst.allow_sudo()
        # sbuild-createchroot's output, adopted in one command (docs/schroot.md, "sbuild-createchroot")
        r = inst.root("image", "import-schroot", "--all", "--chroot", createchroot.name, "--json", timeout=600)
        assert r.code == 0, r.err
        assert [c["image"] for c in json.loads(r.out)["chroots"] if c["imported"]] == [createchroot.name]
        image = createchroot.name
        config_path = inst.state / "images" / image / "image.yaml"
        config = yaml.safe_load(config_path.read_text())
        assert "sbuild" in config["root-groups"]  # as sbuild-createchroot wrote it: root-groups=root,sbuild
        config["aliases"] = [*config["aliases"], f"{SUITE}-{_arch()}-sbuild"]
        config_path.write_text(yaml.safe_dump(config))
        home = inst.home(builder)
        wrapper = inst.base / "bin" / "roost-schroot-sudo"
        wrapper.write_text(f'#!/bin/sh\nexec sudo -n {inst.schroot_bin} "$@"\n')
        wrapper.chmod(0o755)
        script = (
            f"mkdir -p {home}/build && cp {hello_dsc.parent}/hello_* {home}/build/ && "
            f"printf \"%s\\n\" \"\\$conf->set('SCHROOT', '{wrapper}');\" '$run_lintian = 0;' "
            f"'$run_autopkgtest = 0;' '$run_piuparts = 0;' '1;' > {home}/.sbuildrc"
        )
        for path in hello_dsc.parent.glob("hello_*"):
            path.chmod(0o644)
        hello_dsc.parent.chmod(0o755)
        for parent in hello_dsc.parents:
            if str(parent).startswith("/tmp/pytest-of-root"):
                parent.chmod(parent.stat().st_mode | 0o005)  # the builder copies the source from here
        r = inst.as_user(builder, "/bin/sh", "-c", script)
        assert r.code == 0, r.err
        r = inst.as_user(builder, "sbuild", "-d", SUITE, hello_dsc.name, cwd=home / "build", timeout=1800)
        assert r.code == 0, (r.out[-4000:], r.err[-2000:])
        _check_build(home / "build", hello_dsc)
        built = next((home / "build").glob("hello_*.deb"))
        assert built.stat().st_uid == inst.home(builder).stat().st_uid  # the build is the builder's
        journal = [json.loads(line) for line in (inst.state / "journal.jsonl").read_text().splitlines()]
        begins = [e for e in journal if e["operation"] == "session begin" and e.get("image") == image]
        assert begins and all(e["user"] == builder for e in begins)
        assert json.loads(inst.root_ok("session", "list", "--json")) == []

        # sbuild-update as the same user: a source: session through the wrapper, promoted under their name
        r = inst.as_user(builder, "sbuild-update", "-udcar", SUITE, timeout=1800)
        assert r.code == 0, (r.out[-4000:], r.err[-2000:])
        history = json.loads(inst.root_ok("image", "history", image, "--json"))
        assert [g["generation"] for g in history] == [1, 2] and history[-1]["current"]
        assert history[-1]["author"] == builder
        assert history[-1]["message"].startswith(f"schroot source:{SUITE}-{_arch()}-sbuild session ")
        assert json.loads(inst.root_ok("session", "list", "--json")) == []

        # the unshare world: the user publishes generation 2 into their ~/.cache/sbuild, sbuild unpacks it
        r = inst.sudo(builder, "image", "publish", image, "--sbuild-tarball", "--json", timeout=600)
        assert r.code == 0, r.err
        tarball = home / ".cache" / "sbuild" / f"{SUITE}-{_arch()}.tar.zst"
        assert r.json()["path"] == str(tarball) and r.json()["generation"] == 2
        assert tarball.stat().st_uid == home.stat().st_uid
        assert any(line.startswith(f"{builder}:") for line in Path("/etc/subuid").read_text().splitlines())
        unshared = home / "unshare"
        r = inst.as_user(
            builder,
            "/bin/sh",
            "-c",
            f"mkdir {unshared} && cp {home}/build/hello_*.dsc {home}/build/hello_*.tar.* {unshared}/",
        )
        assert r.code == 0, r.err
        r = inst.as_user(
            builder, "sbuild", "--chroot-mode=unshare", "-d", SUITE, hello_dsc.name, cwd=unshared, timeout=1800
        )
        assert r.code == 0, (r.out[-4000:], r.err[-2000:])
        _check_build(unshared, hello_dsc)
        log = next(unshared.glob("hello_*.build")).read_text()
        assert f"Unpacking {tarball} to " in log and "Status: successful" in log
        assert json.loads(inst.root_ok("session", "list", "--json")) == []
    finally:
        sudo.remove(inst)


def test_sbuild_as_an_ordinary_user_in_rootless_sessions_with_no_sudo(hello_dsc: Path, debian_tarball: Path) -> None:
    """sbuild run by an ordinary user with subordinate ids, SCHROOT pointed at roost-schroot, no sudo rule.

    The user makes their own image from the suite's Debian tarball, sbuild builds hello in a rootless
    session (a holder's namespaces: nothing in the host's mount table), and sbuild-update -udcar
    promotes the image through a source: session.
    """
    from tests.support.mounts import mounts_naming
    from tests.support.rootless import ROOST
    from tests.support.rootless_users import kill, make_user, processes_of, remove_user

    user = make_user(f"roost-t-r2-sb{os.getpid()}")
    try:
        home = user.home
        environ = {
            "HOME": str(home),
            "USER": user.name,
            "LOGNAME": user.name,
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "XDG_DATA_HOME": f"{home}/.local/share",
            "XDG_STATE_HOME": f"{home}/.local/state",
            "XDG_CONFIG_HOME": f"{home}/.config",
            "ROOST_SYSLOG": f"{home}/no-syslog.sock",  # never the host's syslog
            "PYTHONPATH": str(REPO),
        }

        def as_user(*argv: str, cwd: Path = home, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                user.command(*argv),
                env=environ,
                cwd=cwd,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
            )

        # sbuild's schroot mode wants its group (sbuild-adduser): that gives no privilege, only sbuild's consent
        subprocess.run(["usermod", "-a", "-G", "sbuild", user.name], check=True)
        assert as_user("sudo", "-n", "true").returncode != 0  # no sudo rule: nothing below runs as root
        tarball = home / debian_tarball.name
        shutil.copy(debian_tarball, tarball)
        os.chown(tarball, user.uid, user.gid)
        image = f"{SUITE}-{_arch()}-sbuild"  # what `sbuild -d bookworm` looks for
        r = as_user(*ROOST, "image", "create", image, "--from-tar", str(tarball), "--profile", "sbuild")
        assert r.returncode == 0, r.stderr
        # what sbuild-createchroot sets up (sbuild-update checks it, and a failed check marks its source:
        # session): sbuild's group, with the host's gid (the building user is in it by the host's gid, as
        # with schroot's copied /etc/group), and its user; promoted as generation 2
        sid = as_user(*ROOST, "session", "begin", image, "--maintenance").stdout.strip()
        gid = grp.getgrnam("sbuild").gr_gid
        script = (
            f"groupadd -g {gid} sbuild && useradd --system --home-dir /var/lib/sbuild --no-create-home "
            "--shell /bin/bash --gid sbuild sbuild"
        )
        r = as_user(*ROOST, "session", "run", sid, "-u", "root", "-d", "/", "--", "/bin/sh", "-c", script)
        assert r.returncode == 0, r.stderr
        assert as_user(*ROOST, "session", "promote", sid).returncode == 0
        # roost-schroot as a build host installs it; sbuild clears the environment of what it runs
        launcher = home / "roost-schroot"
        exports = " ".join(f"{k}={v}" for k, v in environ.items() if k != "PATH")
        launcher.write_text(f'#!/bin/sh\nexport {exports}\nexec {ROOST[0]} -m roost schroot "$@"\n')
        build = home / "build"
        build.mkdir()
        for path in hello_dsc.parent.glob("hello_*"):
            shutil.copy(path, build)
        (home / ".sbuildrc").write_text(
            f"$conf->set('SCHROOT', '{launcher}');\n$run_lintian = 0;\n$run_autopkgtest = 0;\n$run_piuparts = 0;\n1;\n"
        )
        subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(launcher), str(build), str(home / ".sbuildrc")])
        launcher.chmod(0o755)

        r = as_user("sbuild", "-d", SUITE, hello_dsc.name, cwd=build)
        logs = [p.read_text(errors="replace")[-6000:] for p in build.glob("hello_*.build")]
        assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-2000:], logs)
        _check_build(build, hello_dsc)
        assert next(build.glob("hello_*.deb")).stat().st_uid == user.uid  # the build is the user's
        log = next(build.glob("hello_*.build")).read_text()
        assert "Status: successful" in log
        sessions = as_user(*ROOST, "--json", "session", "list")
        assert sessions.returncode == 0 and json.loads(sessions.stdout) == [], sessions.stderr
        assert mounts_naming(str(home)) == []  # the sessions were mounted in their holders' namespaces only

        # sbuild-update maintains the image through source:, which promotes it into generation 3
        r = as_user("sbuild-update", "-udcar", SUITE)
        assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-2000:])
        history = json.loads(as_user(*ROOST, "--json", "image", "history", image).stdout)
        assert [g["generation"] for g in history] == [1, 2, 3] and history[-1]["current"], (r.stdout, r.stderr)
        assert history[-1]["message"].startswith(f"schroot source:{image} session ")
        assert json.loads(as_user(*ROOST, "--json", "session", "list").stdout) == []
    finally:
        leftovers = processes_of(user)
        kill(leftovers)
        remove_user(user)  # its home held its state: removed as root, whatever ids own the files
    assert not leftovers, f"processes of the sbuild user were left running: {leftovers}"

"""Foreign architectures end to end: an arm64 image through qemu-user-static, and sbuild --arch=arm64 through the door.

One arm64 image (mmdebstrap's buildd variant, really bootstrapped from the
Debian archive) serves both tests. binfmt_misc is the host's: the module
records what it looked like first, and afterwards removes every registration
roost added and unmounts it if roost mounted it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import binfmt
from tests.support.env import Env, assert_no_leaks, make_env, need_root
from tests.support.sbuild import front_door, sbuild

pytestmark = pytest.mark.slow

SUITE = "bookworm"
ARCH = "arm64"
IMAGE = f"{SUITE}-{ARCH}"


def _binfmt_entries() -> set[str]:
    if not binfmt.mounted():
        return set()
    return {e for e in os.listdir(binfmt.BINFMT_DIR) if e not in ("register", "status")}


@pytest.fixture(scope="module")
def arm64(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """An environment with image bookworm-arm64 (buildd variant, sbuild profile), made by roost itself."""
    need_root()
    for tool in ("mmdebstrap", "sbuild", "dpkg-source"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    if binfmt.registration(ARCH) is None and not binfmt.registered(ARCH):
        pytest.skip("qemu-user-static is not installed")
    was_mounted = binfmt.mounted()
    before = _binfmt_entries()
    base = Path(tempfile.mkdtemp(prefix="roost-foreign-", dir=tmp_path_factory.getbasetemp()))
    env = make_env(base)
    with open(env.config, "a", encoding="utf-8") as f:
        f.write(f"cgroup-parent: roost-t-is-{os.getpid()}\n")
    try:
        r = env.roost(
            "image", "create", IMAGE, "--mmdebstrap", SUITE, "--arch", ARCH, "--variant", "buildd",
            "--profile", "sbuild", timeout=3600,
        )  # fmt: skip
        assert r.code == 0, r.err[-3000:]
        yield env
    finally:
        for s in env.roost("session", "list", "--json").json() if env.state.exists() else []:
            env.roost("session", "end", s["id"], "--force")
        env.roost("image", "remove", "--force", IMAGE)
        for name in _binfmt_entries() - before:
            with open(os.path.join(binfmt.BINFMT_DIR, name), "w", encoding="ascii") as f:
                f.write("-1")
        if not was_mounted and binfmt.mounted():
            subprocess.run(["umount", binfmt.BINFMT_DIR], check=True)
        assert_no_leaks(base)
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=True)


def test_an_arm64_image_runs_its_binaries_and_apt_installs_a_package(arm64: Env) -> None:
    info = arm64.roost("image", "info", IMAGE, "--json").json()
    assert info["architecture"] == ARCH
    assert f"architecture: {ARCH}\n" in (arm64.state / "images" / IMAGE / "image.yaml").read_text()
    assert binfmt.registered(ARCH)  # roost registered qemu (with the F flag) as it was absent
    r = arm64.roost("run", IMAGE, "--", "sh", "-c", "dpkg --print-architecture; uname -m")
    assert (r.code, r.out) == (0, "arm64\naarch64\n"), r.err
    sid = arm64.begin(IMAGE, "--maintenance")
    assert arm64.roost("session", "info", sid, "--json").json()["network"] == "host"  # apt reaches its mirror
    script = (
        "apt-get -q update >/dev/null && "
        "DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends hello >/dev/null && "
        "dpkg-query -W -f '${Architecture}\\n' hello && hello"
    )
    r = arm64.sh(sid, script, timeout=1800)
    assert (r.code, r.out) == (0, "arm64\nHello, world!\n"), r.err[-2000:]
    arm64.ok("session", "end", sid)
    doctor = arm64.roost("doctor", "--json").json()
    row = next(row for row in doctor["isolation"] if row["feature"] == f"architecture: {ARCH}")
    assert row["available"] == "yes" and "qemu" in row["how"]


PROBE_C = '#include <stdio.h>\nint main(void) { puts("roost probe"); return 0; }\n'
CONTROL = """\
Source: roost-probe
Section: misc
Priority: optional
Maintainer: roost tests <root@localhost>
Build-Depends: gcc, libc6-dev
Rules-Requires-Root: no
Standards-Version: 4.6.2

Package: roost-probe
Architecture: any
Description: a program built to test foreign-architecture builds
 It prints a line.
"""
CHANGELOG = """\
roost-probe (1.0) unstable; urgency=medium

  * Test package.

 -- roost tests <root@localhost>  Thu, 03 Dec 2026 12:00:00 +0000
"""
#: debian/rules without debhelper; the binary target records the network interfaces the build sees
RULES = """\
#!/usr/bin/make -f
build build-arch build-indep:
\tmkdir -p build
\tgcc -O2 -o build/roost-probe probe.c

binary binary-arch: build
\trm -rf debian/tmp
\tmkdir -p debian/tmp/DEBIAN debian/tmp/usr/bin debian/tmp/usr/share/doc/roost-probe
\tcp build/roost-probe debian/tmp/usr/bin/
\tcut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' > debian/tmp/usr/share/doc/roost-probe/interfaces
\tdpkg-gencontrol -proost-probe -Pdebian/tmp
\tdpkg-deb --root-owner-group --build debian/tmp ..

binary-indep:

clean:
\trm -rf build debian/tmp debian/files

.PHONY: build build-arch build-indep binary binary-arch binary-indep clean
"""


def _source_package(base: Path) -> Path:
    tree = base / "roost-probe-1.0"
    (tree / "debian" / "source").mkdir(parents=True)
    (tree / "probe.c").write_text(PROBE_C)
    (tree / "debian" / "control").write_text(CONTROL)
    (tree / "debian" / "changelog").write_text(CHANGELOG)
    (tree / "debian" / "source" / "format").write_text("3.0 (native)\n")
    rules = tree / "debian" / "rules"
    rules.write_text(RULES)
    rules.chmod(0o755)
    subprocess.run(["dpkg-source", "-b", tree.name], cwd=base, check=True, capture_output=True)
    return base / "roost-probe_1.0.dsc"


def test_sbuild_builds_an_architecture_any_package_for_arm64_through_the_door(arm64: Env) -> None:
    base = arm64.base / "sbuild"
    base.mkdir()
    dsc = _source_package(base)
    launcher = front_door(arm64, base)
    sbuildrc = base / "sbuildrc"
    sbuildrc.write_text(
        f"$conf->set('SCHROOT', '{launcher}');\n"
        "$build_environment = { 'ROOST_NETWORK' => 'none' };  # sbuild's 'no network for the build', for roost\n"
        "$run_lintian = 0;\n$run_autopkgtest = 0;\n$run_piuparts = 0;\n1;\n"
    )
    # sbuild --arch=arm64 -d bookworm looks for bookworm-arm64-sbuild: the door gives the image that name
    listed = arm64.roost("schroot", "-l").out.split()
    assert f"chroot:{SUITE}-{ARCH}-sbuild" in listed
    out = base / "out"
    out.mkdir()
    r = sbuild(sbuildrc, out, "sbuild", f"--arch={ARCH}", "-d", SUITE, str(dsc))
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-2000:])
    deb = out / f"roost-probe_1.0_{ARCH}.deb"
    fields = subprocess.run(
        ["dpkg-deb", "--field", str(deb), "Package", "Architecture"], capture_output=True, text=True, check=True
    ).stdout
    assert fields == f"Package: roost-probe\nArchitecture: {ARCH}\n"
    unpacked = base / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    program = (unpacked / "usr" / "bin" / "roost-probe").read_bytes()
    assert binfmt.elf_arch(program[:40]) == ARCH  # an aarch64 binary, compiled by arm64 gcc under qemu
    # the build ran without network: its session was switched to none before dpkg-buildpackage
    assert (unpacked / "usr" / "share" / "doc" / "roost-probe" / "interfaces").read_text() == "lo\n"
    journal = (arm64.state / "journal.jsonl").read_text()
    assert '"operation":"session network"' in journal and '"network":"none"' in journal
    log = (out / f"roost-probe_1.0_{ARCH}.build").read_text()
    assert "Host Architecture: arm64" in log and "Status: successful" in log
    assert arm64.roost("session", "list", "--json").json() == []

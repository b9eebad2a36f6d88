"""Units of core.limits, core.cgroups, core.binfmt and the profile and image.yaml keys (no root needed)."""

from __future__ import annotations

import os
import platform
import struct
from pathlib import Path

import pytest

from core import binfmt, cgroups, cgroups_upkeep, limits
from core.errors import BadInput, ConfigError, SystemFailure
from core.imageconf import parse_image_config
from core.profiles import parse_profile


def test_sizes_cpus_and_weights_parse_to_numbers() -> None:
    assert limits.parse_size("512M", "x") == 512 << 20
    assert limits.parse_size("1.5GiB", "x") == 3 << 29
    assert limits.parse_size(4096, "x") == 4096
    assert limits.parse_size("2g", "x") == 2 << 30
    parsed = limits.parse_limits(
        {"memory": "4G", "swap": 0, "pids": 100, "cpu-weight": 200, "cpu-quota": "150%", "io-weight": 50}, "f"
    )
    assert parsed == {"memory": 4 << 30, "swap": 0, "pids": 100, "cpu-weight": 200, "cpu-quota": 1.5, "io-weight": 50}
    assert limits.parse_options(["cpu-quota=0.25", "pids=max"]) == {"cpu-quota": 0.25, "pids": "max"}


@pytest.mark.parametrize(
    "data",
    [
        {"memory": "lots"},
        {"memory": "1M"},  # below 4M
        {"pids": 0},
        {"pids": True},
        {"cpu-weight": 0},
        {"cpu-weight": 10001},
        {"cpu-quota": 0},
        {"cpu-quota": "fast"},
        {"disk": "1G"},
        ["memory"],
    ],
)
def test_bad_limits_are_config_errors_naming_the_file(data: object) -> None:
    with pytest.raises(ConfigError) as e:
        limits.parse_limits(data, "/etc/roost/profiles/p.yaml")
    assert "/etc/roost/profiles/p.yaml" in str(e.value)


def test_limit_options_are_bad_input() -> None:
    with pytest.raises(BadInput):
        limits.parse_options(["memory"])
    with pytest.raises(BadInput):
        limits.parse_options(["memory=lots"])


def test_merge_later_layers_win_and_max_removes() -> None:
    profile = {"memory": 1 << 30, "pids": 500}
    image = {"memory": 1 << 29, "pids": "max"}
    assert limits.merge(profile, image, {"cpu-quota": 2.0}) == {"memory": 1 << 29, "cpu-quota": 2.0}
    assert limits.merge(None, None, None) is None
    assert limits.merge({}, None, None) == {}  # an empty mapping still means "a cgroup of its own"
    assert limits.describe(None) == "-" and limits.describe({}) == "none (tracked)"
    assert limits.describe({"memory": 64 << 20, "cpu-quota": 1.5}) == "memory 64.0 MiB, cpu-quota 1.5 CPU"


def test_profiles_and_image_yaml_take_network_and_limits() -> None:
    p = parse_profile("p", {"network": "none", "limits": {"pids": 64}}, "p.yaml")
    assert p.network == "none" and p.limits == {"pids": 64}
    assert parse_profile("q", {}, "q.yaml").limits is None
    with pytest.raises(ConfigError):
        parse_profile("p", {"network": "internet"}, "p.yaml")
    c = parse_image_config(
        {"network": "loopback", "limits": {"memory": "1G"}, "architecture": "arm64", "suite": "bookworm"}, "i.yaml"
    )
    assert (c.network, c.limits, c.architecture, c.suite) == ("loopback", {"memory": 1 << 30}, "arm64", "bookworm")
    assert c.to_yaml_dict()["limits"] == {"memory": 1 << 30}
    for bad in ({"architecture": "vax"}, {"network": "yes"}, {"limits": "1G"}, {"suite": "../x"}):
        with pytest.raises(ConfigError):
            parse_image_config(bad, "i.yaml")


# --- cgroups -------------------------------------------------------------------------------------

V2_FULL = cgroups.Hierarchy("/cg", 2, frozenset({"memory", "pids", "cpu", "io"}))
V2_EMPTY = cgroups.Hierarchy("/cg/unified", 2, frozenset({"hugetlb"}))
V1 = [
    cgroups.Hierarchy("/cg/memory", 1, frozenset({"memory"})),
    cgroups.Hierarchy("/cg/pids", 1, frozenset({"pids"})),
    cgroups.Hierarchy("/cg/cpu,cpuacct", 1, frozenset({"cpu", "cpuacct"})),
    cgroups.Hierarchy("/cg/blkio", 1, frozenset({"blkio"})),
]


def _plan(found: list[cgroups.Hierarchy], wanted: dict[str, int | float], account: bool = True) -> dict[str, set[str]]:
    groups = cgroups.plan(wanted, "roost", "k", "s", account=account, found=found)
    return {g.path: set(g.controllers) for g in groups}


def test_plan_takes_each_controller_from_v2_when_v2_has_it() -> None:
    got = _plan([V2_FULL, *V1], {"memory": 1 << 30, "pids": 10, "cpu-quota": 1.0})
    assert got == {"/cg/roost/k/s": {"memory", "pids", "cpu"}}


def test_plan_falls_back_to_v1_and_kills_through_v1_pids_rather_than_an_empty_v2_directory() -> None:
    """Joining v2 waits for an RCU grace period: with v1's pids to kill through, v2 is made only when needed."""
    got = _plan([V2_EMPTY, *V1], {"memory": 1 << 30, "pids": 10, "cpu-weight": 50, "io-weight": 10})
    assert got == {
        "/cg/memory/roost/k/s": {"memory"},
        "/cg/pids/roost/k/s": {"pids"},
        "/cg/cpu,cpuacct/roost/k/s": {"cpu", "cpuacct"},
        "/cg/blkio/roost/k/s": {"blkio"},
    }
    # without a pids limit too: v1's pids directory counts and kills
    assert _plan([V2_EMPTY, *V1], {}) == {
        "/cg/memory/roost/k/s": {"memory"},
        "/cg/pids/roost/k/s": {"pids"},
        "/cg/cpu,cpuacct/roost/k/s": {"cpuacct"},
    }
    # socket filters need v2 (it comes first: it is joined first); so does a record with a v2 directory (recover)
    with_filters = cgroups.plan({"pids": 10}, "roost", "k", "s", account=False, filters=True, found=[V2_EMPTY, *V1])
    assert [g.path for g in with_filters] == ["/cg/unified/roost/k/s", "/cg/pids/roost/k/s"]
    forced = cgroups.plan({"pids": 10}, "roost", "k", "s", account=False, v2=True, found=[V2_EMPTY, *V1])
    assert [g.path for g in forced] == [g.path for g in with_filters]
    # neither v1 pids nor a freezer: the empty v2 directory kills (cgroup.kill)
    no_pids = [h for h in V1 if "pids" not in h.controllers]
    assert next(iter(_plan([V2_EMPTY, *no_pids], {"memory": 1 << 30}))) == "/cg/unified/roost/k/s"


FREEZER = cgroups.Hierarchy("/cg/freezer", 1, frozenset({"freezer"}))


def test_plan_lets_a_v1_freezer_kill_where_v1_has_no_pids_hierarchy() -> None:
    found = [V2_EMPTY, *[h for h in V1 if "pids" not in h.controllers], FREEZER]
    assert _plan(found, {"memory": 1 << 30}) == {
        "/cg/memory/roost/k/s": {"memory"},
        "/cg/cpu,cpuacct/roost/k/s": {"cpuacct"},
        "/cg/freezer/roost/k/s": {"freezer"},
    }
    # where v1 has pids, it kills, and no freezer directory is made
    assert "/cg/freezer/roost/k/s" not in _plan([V2_EMPTY, *V1, FREEZER], {"memory": 1 << 30})
    # a v2 with the controllers takes them, and then neither is needed
    assert _plan([V2_FULL, *V1, FREEZER], {"memory": 1 << 30}) == {"/cg/roost/k/s": {"memory"}}
    # a group the record names but today's plan has no controllers for is still a group
    bare = cgroups.group_at("/cg/freezer/roost/k/s", found)
    assert bare is not None and bare.hierarchy is FREEZER and not bare.controllers
    assert cgroups.group_at("/elsewhere/x", found) is None


def test_only_the_controllers_that_apply_limits_are_limiting() -> None:
    assert cgroups.limiting({"memory": 1, "swap": 0, "cpu-quota": 1.0}) == {"memory", "cpu"}
    assert cgroups.limiting({"io-weight": 10}) == {"io", "blkio"}
    assert cgroups.limiting({}) == frozenset()


def test_plan_without_v2_accounts_cpu_with_cpuacct_and_refuses_what_no_hierarchy_has() -> None:
    assert _plan(V1, {}) == {
        "/cg/memory/roost/k/s": {"memory"},
        "/cg/pids/roost/k/s": {"pids"},
        "/cg/cpu,cpuacct/roost/k/s": {"cpuacct"},
    }
    with pytest.raises(SystemFailure):
        cgroups.plan({}, "roost", "k", "s", account=False, found=V1)  # nothing to make: v1 alone has no kill
    with pytest.raises(SystemFailure):
        cgroups.plan({"pids": 10}, "roost", "k", "s", found=[cgroups.Hierarchy("/m", 1, frozenset({"memory"}))])
    with pytest.raises(BadInput):
        cgroups.plan({"swap": 0}, "roost", "k", "s", found=V1)  # v1 limits memory and swap together


def test_settings_written_for_v2_and_v1() -> None:
    wanted = {"memory": 64 << 20, "swap": 16 << 20, "pids": 40, "cpu-weight": 200, "cpu-quota": 0.5}
    v2 = cgroups.Group(V2_FULL, "/nonexistent/v2", frozenset({"memory", "pids", "cpu"}))
    assert [(f, v) for f, v, _ in cgroups._settings(v2, wanted)] == [
        ("memory.max", str(64 << 20)),
        ("memory.swap.max", str(16 << 20)),
        ("pids.max", "40"),
        ("cpu.weight", "200"),
        ("cpu.max", "50000 100000"),
    ]
    memory = cgroups.Group(V1[0], "/nonexistent/m", frozenset({"memory"}))
    cpu = cgroups.Group(V1[2], "/nonexistent/c", frozenset({"cpu"}))
    assert [(f, v) for f, v, _ in cgroups._settings(memory, wanted)] == [
        ("memory.limit_in_bytes", str(64 << 20)),
        ("memory.memsw.limit_in_bytes", str(80 << 20)),
    ]
    assert [(f, v) for f, v, _ in cgroups._settings(cpu, wanted)] == [
        ("cpu.shares", str(200 * 1024 // 100)),
        ("cpu.cfs_quota_us", "50000"),  # per cpu.cfs_period_us, the kernel's 100000 in a new directory
    ]


def test_hierarchies_are_read_from_mountinfo() -> None:
    text = (
        "30 22 0:26 / /sys/fs/cgroup/unified rw,relatime shared:5 - cgroup2 cgroup2 rw\n"
        "31 22 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "32 22 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "33 22 0:29 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
        "34 22 0:27 / /mnt/again rw,relatime - cgroup cgroup rw,memory\n"
    )
    found = cgroups.hierarchies(text)
    assert [(h.path, h.version, sorted(h.controllers)) for h in found[1:]] == [
        ("/sys/fs/cgroup/memory", 1, ["memory"]),
        ("/sys/fs/cgroup/cpu,cpuacct", 1, ["cpu", "cpuacct"]),
    ]
    assert (found[0].path, found[0].version) == ("/sys/fs/cgroup/unified", 2)


def test_usage_reads_v2_and_v1_files(tmp_path: Path) -> None:
    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    v2.mkdir()
    v1.mkdir()
    (v2 / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    (v1 / "memory.usage_in_bytes").write_text("4096\n")
    (v1 / "memory.max_usage_in_bytes").write_text("8192\n")
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert cgroups_upkeep.usage([str(v2), str(v1)]) == {
        "memory": 4096,
        "memory_peak": 8192,
        "cpu_usec": 1500,
        "pids": None,
        "oom_kills": 2,
    }


# --- architectures ---------------------------------------------------------------------------------


def _elf(machine: int, is64: bool = True, little: bool = True, flags: int = 0) -> bytes:
    order = "<" if little else ">"
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1 if little else 2, 1]) + b"\0" * 9
    return ident + struct.pack(order + "HHI", 2, machine, 1) + b"\0" * 12 + struct.pack("<I", flags)


def test_elf_headers_name_debian_architectures() -> None:
    assert binfmt.elf_arch(_elf(62)) == "amd64"
    assert binfmt.elf_arch(_elf(183)) == "arm64"
    assert binfmt.elf_arch(_elf(243)) == "riscv64"
    assert binfmt.elf_arch(_elf(40, is64=False, flags=0x400)) == "armhf"
    assert binfmt.elf_arch(_elf(40, is64=False)) == "armel"
    assert binfmt.elf_arch(_elf(22, little=False)) == "s390x"
    assert binfmt.elf_arch(b"#!/bin/sh\n") is None
    assert binfmt.elf_arch(Path("/bin/busybox").read_bytes()[:40]) == binfmt.host_arch()


def test_image_yaml_knows_the_architectures_binfmt_can_run() -> None:
    from core.imageconf import ARCHITECTURES

    assert sorted(ARCHITECTURES) == sorted(binfmt.QEMU_CPU)


def test_the_host_runs_its_own_architecture_natively() -> None:
    host = binfmt.host_arch()
    assert binfmt.is_native(host) and binfmt.status(host) == (True, "native")
    if platform.machine() == "x86_64":
        assert host == "amd64" and binfmt.is_native("i386") and not binfmt.is_native("arm64")
    with pytest.raises(BadInput):
        binfmt.check_arch("vax")


def test_registration_of_qemu_user_static_has_the_fix_binary_flag() -> None:
    line = binfmt.registration("arm64")
    if line is None:
        pytest.xfail("qemu-user-static is not installed")
    fields = line.split(line[0])
    assert fields[1] == "qemu-aarch64" and fields[2] == "M" and "F" in fields[7]
    assert os.path.exists(fields[6])
    assert binfmt.registration("armhf") == binfmt.registration("armel")  # one qemu-arm for both

"""Shared fixtures: temporary state and runtime roots, real root file systems, leak checks.

Only fixtures and hooks live here; what they are made of (Env, make_env,
assert_no_leaks, the root file systems …) is plain code in tests/support/,
which is where tests import helpers from (never from a conftest or another
test module).

Tests run against real mounts: they need root and the kernel's overlayfs. In
CI, ``ROOST_TEST_STRICT=1`` turns every skip into a failure, so a test that
needs root, a mount or a package cannot silently not run.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import pools, rootfs, stats
from tests.support.env import Env, assert_no_leaks, make_env, need_root

STRICT = os.environ.get("ROOST_TEST_STRICT") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but ROOST_TEST_STRICT=1 forbids skips: {reason}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if any(stats.COUNTS.values()):
        terminalreporter.write_line(f"reliability: {stats.summary()}")


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    need_root()
    base = Path(tempfile.mkdtemp(prefix="roost-test-", dir=tmp_path_factory.getbasetemp()))
    e = make_env(base)
    yield e
    assert_no_leaks(base)


# --- root file systems -------------------------------------------------------------------


@pytest.fixture(scope="session")
def busybox_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_root()
    if not shutil.which("busybox") and not os.path.exists("/bin/busybox"):
        pytest.skip("busybox-static is not installed")
    return rootfs.busybox(tmp_path_factory.mktemp("busybox") / "root")


@pytest.fixture
def bb(env: Env, busybox_tree: Path) -> Env:
    """An environment with image ``bb`` (overlay, busybox) created."""
    env.ok("image", "create", "bb", "--from-dir", str(busybox_tree))
    return env


@pytest.fixture(scope="session")
def debian_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Debian bookworm minbase root as a tarball (cached between runs)."""
    need_root()
    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap is not installed")
    return rootfs.debian_tarball()


# --- pools, once per test run (test_backends, test_diff) ----------------------------------


@pytest.fixture(scope="session")
def btrfs_mnt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    need_root()
    try:
        with pools.btrfs_mount(tmp_path_factory.mktemp("btrfs")) as mnt:
            yield mnt
    except pools.Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def zfs_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    need_root()
    try:
        with pools.zfs_pool(tmp_path_factory.mktemp("zfs")) as name:
            yield name
    except pools.Unavailable as e:
        pytest.skip(str(e))

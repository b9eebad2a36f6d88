"""Loop-mounting image files read-only, with the loop device cleared on unmount.

The loop device is configured with ``LO_FLAGS_AUTOCLEAR`` (what ``mount -o
loop`` does), so the kernel detaches it as soon as the file system on it is
unmounted: ending a session (or a crash followed by recover's unmount)
leaves no loop device behind, and nothing has to remember which device was
used. Done with ioctls rather than losetup(8) and mount(8): a session's
begin costs three system calls instead of two processes.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os

from .. import syscalls
from ..errors import SystemFailure

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A  # Linux 5.8: attach and set flags in one call
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
_NAME = 64


class _LoopInfo64(ctypes.Structure):
    _fields_ = [
        ("lo_device", ctypes.c_uint64),
        ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64),
        ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32),
        ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_char * _NAME),
        ("lo_crypt_name", ctypes.c_char * _NAME),
        ("lo_encrypt_key", ctypes.c_char * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class _LoopConfig(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("info", _LoopInfo64),
        ("reserved", ctypes.c_uint64 * 8),
    ]


def _attach(backing: int, path: str) -> int:
    """A read-only, autoclearing loop device over *backing*; returns an open fd on it."""
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(32):  # another process may take the free device first
            number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
            try:
                dev = os.open(f"/dev/loop{number}", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # udev has not made the node yet
            config = _LoopConfig()
            config.fd = backing
            config.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR
            config.info.lo_file_name = os.fsencode(path)[: _NAME - 1]
            try:
                fcntl.ioctl(dev, LOOP_CONFIGURE, bytearray(config))
            except OSError as e:
                os.close(dev)
                if e.errno == errno.EBUSY:
                    continue
                raise SystemFailure(f"cannot set up a loop device for {path}: {e.strerror}") from None
            return dev
    finally:
        os.close(control)
    raise SystemFailure(f"cannot find a free loop device for {path}")


def mount_image(path: str, target: str, fstype: str) -> None:
    """Mount the image file *path* read-only at *target* through an autoclearing loop device."""
    try:
        backing = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SystemFailure(f"cannot open {path}: {e.strerror}") from None
    try:
        dev = _attach(backing, path)
    finally:
        os.close(backing)
    try:
        device = os.readlink(f"/proc/self/fd/{dev}")
        syscalls.mount(device, target, fstype, syscalls.MS_RDONLY)
        syscalls.mount(None, target, None, syscalls.MS_PRIVATE)
    except OSError as e:
        raise SystemFailure(f"cannot mount {path} ({fstype}) at {target}: {e.strerror}") from None
    finally:
        os.close(dev)  # the mount holds the device now; unmounting it clears the device


def devices_backed_by(prefix: str) -> list[str]:
    """Loop devices whose backing file lies at or below *prefix* (from /sys/block)."""
    found = []
    try:
        names = os.listdir("/sys/block")
    except FileNotFoundError:
        return []
    for name in names:
        if not name.startswith("loop"):
            continue
        try:
            with open(f"/sys/block/{name}/loop/backing_file", encoding="utf-8", errors="surrogateescape") as f:
                backing = f.read().rstrip("\n")
        except OSError:
            continue
        if backing == prefix or backing.startswith(prefix.rstrip("/") + "/"):
            found.append(f"/dev/{name}")
    return sorted(found)

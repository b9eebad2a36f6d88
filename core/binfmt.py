"""Foreign architectures: which Debian architecture a tree is, and running it through qemu.

A session of an arm64 image on an amd64 host runs its binaries through
qemu-user-static, which the kernel starts for every arm64 ELF file by way of
binfmt_misc. roost registers the interpreter when it is missing, as Debian's
binfmt-support and systemd-binfmt do, from the registration qemu-user-static
ships (``/usr/lib/binfmt.d/qemu-<cpu>.conf``, else ``/usr/share/binfmts``),
always with the ``F`` (fix binary) flag: the kernel opens the interpreter at
registration, so it works inside a chroot that has no qemu of its own. It
mounts ``/proc/sys/fs/binfmt_misc`` first if nobody has. Registrations are
the host's: roost adds what it needs and never removes any (a reboot does).
"""

from __future__ import annotations

import os

from .errors import BadInput, SystemFailure

BINFMT_DIR = "/proc/sys/fs/binfmt_misc"
#: Debian architecture -> qemu's name of the CPU (binfmt entry qemu-<cpu>, interpreter qemu-<cpu>-static)
QEMU_CPU = {
    "amd64": "x86_64",
    "i386": "i386",
    "arm64": "aarch64",
    "armhf": "arm",
    "armel": "arm",
    "riscv64": "riscv64",
    "ppc64el": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "mips64el": "mips64el",
    "mipsel": "mipsel",
    "loong64": "loongarch64",
    "alpha": "alpha",
    "hppa": "hppa",
    "m68k": "m68k",
    "sh4": "sh4",
    "sparc64": "sparc64",
}
#: uname -m -> Debian architecture
_MACHINES = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "riscv64": "riscv64",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "i686": "i386",
    "armv7l": "armhf",
    "loongarch64": "loong64",
}
#: Architectures a host runs without emulation besides its own (32-bit compat).
_COMPAT = {"amd64": ("i386",), "arm64": ("armhf", "armel")}
#: ELF (e_machine, 64-bit, little-endian) -> Debian architecture
_ELF = {
    (62, True, True): "amd64",
    (3, False, True): "i386",
    (183, True, True): "arm64",
    (40, False, True): "armhf",
    (243, True, True): "riscv64",
    (21, True, True): "ppc64el",
    (21, True, False): "ppc64",
    (22, True, False): "s390x",
    (8, True, True): "mips64el",
    (8, False, True): "mipsel",
    (258, True, True): "loong64",
    (9026, True, True): "alpha",
    (15, False, False): "hppa",
    (4, False, False): "m68k",
    (42, False, True): "sh4",
    (43, True, False): "sparc64",
}
_EF_ARM_ABI_FLOAT_HARD = 0x400
_BINFMT_PATHS = ("/etc/binfmt.d", "/run/binfmt.d", "/usr/lib/binfmt.d")


def host_arch() -> str:
    machine = os.uname().machine
    return _MACHINES.get(machine, machine)


def check_arch(arch: str) -> str:
    if arch not in QEMU_CPU:
        raise BadInput(f"unknown architecture {arch!r} (known: {', '.join(sorted(QEMU_CPU))})")
    return arch


def is_native(arch: str, host: str | None = None) -> bool:
    host = host or host_arch()
    return arch == host or arch in _COMPAT.get(host, ())


def elf_arch(header: bytes) -> str | None:
    """The Debian architecture of an ELF file from its first 40 bytes, or None."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    is64, little = header[4] == 2, header[5] == 1
    machine = int.from_bytes(header[18:20], "little" if little else "big")
    arch = _ELF.get((machine, is64, little))
    if arch == "armhf" and len(header) >= 40:
        flags = int.from_bytes(header[36:40], "little")
        arch = "armhf" if flags & _EF_ARM_ABI_FLOAT_HARD else "armel"
    return arch


def tree_arch(tree: str) -> str | None:
    """The architecture of a root file system: dpkg's own binary, else the shell (symlinks resolved inside)."""
    from .rootfs import Root

    try:
        root = Root(tree)
    except OSError:
        return None
    try:
        for rel in ("usr/bin/dpkg", "bin/sh", "bin/busybox", "usr/bin/env"):
            try:
                fd = root.open(rel, os.O_RDONLY)
            except OSError:
                continue
            try:
                arch = elf_arch(os.read(fd, 40))
            finally:
                os.close(fd)
            if arch is not None:
                return arch
    finally:
        root.close()
    return None


# --- binfmt_misc --------------------------------------------------------------------


def entry(arch: str) -> str:
    return f"qemu-{QEMU_CPU[check_arch(arch)]}"


def mounted() -> bool:
    return os.path.exists(os.path.join(BINFMT_DIR, "register"))


def _entry_state(name: str) -> tuple[bool, str] | None:
    """(enabled, flags) of a binfmt_misc entry, None when not registered."""
    try:
        with open(os.path.join(BINFMT_DIR, name), encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    enabled = text.startswith("enabled")
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("flags:")), "")
    return enabled, flags


def registration(arch: str) -> str | None:
    """The line to write to binfmt_misc's ``register`` for *arch*, F flag included; None without qemu."""
    name = entry(arch)
    for directory in _BINFMT_PATHS:
        path = os.path.join(directory, f"{name}.conf")
        try:
            with open(path, encoding="utf-8") as f:
                lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith(("#", ";"))]
        except OSError:
            continue
        for line in lines:
            fields = line.split(line[0])
            # :name:type:offset:magic:mask:interpreter:flags
            if len(fields) >= 8 and fields[1] == name:
                if not os.path.exists(fields[6]):
                    return None
                if "F" not in fields[7]:
                    fields[7] += "F"
                return line[0].join(fields)
    return _from_binfmts(name)


def _from_binfmts(name: str) -> str | None:
    """binfmt-support's format (``/usr/share/binfmts/qemu-<cpu>``) as a register line."""
    try:
        with open(f"/usr/share/binfmts/{name}", encoding="utf-8") as f:
            spec = dict(line.rstrip("\n").split(" ", 1) for line in f if " " in line)
    except (OSError, ValueError):
        return None
    interpreter = spec.get("interpreter", "")
    if not interpreter or not os.path.exists(interpreter) or "magic" not in spec:
        return None
    flags = "F"
    if spec.get("credentials") == "yes":
        flags += "C"
    if spec.get("preserve") == "yes":
        flags += "P"
    return f":{name}:M:{spec.get('offset', '0')}:{spec['magic']}:{spec.get('mask', '')}:{interpreter}:{flags}"


def status(arch: str) -> tuple[bool, str]:
    """(can run, why) for sessions of *arch* on this host, as ``doctor`` reports it."""
    if is_native(arch):
        return True, "native"
    name = entry(arch)
    state = _entry_state(name) if mounted() else None
    if state is not None:
        enabled, flags = state
        if not enabled:
            return False, f"{name} is registered but disabled (echo 1 > {BINFMT_DIR}/{name})"
        if "F" not in flags:
            return False, f"{name} is registered without the F flag: the interpreter is not found inside a chroot"
        return True, f"qemu ({name} registered)"
    if registration(arch) is None:
        return False, "needs qemu-user-static (apt-get install qemu-user-static)"
    return True, f"qemu (roost registers {name} when needed)"


def ensure(arch: str) -> list[str]:
    """Make sure the kernel can run *arch* binaries here; what was done (``mounted …``, ``registered …``).

    Raises SystemFailure (nothing changed) when qemu-user-static is missing or
    a registration exists that cannot work inside a chroot.
    """
    if is_native(check_arch(arch)):
        return []
    done: list[str] = []
    name = entry(arch)
    if not mounted():
        from . import syscalls

        try:
            syscalls.mount(
                "binfmt_misc",
                BINFMT_DIR,
                "binfmt_misc",
                syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC,
            )
        except OSError as e:
            raise SystemFailure(f"cannot mount binfmt_misc on {BINFMT_DIR}: {e.strerror}") from None
        done.append(f"mounted {BINFMT_DIR}")
    state = _entry_state(name)
    if state is not None:
        enabled, flags = state
        if not enabled or "F" not in flags:
            raise SystemFailure(f"{arch}: {status(arch)[1]}")
        return done
    line = registration(arch)
    if line is None:
        raise SystemFailure(f"{arch} images need qemu-user-static (apt-get install qemu-user-static)")
    try:
        fd = os.open(os.path.join(BINFMT_DIR, "register"), os.O_WRONLY)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except FileExistsError:
        pass  # registered meanwhile (another roost, systemd-binfmt)
    except OSError as e:
        raise SystemFailure(f"cannot register {name} with binfmt_misc: {e.strerror}") from None
    done.append(f"registered {name}")
    return done


def report() -> list[tuple[str, bool, str]]:
    """(architecture, can run, why) for every architecture roost knows, the host's first."""
    host = host_arch()
    arches = sorted(QEMU_CPU, key=lambda a: (a != host, not is_native(a, host), a))
    return [(a, *status(a)) for a in arches]


def registered(arch: str) -> bool:
    """Whether binfmt_misc has a usable (enabled, F flag) entry for *arch*."""
    state = _entry_state(entry(arch)) if mounted() else None
    return state is not None and state[0] and "F" in state[1]

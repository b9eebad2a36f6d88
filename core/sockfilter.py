"""``network: loopback``: socket filters on a session's cgroup v2 directory.

A loopback session stays in the host's network namespace but may only talk
to loopback addresses. Seven small BPF programs are attached to its cgroup
(``BPF_PROG_TYPE_CGROUP_SOCK_ADDR`` and ``_SOCK``); every process in the
session, and every process it starts, is checked by the kernel on each
``connect``, ``sendto``/``sendmsg`` and ``bind``:

* connect and send (TCP, UDP; IPv4 and IPv6): allowed to 127.0.0.0/8, ::1 and
  ::ffff:127.0.0.0/104, refused with EPERM anywhere else;
* bind: to a loopback address as asked; to the wildcard (0.0.0.0, ::) it is
  rewritten to 127.0.0.1 / ::1, so nothing outside the host can connect in;
  any other address is refused;
* raw IP sockets cannot be created.

So the host's own services on loopback (an apt proxy such as apt-cacher-ng, a
local mirror, a database for tests) are reachable and nothing beyond the host
is. The programs live as long as the cgroup: removing it at ``end`` removes
them. Unix sockets are not network traffic and are untouched.

The programs are written here as instructions (no compiler, no libbpf) and
loaded with the bpf(2) system call.
"""

from __future__ import annotations

import ctypes
import os
import struct

from .errors import SystemFailure

_NR_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351, "i686": 357, "armv7l": 386}
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_F_ALLOW_MULTI = 2
_PROG_CGROUP_SOCK = 9
_PROG_CGROUP_SOCK_ADDR = 18
# attach types
_INET_SOCK_CREATE = 2
_INET4_BIND = 8
_INET6_BIND = 9
_INET4_CONNECT = 10
_INET6_CONNECT = 11
_UDP4_SENDMSG = 14
_UDP6_SENDMSG = 15

# struct bpf_sock_addr: user_family 0, user_ip4 4, user_ip6[4] 8..20, user_port 24
_IP4 = 4
_IP6 = (8, 12, 16, 20)
# struct bpf_sock: bound_dev_if 0, family 4, type 8, protocol 12
_SOCK_TYPE = 8
_SOCK_RAW = 3

# one little-endian word of an address as the kernel stores it (network byte order in memory)
_LOOPBACK4 = int.from_bytes(bytes([127, 0, 0, 1]), "little")
_V6_ONE = int.from_bytes(bytes([0, 0, 0, 1]), "little")
_V6_MAPPED = int.from_bytes(bytes([0, 0, 0xFF, 0xFF]), "little")


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


# opcodes
def _ldx_w(dst: int, src: int, off: int) -> bytes:
    return _insn(0x61, dst, src, off)  # dst = *(u32 *)(src + off)


def _stx_w(dst: int, src: int, off: int) -> bytes:
    return _insn(0x63, dst, src, off)  # *(u32 *)(dst + off) = src


def _mov(dst: int, imm: int) -> bytes:
    return _insn(0xB4, dst, imm=_s32(imm))  # 32-bit move, zero-extended


def _and(dst: int, imm: int) -> bytes:
    return _insn(0x54, dst, imm=_s32(imm))  # 32-bit and


def _jeq(dst: int, imm: int, off: int) -> bytes:
    return _insn(0x16, dst, off=off, imm=_s32(imm))  # 32-bit compare


def _jne(dst: int, imm: int, off: int) -> bytes:
    return _insn(0x56, dst, off=off, imm=_s32(imm))


def _exit() -> bytes:
    return _insn(0x95)


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _verdict(allow: bool) -> list[bytes]:
    return [_mov(0, 1 if allow else 0), _exit()]


def _program(body: list[bytes | tuple[str, int, int, str]]) -> bytes:
    """Assemble: ``(op, reg, imm, label)`` are jumps to ``allow``/``deny`` blocks appended when used."""
    size = len(body)
    used = [label for label in ("allow", "deny") if any(isinstance(i, tuple) and i[3] == label for i in body)]
    labels = {label: size + 2 * n for n, label in enumerate(used)}
    out = []
    for i, item in enumerate(body):
        if isinstance(item, tuple):
            op, reg, imm, label = item
            offset = labels[label] - i - 1
            out.append(_jeq(reg, imm, offset) if op == "eq" else _jne(reg, imm, offset))
        else:
            out.append(item)
    for label in used:
        out += _verdict(label == "allow")
    return b"".join(out)


def _connect4() -> bytes:
    return _program([_ldx_w(2, 1, _IP4), _and(2, 0xFF), ("eq", 2, 127, "allow"), _mov(0, 0), _exit()])


def _v6_checks() -> list[bytes | tuple[str, int, int, str]]:
    """r2..r5 = the four words; allow ::1 and ::ffff:127.x.x.x, deny the rest."""
    return [
        _ldx_w(2, 1, _IP6[0]),
        _ldx_w(3, 1, _IP6[1]),
        _ldx_w(4, 1, _IP6[2]),
        _ldx_w(5, 1, _IP6[3]),
        ("ne", 2, 0, "deny"),
        ("ne", 3, 0, "deny"),
        _jne(4, 0, 2),  # not ::x: maybe v4-mapped
        ("eq", 5, _V6_ONE, "allow"),
        ("eq", 4, 0, "deny"),  # ::x that is not ::1
        ("ne", 4, _V6_MAPPED, "deny"),
        _and(5, 0xFF),
        ("eq", 5, 127, "allow"),
        _mov(0, 0),
        _exit(),
    ]


def _connect6() -> bytes:
    return _program(_v6_checks())


def _bind4() -> bytes:
    return _program(
        [
            _ldx_w(2, 1, _IP4),
            _jne(2, 0, 3),  # not the wildcard: check it
            _mov(3, _LOOPBACK4),
            _stx_w(1, 3, _IP4),  # 0.0.0.0 -> 127.0.0.1
            ("eq", 2, 0, "allow"),
            _and(2, 0xFF),
            ("eq", 2, 127, "allow"),
            _mov(0, 0),
            _exit(),
        ]
    )


def _bind6() -> bytes:
    zero_check: list[bytes | tuple[str, int, int, str]] = [
        _ldx_w(2, 1, _IP6[0]),
        _ldx_w(3, 1, _IP6[1]),
        _ldx_w(4, 1, _IP6[2]),
        _ldx_w(5, 1, _IP6[3]),
        _jne(2, 0, 5),
        _jne(3, 0, 4),
        _jne(4, 0, 3),
        _jne(5, 0, 2),
        _mov(6, _V6_ONE),
        _stx_w(1, 6, _IP6[3]),  # :: -> ::1
    ]
    return _program([*zero_check, *_v6_checks()])


def _sock_create() -> bytes:
    return _program([_ldx_w(2, 1, _SOCK_TYPE), ("eq", 2, _SOCK_RAW, "deny"), _mov(0, 1), _exit()])


def programs() -> list[tuple[int, int, bytes]]:
    """(program type, attach type, code) of every filter a loopback session gets."""
    return [
        (_PROG_CGROUP_SOCK_ADDR, _INET4_CONNECT, _connect4()),
        (_PROG_CGROUP_SOCK_ADDR, _INET6_CONNECT, _connect6()),
        (_PROG_CGROUP_SOCK_ADDR, _UDP4_SENDMSG, _connect4()),
        (_PROG_CGROUP_SOCK_ADDR, _UDP6_SENDMSG, _connect6()),
        (_PROG_CGROUP_SOCK_ADDR, _INET4_BIND, _bind4()),
        (_PROG_CGROUP_SOCK_ADDR, _INET6_BIND, _bind6()),
        (_PROG_CGROUP_SOCK, _INET_SOCK_CREATE, _sock_create()),
    ]


_libc = None


def _syscall(cmd: int, buf: ctypes.Array[ctypes.c_char]) -> int:
    """bpf(2) with *buf* as its attribute union (the kernel may write answers back into it)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    number = _NR_BPF.get(os.uname().machine)
    if number is None:
        raise OSError(38, "bpf: unknown system call number on this architecture")
    rc = int(_libc.syscall(ctypes.c_long(number), ctypes.c_int(cmd), buf, ctypes.c_uint(len(buf))))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def _bpf(cmd: int, attr: bytes) -> int:
    return _syscall(cmd, ctypes.create_string_buffer(attr, len(attr)))


def _load(prog_type: int, attach_type: int, code: bytes) -> int:
    insns = ctypes.create_string_buffer(code, len(code))
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 14)
    attr = struct.pack(
        "<IIQQIIQII16sII",
        prog_type,
        len(code) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(license),
        1,
        len(log),
        ctypes.addressof(log),
        0,
        0,
        b"roost_loopback",
        0,
        attach_type,
    )
    try:
        return _bpf(_BPF_PROG_LOAD, attr.ljust(128, b"\0"))
    except OSError as e:
        detail = log.value.decode(errors="replace").strip().splitlines()
        raise OSError(e.errno, f"{e.strerror}{': ' + detail[-1] if detail else ''}") from None


def attach(cgroup: str) -> None:
    """Attach the loopback filters to the cgroup v2 directory *cgroup* (every process in it, from now on)."""
    target = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for prog_type, attach_type, code in programs():
            try:
                prog = _load(prog_type, attach_type, code)
            except OSError as e:
                raise SystemFailure(f"network: loopback: the kernel refused a socket filter ({e.strerror})") from None
            try:
                attr = struct.pack("<IIIII", target, prog, attach_type, _BPF_F_ALLOW_MULTI, 0)
                _bpf(_BPF_PROG_ATTACH, attr.ljust(32, b"\0"))
            except OSError as e:
                raise SystemFailure(
                    f"network: loopback: cannot attach a socket filter to {cgroup}: {e.strerror}"
                ) from None
            finally:
                os.close(prog)  # the attachment holds the program now
    finally:
        os.close(target)


def attached(cgroup: str) -> bool:
    """Whether *cgroup* has a filter on its IPv4 connect hook (BPF_PROG_QUERY)."""
    try:
        target = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        ids = ctypes.create_string_buffer(64 * 4)
        # bpf_attr.query: target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt
        attr = struct.pack("<IIIIQI", target, _INET4_CONNECT, 0, 0, ctypes.addressof(ids), 64)
        buf = ctypes.create_string_buffer(attr.ljust(48, b"\0"), 48)
        try:
            _syscall(16, buf)  # BPF_PROG_QUERY
        except OSError:
            return False
        return bool(struct.unpack_from("<I", buf.raw, 24)[0])
    finally:
        os.close(target)

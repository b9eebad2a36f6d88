"""btrfs send and receive: the btrfs backend's own stream of a generation between hosts.

``btrfs send -p`` sends what a read-only subvolume holds beyond its parent
(by uuid; the receiver finds the parent by its received uuid); ``btrfs
receive`` makes the subvolume in a new staging entry, which becomes the
generation's ``layer``. core.replicate frames the stream and checks it.
"""

from __future__ import annotations

import os
import struct

from ..errors import SystemFailure
from .base import NativeStream, Site, StreamEdit
from .btrfs import created_transid, is_subvolume, real_path, subvolume_uuids, written_since


class BtrfsStream(NativeStream):
    kind = "btrfs"  # BtrfsBackend.native_kind

    def __init__(self, site: Site) -> None:
        self.site = site

    def receivable(self) -> bool:
        import shutil

        # receive makes subvolumes where it is told: in the state root, not in a pool
        return not self.site.btrfs_pool and shutil.which("btrfs") is not None

    def identity(self, directory: str) -> dict[str, str] | None:
        uuid, received = subvolume_uuids(real_path(os.path.join(directory, "layer")))
        return {"uuid": uuid, "received_uuid": received}

    def parent_matches(self, mine: dict[str, str], theirs: dict[str, str]) -> bool:
        # btrfs receive looks for our base's received uuid, else its uuid
        key = mine.get("received_uuid") or mine.get("uuid")
        return bool(key) and key in (theirs.get("received_uuid"), theirs.get("uuid"))

    def send(self, directory: str, parent: str | None) -> tuple[list[str], str, StreamEdit | None]:
        argv = ["btrfs", "send", "-q"]
        if parent is not None:
            argv += ["-p", real_path(os.path.join(parent, "layer"))]
        subvolume = real_path(os.path.join(directory, "layer"))
        return [*argv, subvolume], "btrfs send", RootTimes(subvolume)

    def receive(self, directory: str, label: str) -> tuple[list[str], str]:
        return ["btrfs", "receive", directory], "btrfs receive"

    def received(self, directory: str, label: str) -> None:
        made = [e for e in os.listdir(directory) if e != "layer"]
        if len(made) == 1:
            os.rename(os.path.join(directory, made[0]), os.path.join(directory, "layer"))
        if not is_subvolume(os.path.join(directory, "layer")):
            raise SystemFailure("btrfs receive made no subvolume")

    def received_size(self, directory: str, incremental: bool) -> int | None:
        if not incremental:
            return None
        tree = real_path(os.path.join(directory, "layer"))
        return written_since(tree, created_transid(tree))  # what the stream changed


def crc32c(data: bytes) -> int:
    """CRC-32C as btrfs send streams use it (seed 0, no final inversion)."""
    table = _CRC_TABLE or _crc_table()
    crc = 0
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


_CRC_TABLE: list[int] = []


def _crc_table() -> list[int]:
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        _CRC_TABLE.append(c)
    return _CRC_TABLE


class RootTimes(StreamEdit):
    """Gives a btrfs send stream a last ``utimes`` of the subvolume's root, before its end command.

    ``btrfs receive`` makes its temporary (orphan) names in the root directory of
    the subvolume, which changes the root's times; ``btrfs send`` restores them
    only when the root itself changed. Without this command a received
    generation's root would carry the time it was received.
    """

    _END = 21
    _UTIMES = 20
    _PATH, _CTIME, _MTIME, _ATIME = 15, 9, 10, 11

    def __init__(self, root: str) -> None:
        st = os.lstat(root)
        self.times = {self._ATIME: st.st_atime_ns, self._MTIME: st.st_mtime_ns, self._CTIME: st.st_ctime_ns}
        self.tail = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self.tail + chunk
        self.tail = data[-10:]
        return data[:-10]

    def end(self) -> bytes:
        length, cmd = struct.unpack_from("<IH", self.tail) if len(self.tail) == 10 else (-1, -1)
        if (length, cmd) != (0, self._END):
            return self.tail  # not the stream this was written for: leave it as it is
        body = struct.pack("<HH", self._PATH, 0)
        for attr in (self._ATIME, self._MTIME, self._CTIME):
            sec, nsec = divmod(self.times[attr], 10**9)
            body += struct.pack("<HHQI", attr, 12, sec, nsec)
        command = bytearray(struct.pack("<IHI", len(body), self._UTIMES, 0) + body)
        struct.pack_into("<I", command, 6, crc32c(bytes(command)))
        return bytes(command) + self.tail

"""``bpf(2)`` through ctypes: maps, program load (verifier log surfaced), bpf_link.

Control path only. Every call zeroes a 144-byte ``union bpf_attr`` (the kernel rejects
non-zero bytes it does not know), keeps every buffer it points at referenced until the
syscall returns, and raises :class:`~efvi.errors.SetupError` with the errno and the
fix on failure. File descriptors returned are owned by the caller (``os.close``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os
import platform
import struct
from typing import Any

from efvi.errors import SetupError

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_SYSCALL_BPF = {"x86_64": 321, "amd64": 321, "aarch64": 280, "arm64": 280,
                "riscv64": 280, "ppc64le": 361, "s390x": 351, "i686": 357, "i386": 357}

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_LINK_CREATE = 28
BPF_LINK_UPDATE = 29

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_XSKMAP = 17
BPF_PROG_TYPE_XDP = 6
BPF_XDP = 37  # attach type

BPF_F_XDP_DEV_BOUND_ONLY = 64  # prog_flags: a device-bound XDP program (metadata kfuncs)
BPF_F_XDP_HAS_FRAGS = 32  # prog_flags: the XDP program handles multi-buffer frames

BPF_ANY = 0
BPF_NOEXIST = 1

XDP_FLAGS_UPDATE_IF_NOEXIST = 1
XDP_FLAGS_SKB_MODE = 2
XDP_FLAGS_DRV_MODE = 4
XDP_FLAGS_HW_MODE = 8
XDP_FLAGS_REPLACE = 16

_ATTR_SIZE = 144
_LOG_SIZE = 1 << 20


def _hint(err: int, what: str) -> str:
    if err == _errno.EPERM:
        return f"{what} needs CAP_BPF and CAP_NET_ADMIN (run as root)"
    if err == _errno.ENOSYS:
        return "this kernel has no bpf(2) (CONFIG_BPF_SYSCALL)"
    if err == _errno.ENOMEM:
        return "the memory cgroup refused the allocation; raise its limit"
    if err == _errno.E2BIG:
        return "the kernel is older than the struct layout efvi uses"
    return ""


def sys_bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    """One bpf(2) call; return its non-negative result or raise SetupError."""
    nr = _SYSCALL_BPF.get(platform.machine())
    if nr is None:
        raise SetupError(f"bpf(2) syscall number unknown on {platform.machine()}",
                         errno=_errno.ENOSYS, hint="efvi's xdp adapter supports x86_64/aarch64")
    rc = _libc.syscall(nr, ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if rc < 0:
        err = ctypes.get_errno()
        raise SetupError(f"bpf {what} failed: {os.strerror(err)}", errno=err,
                         hint=_hint(err, what))
    return int(rc)


def _attr(fmt: str, *values: object) -> ctypes.Array[ctypes.c_char]:
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def _addr(obj: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(obj)


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               name: str = "", flags: int = 0) -> int:
    """A new map; returns its fd."""
    attr = _attr("<IIIIIII16s", map_type, key_size, value_size, max_entries, flags, 0, 0,
                 name.encode()[:15])
    return sys_bpf(BPF_MAP_CREATE, attr, f"map create ({name or map_type})")


def map_update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    attr = _attr("<IIQQQ", fd, 0, _addr(k), _addr(v), flags)
    sys_bpf(BPF_MAP_UPDATE_ELEM, attr, "map update")


def map_delete(fd: int, key: bytes) -> bool:
    """Delete ``key``; False if it was not there."""
    k = ctypes.create_string_buffer(key, len(key))
    attr = _attr("<IIQ", fd, 0, _addr(k))
    try:
        sys_bpf(BPF_MAP_DELETE_ELEM, attr, "map delete")
    except SetupError as exc:
        if exc.errno == _errno.ENOENT:
            return False
        raise
    return True


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value under ``key`` (None if absent). Not supported on XSKMAPs."""
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    attr = _attr("<IIQQQ", fd, 0, _addr(k), _addr(v), 0)
    try:
        sys_bpf(BPF_MAP_LOOKUP_ELEM, attr, "map lookup")
    except SetupError as exc:
        if exc.errno == _errno.ENOENT:
            return None
        raise
    return v.raw


class VerifierError(SetupError):
    """The kernel's verifier rejected a program; ``log`` is its full text."""

    def __init__(self, message: str, *, errno: int, log: str) -> None:
        tail = "\n".join(log.strip().splitlines()[-12:])
        from efvi.caps import hint as caps_hint
        lacking = caps_hint("xdp") if errno in (_errno.EACCES, _errno.EPERM) else ""
        super().__init__(f"{message}\n--- verifier log (last lines) ---\n{tail}", errno=errno,
                         hint=lacking or "this is a bug in efvi's program builder: please "
                                         "report it with the log")
        self.log = log


def prog_load(insns: bytes, name: str = "efvi", prog_type: int = BPF_PROG_TYPE_XDP,
              license: str = "GPL", prog_flags: int = 0, ifindex: int = 0,
              expected_attach_type: int = 0) -> int:
    """Load a program; on failure reload with the verifier log and raise VerifierError."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode() + b"\0")

    def attempt(log_level: int, log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("<IIQQIIQII16sII", attr, 0, prog_type, len(insns) // 8, _addr(code),
                         _addr(lic), log_level, len(log) if log is not None else 0,
                         _addr(log) if log is not None else 0, 0, prog_flags,
                         name.encode()[:15], ifindex, expected_attach_type)
        return sys_bpf(BPF_PROG_LOAD, attr, f"program load ({name})")

    try:
        return attempt(0, None)
    except SetupError as first:
        if first.errno not in (_errno.EACCES, _errno.EINVAL, _errno.E2BIG, _errno.EFAULT):
            raise
        log = ctypes.create_string_buffer(_LOG_SIZE)
        try:
            return attempt(1, log)
        except SetupError as exc:
            text = log.value.decode("utf-8", "replace")
            raise VerifierError(f"the verifier rejected XDP program {name!r} "
                                f"({len(insns) // 8} instructions)",
                                errno=exc.errno, log=text) from None


def link_create(prog_fd: int, ifindex: int, flags: int, attach_type: int = BPF_XDP) -> int:
    """Attach ``prog_fd`` to ``ifindex`` through a bpf_link; returns the link fd."""
    attr = _attr("<IIII", prog_fd, ifindex, attach_type, flags)
    return sys_bpf(BPF_LINK_CREATE, attr, "link create (XDP attach)")


def link_update(link_fd: int, new_prog_fd: int) -> None:
    """Swap the program behind a bpf_link for ``new_prog_fd`` atomically (no gap)."""
    attr = _attr("<IIII", link_fd, new_prog_fd, 0, 0)
    sys_bpf(BPF_LINK_UPDATE, attr, "link update (XDP program swap)")


def prog_fd_by_id(prog_id: int) -> int:
    attr = _attr("<I", prog_id)
    return sys_bpf(BPF_PROG_GET_FD_BY_ID, attr, "prog get fd by id")


def prog_info(fd: int) -> dict[str, Any]:
    """type, id, name and tag of a loaded program."""
    info = ctypes.create_string_buffer(256)
    attr = _attr("<IIQ", fd, len(info), _addr(info))
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "obj get info")
    ptype, pid = struct.unpack_from("<II", info, 0)
    tag = info.raw[8:16].hex()
    name = info.raw[64:80].split(b"\0")[0].decode("utf-8", "replace")
    return {"type": ptype, "id": pid, "tag": tag, "name": name}


def map_fd_by_id(map_id: int) -> int:
    attr = _attr("<I", map_id)
    return sys_bpf(BPF_MAP_GET_FD_BY_ID, attr, "map get fd by id")


def prog_map_ids(fd: int) -> list[int]:
    """The ids of the maps a loaded program uses (``bpf_prog_info.map_ids``)."""
    ids = (ctypes.c_uint32 * 64)()
    info = ctypes.create_string_buffer(256)
    struct.pack_into("<IQ", info, 52, len(ids), ctypes.addressof(ids))
    attr = _attr("<IIQ", fd, len(info), _addr(info))
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "obj get info (map ids)")
    (n,) = struct.unpack_from("<I", info, 52)
    return [int(ids[i]) for i in range(min(n, len(ids)))]


def map_info(fd: int) -> dict[str, Any]:
    """type, id, key/value sizes, max_entries and name of a map."""
    info = ctypes.create_string_buffer(128)
    attr = _attr("<IIQ", fd, len(info), _addr(info))
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "obj get info (map)")
    mtype, mid, ks, vs, me = struct.unpack_from("<IIIII", info, 0)
    name = info.raw[24:40].split(b"\0")[0].decode("utf-8", "replace")
    return {"type": mtype, "id": mid, "key_size": ks, "value_size": vs, "max_entries": me,
            "name": name}


def prog_name_by_id(prog_id: int) -> str | None:
    """Name of the program with this id, or None if it is gone / not visible."""
    try:
        fd = prog_fd_by_id(prog_id)
    except SetupError:
        return None
    try:
        return str(prog_info(fd)["name"])
    finally:
        os.close(fd)


BPF_PROG_TEST_RUN = 10


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1) -> tuple[int, bytes]:
    """Run a loaded program once on ``data`` (``BPF_PROG_TEST_RUN``): (retval, data out).

    For tests: no device is involved; XDP redirects are not performed (the return
    value says what the program decided).
    """
    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(len(data) + 512)
    attr = _attr("<IIIIQQII", prog_fd, 0, len(data), len(dout), _addr(din), _addr(dout),
                 repeat, 0)
    sys_bpf(BPF_PROG_TEST_RUN, attr, "prog test run")
    retval, _dsi, dso = struct.unpack_from("<III", attr, 4)
    return retval, dout.raw[:dso]


# ---- BTF: kernel function ids (for kfunc calls) ------------------------------------------
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F
BTF_KIND_FUNC = 12
_BTF_HDR = struct.Struct("<HBBIIIII")
_BTF_TYPE = struct.Struct("<III")
# bytes of kind-specific data after each 12-byte type record: (fixed, per vlen entry)
_BTF_EXTRA: dict[int, tuple[int, int]] = {
    1: (4, 0),  # INT
    3: (12, 0),  # ARRAY
    4: (0, 12), 5: (0, 12),  # STRUCT, UNION
    6: (0, 8),  # ENUM
    13: (0, 8),  # FUNC_PROTO
    14: (4, 0),  # VAR
    15: (0, 12),  # DATASEC
    17: (4, 0),  # DECL_TAG
    19: (0, 12),  # ENUM64
}
_btf_cache: dict[tuple[str, str], int | None] = {}


def btf_find_func(name: str, path: str = VMLINUX_BTF) -> int | None:
    """BTF type id of the FUNC ``name`` in ``path`` (vmlinux BTF), or None.

    Control path: a pure-Python scan of the whole BTF blob (~5 MiB, tens of ms) the
    first time; the answer is cached per process. None when the file is missing or
    unreadable (kernel without CONFIG_DEBUG_INFO_BTF) or holds no such function.
    """
    key = (path, name)
    if key in _btf_cache:
        return _btf_cache[key]
    found: int | None = None
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError:
        blob = b""
    if len(blob) >= _BTF_HDR.size:
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = \
            _BTF_HDR.unpack_from(blob, 0)
        if magic == BTF_MAGIC:
            want = name.encode()
            strs = blob[hdr_len + str_off:hdr_len + str_off + str_len]
            pos, end = hdr_len + type_off, hdr_len + type_off + type_len
            tid = 1
            unpack = _BTF_TYPE.unpack_from
            extra = _BTF_EXTRA
            while pos + 12 <= end:
                name_off, info, _size = unpack(blob, pos)
                kind = (info >> 24) & 0x1F
                if kind == BTF_KIND_FUNC and strs.startswith(want, name_off) and \
                        strs[name_off + len(want):name_off + len(want) + 1] == b"\0":
                    found = tid
                    break
                fixed, per = extra.get(kind, (0, 0))
                pos += 12 + fixed + per * (info & 0xFFFF)
                tid += 1
    _btf_cache[key] = found
    return found

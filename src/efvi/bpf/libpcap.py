"""tcpdump expressions → classic BPF, compiled by the system's libpcap (through ctypes).

efvi never parses a filter expression itself: :func:`compile_expression` hands the
text to libpcap's ``pcap_compile`` on a *dead* handle (``pcap_open_dead``: no
interface, no privileges) for the link type ``DLT_EN10MB`` and returns the
instructions libpcap generated, exactly what ``tcpdump -dd EXPR`` prints for a
capture file. The program treats the frame as it is stored in a file: VLAN tags are
in the frame (a live Linux capture, where the kernel has removed the outer tag,
compiles ``vlan`` differently; see :mod:`efvi.filters`).

The library is Debian's ``libpcap0.8`` (soname ``libpcap.so.0.8``, found with
:func:`ctypes.util.find_library`); when it is missing every call raises
:class:`~efvi.errors.SetupError` naming the package. A rejected expression raises
:class:`ExpressionError` carrying libpcap's own message. Control path only; calls are
serialised by a lock (older libpcaps' compilers are not re-entrant).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import threading

from efvi.errors import SetupError

DLT_EN10MB = 1
#: tcpdump's default snapshot length (what ``ret #k`` of an accepting program holds)
DEFAULT_SNAPLEN = 262144
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
PACKAGE = "libpcap0.8"
_SONAMES = ("libpcap.so.0.8", "libpcap.so.1", "libpcap.so")

Program = tuple[tuple[int, int, int, int], ...]
"""A classic BPF program: ``(code, jt, jf, k)`` per instruction (``struct sock_filter``)."""


class ExpressionError(SetupError):
    """libpcap rejected a filter expression; the message is libpcap's."""

    def __init__(self, expression: str, message: str) -> None:
        super().__init__(f"bad filter expression {expression!r}: {message}",
                         errno=errno.EINVAL, hint="see man 7 pcap-filter")
        self.expression = expression
        self.pcap_message = message


class _BpfInsn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn))]


_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    names = [n for n in (ctypes.util.find_library("pcap"),) if n] + list(_SONAMES)
    last = ""
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            last = str(exc)
            continue
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram),
                                     ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_freecode.restype = None
        lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
        lib.pcap_close.restype = None
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        lib.pcap_lib_version.restype = ctypes.c_char_p
        lib.pcap_lib_version.argtypes = []
        _lib = lib
        return lib
    raise SetupError(
        "libpcap is not installed: tcpdump filter expressions are compiled by the "
        f"system's libpcap ({last or 'not found'})", errno=errno.ENOENT,
        hint=f"apt-get install {PACKAGE}")


def available() -> bool:
    """True when the system's libpcap can be loaded."""
    try:
        _load()
    except SetupError:
        return False
    return True


def version() -> str:
    """libpcap's version string (``pcap_lib_version``)."""
    return (_load().pcap_lib_version() or b"").decode(errors="replace")


def compile_expression(expression: str, *, snaplen: int = DEFAULT_SNAPLEN,
                       linktype: int = DLT_EN10MB, optimize: bool = True) -> Program:
    """Compile a tcpdump expression to classic BPF (control path).

    Raises :class:`ExpressionError` with libpcap's message when the expression is
    rejected, :class:`SetupError` when libpcap is missing. An empty expression
    compiles to "accept everything" (``ret #snaplen``), as in tcpdump.
    """
    if not 1 <= snaplen <= DEFAULT_SNAPLEN:
        raise SetupError(f"snaplen {snaplen} outside 1..{DEFAULT_SNAPLEN}",
                         errno=errno.EINVAL)
    lib = _load()
    text = expression.encode()
    if b"\0" in text:
        raise ExpressionError(expression, "NUL byte in expression")
    with _lock:
        handle = lib.pcap_open_dead(linktype, snaplen)
        if not handle:
            raise SetupError(f"pcap_open_dead({linktype}, {snaplen}) failed",
                             errno=errno.ENOMEM)
        try:
            prog = _BpfProgram()
            if lib.pcap_compile(handle, ctypes.byref(prog), text, int(optimize),
                                PCAP_NETMASK_UNKNOWN) != 0:
                msg = (lib.pcap_geterr(handle) or b"unknown error").decode(errors="replace")
                raise ExpressionError(expression, msg)
            try:
                return tuple((int(prog.bf_insns[i].code), int(prog.bf_insns[i].jt),
                              int(prog.bf_insns[i].jf), int(prog.bf_insns[i].k))
                             for i in range(prog.bf_len))
            finally:
                lib.pcap_freecode(ctypes.byref(prog))
        finally:
            lib.pcap_close(handle)

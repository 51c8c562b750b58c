"""SRTP-protect a viewer's RTP packets in place in C buffers and send each frame's packets with
one ``sendmmsg``: the per-packet core of a WebRTC viewer's sender.

Two implementations of one interface (``send_frame``, ``send_packet``, ``canon_of``, ``error``,
``packets``, ``octets``):

- ``NativeSrtpOut``: the whole per-packet loop in C (``gateway.live._rtpsend``, compiled
  from ``_rtpsend.c`` when the package is installed): per viewer and frame, one call that
  writes each header, copies the payload, protects and sends, without the GIL. Its
  ``send_frame`` *is* the C function (bound to the viewer's state with ``partial``): no Python
  frame between the viewer and C. Used whenever the extension is present (``open_srtp_out``).
- ``SrtpOut``: the same packets from Python, through cffi's ABI mode (no compiler needed),
  for a machine where the extension could not be built. What follows describes it.

``pylibsrtp.Session.protect`` takes and returns ``bytes``: per packet it allocates a C
``int``, copies the packet into the session's buffer, protects it, checks the status in a
second Python call and copies the result out again. ``SrtpOut`` keeps its own slots, one C
buffer per packet of a batch: the caller writes the 12-byte RTP header (``struct.pack_into``)
and the shared payload straight into a slot, libsrtp protects it there (``protect``), and
``flush`` hands the whole batch (one access unit, usually) to the kernel in one
``sendmmsg(2)`` call through cffi's ABI mode (no compiler needed).

One system call per access unit instead of one per packet is most of the saving: on a
loopback or a LAN path each ``sendto`` also wakes the receiving side, and a viewer woken
once per frame costs both ends less than one woken per packet. Where ``sendmmsg`` is
missing (not Linux), ``flush`` sends the slots one ``sendto`` at a time.

It calls ``srtp_protect`` with the context of the DTLS transport's own ``Session`` (the
keys aiortc derived), and holds that session so the context outlives the writer.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from functools import partial
from typing import Any

from cffi import FFI
from pylibsrtp import SRTP_MAX_TRAILER_LEN, Session
from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib

try:
    from gateway.live import _rtpsend  # type: ignore[attr-defined]
except ImportError:  # built without a C compiler: the Python path
    _rtpsend = None

#: One packet of up to 1500 bytes (an Ethernet MTU) and libsrtp's largest trailer.
SLOT_BYTES = 1500 + SRTP_MAX_TRAILER_LEN
#: Bytes a packet may have before protection (libsrtp may add its largest trailer).
CAPACITY = SLOT_BYTES - SRTP_MAX_TRAILER_LEN
#: Packets per ``sendmmsg`` (a 64 KB access unit at most; larger ones take several calls).
BATCH = 48
#: Wire sequence numbers remembered for NACKs (a power of two): about 5 s at 2 Mbit/s.
SENT_RING = 1024
_HEADER = struct.Struct("!BBHII")
_HEADER_BYTES = _HEADER.size

_ffi = FFI()
_ffi.cdef(
    """
    struct iovec { void *iov_base; size_t iov_len; };
    struct msghdr {
        void *msg_name; unsigned int msg_namelen; struct iovec *msg_iov; size_t msg_iovlen;
        void *msg_control; size_t msg_controllen; int msg_flags;
    };
    struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; };
    int sendmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags);
    """
)
try:
    _libc: Any = _ffi.dlopen(None)
    _sendmmsg = _libc.sendmmsg
except (OSError, AttributeError):  # not Linux/glibc: one sendto per packet
    _sendmmsg = None
MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

def _native_reason() -> str | None:
    """Why the C path cannot be used here, or None when it can."""
    if _rtpsend is None:
        return "gateway.live._rtpsend is not built (no C compiler when Citygate was installed)"
    native = _rtpsend.lib
    if (native.CG_BATCH, native.CG_MTU, native.CG_RING) != (BATCH, SLOT_BYTES - SRTP_MAX_TRAILER_LEN, SENT_RING):
        return "gateway.live._rtpsend was built from another version of _rtpsend.c; reinstall Citygate"
    if native.CG_TRAILER < SRTP_MAX_TRAILER_LEN:
        return f"pylibsrtp's SRTP trailer ({SRTP_MAX_TRAILER_LEN} bytes) outgrew _rtpsend.c's slots"
    kind = _srtp_ffi.typeof(lib.srtp_protect).cname
    if kind != "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)":
        return f"pylibsrtp's srtp_protect changed shape ({kind})"
    return None


#: Why viewers are sent to from Python (None: from C). Logged once at start by the gateway.
NATIVE_UNAVAILABLE = _native_reason()


def _context(session: Session) -> Any:
    context = getattr(session, "_srtp", None)
    if context is None:
        raise RuntimeError("pylibsrtp changed shape: Session has no _srtp context")
    return context[0]


class SrtpError(RuntimeError):
    """libsrtp refused to protect a packet (its status code in the message)."""


#: ``send_frame``'s failures (``_rtpsend.c``'s codes): the socket is gone, libsrtp refused,
#: a malformed blob or a payload larger than a slot.
_SOCKET_GONE, _SRTP_FAILED, _MALFORMED = -1, -2, -3


def _sockaddr(address: tuple[Any, ...]) -> bytes:
    """``struct sockaddr_in`` / ``sockaddr_in6`` of a socket-module address tuple (the
    family and scope id in the host's byte order, port and flow info in the network's)."""
    host, port = address[0], address[1]
    if ":" in host:
        flowinfo = address[2] if len(address) > 2 else 0
        scope = address[3] if len(address) > 3 else 0
        return (
            socket.AF_INET6.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big") + flowinfo.to_bytes(4, "big")
            + socket.inet_pton(socket.AF_INET6, host) + scope.to_bytes(4, sys.byteorder)
        )
    return socket.AF_INET.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big") + socket.inet_pton(socket.AF_INET, host) + bytes(8)


class SrtpOut:
    """One viewer's SRTP protection and UDP socket, in batches of up to ``BATCH`` packets.

    Write packet ``k`` of a batch into ``slots[k][:length]``, call ``protect(k, length)``,
    then ``flush(n)`` sends slots ``0..n-1``. A full socket buffer drops what did not fit
    (the viewer's NACK brings it back); ``OSError`` means the network is gone.
    """

    def __init__(self, session: Session, sock: socket.socket, address: tuple[Any, ...]) -> None:
        self._session = session  # keeps the libsrtp context alive as long as this writer
        self._context = _context(session)
        self._error: Exception | None = None
        self._sent_canon = [-1] * SENT_RING
        self._sent_wire = [-1] * SENT_RING
        #: The frames' packets and payload octets, for RTCP sender reports.
        self.packets = 0
        self.octets = 0
        self._socket = sock
        self._fd = sock.fileno()
        self._address = address
        ffi = _ffi
        self._buffer = ffi.new("char[]", SLOT_BYTES * BATCH)
        self._pointers = [self._buffer + k * SLOT_BYTES for k in range(BATCH)]
        whole = memoryview(ffi.buffer(self._buffer))
        #: One writable view per packet slot.
        self.slots = [whole[k * SLOT_BYTES : (k + 1) * SLOT_BYTES] for k in range(BATCH)]
        self._length = ffi.new("int *")
        name = _sockaddr(address)
        self._name = ffi.new("char[]", name)
        self._iov = ffi.new("struct iovec[]", BATCH)
        self._msgs = ffi.new("struct mmsghdr[]", BATCH)
        for k in range(BATCH):
            self._iov[k].iov_base = self._pointers[k]
            header = self._msgs[k].msg_hdr
            header.msg_name = self._name
            header.msg_namelen = len(name)
            header.msg_iov = ffi.addressof(self._iov, k)
            header.msg_iovlen = 1

    def protect(self, k: int, length: int) -> None:
        """Protect the ``length`` bytes of slot ``k`` in place."""
        cell = self._length
        cell[0] = length
        status = lib.srtp_protect(self._context, self._pointers[k], cell)
        if status:
            raise SrtpError(f"srtp_protect failed with status {status}")
        self._iov[k].iov_len = cell[0]

    def flush(self, count: int) -> int:
        """Send protected slots ``0..count-1``; returns how many were dropped."""
        if count <= 0:
            return 0
        if _sendmmsg is None:
            return self._send_each(count)
        sent = _sendmmsg(self._fd, self._msgs, count, MSG_DONTWAIT)
        if sent < 0:
            code = _ffi.errno
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return count
            if code == errno.EINTR:
                return self._send_each(count)
            raise OSError(code, f"sendmmsg: {errno.errorcode.get(code, code)}")
        return count - sent

    def _send_each(self, count: int) -> int:
        dropped = 0
        for k in range(count):
            try:
                self._socket.sendto(self.slots[k][: self._iov[k].iov_len], self._address)
            except BlockingIOError:
                dropped += 1
        return dropped

    # -- the interface both implementations share --------------------------------------
    def send_frame(self, blob: bytes, ends_at: int, count: int, first_canon: int, pt: int, ssrc: int, ts: int,
                   seq: int, extension: bytes = b"", extension_length: int = 0) -> int:
        """Send one frame (``blob``: ``gateway.live.rtp_payloads``, its ``count`` payload ends
        from ``ends_at``) behind the viewer's headers (and its header ``extension`` block, RFC
        8285, if any), wire sequence numbers after ``seq``, the marker bit on the last packet;
        remember which camera packet (from ``first_canon`` on) each wire number carried.
        Returns (packets dropped by a full socket buffer) << 16 | the last wire sequence
        number; a negative code on failure (``error`` makes it an exception), as the C sender."""
        slots, protect, pack_into = self.slots, self.protect, _HEADER.pack_into
        sent_canon, sent_wire, mask = self._sent_canon, self._sent_wire, SENT_RING - 1
        view = memoryview(blob)
        if count < 0 or ends_at % 4 or ends_at + 4 * count != len(blob):
            return _MALFORMED
        ends = view[ends_at:].cast("I")
        last = count - 1
        first_byte = 0x90 if extension else 0x80
        at = _HEADER_BYTES + len(extension)
        dropped = k = start = 0
        try:
            for i, end in enumerate(ends):
                seq = (seq + 1) & 0xFFFF
                sent_canon[seq & mask] = first_canon + i
                sent_wire[seq & mask] = seq
                length = at + end - start
                if end < start or end > ends_at or length > CAPACITY:
                    return _MALFORMED
                slot = slots[k]
                pack_into(slot, 0, first_byte, pt | 0x80 if i == last else pt, seq, ts, ssrc)
                slot[_HEADER_BYTES:at] = extension
                slot[at:length] = view[start:end]
                protect(k, length)
                self.octets += end - start
                start = end
                k += 1
                if k == BATCH:
                    dropped += self.flush(k)
                    k = 0
            self.packets += count
            return (dropped + self.flush(k)) << 16 | seq
        except SrtpError as exc:
            self._error = exc
            return _SRTP_FAILED
        except OSError as exc:
            self._error = exc
            return _SOCKET_GONE

    def error(self, code: int) -> Exception:
        """The exception a negative ``send_frame`` result stands for."""
        if code == _MALFORMED:
            return ValueError("a malformed frame blob, or an RTP payload larger than a packet slot")
        return self._error or RuntimeError(f"send failed ({code})")

    def send_packet(self, head: bytes, payload: bytes | memoryview) -> bool:
        """Protect and send one packet (a retransmission): ``head`` then ``payload``."""
        slot = self.slots[0]
        end = len(head) + len(payload)
        slot[: len(head)] = head
        slot[len(head) : end] = payload
        self.protect(0, end)
        return self.flush(1) == 0

    def canon_of(self, seq: int) -> int:
        """The camera packet wire sequence number ``seq`` carried; -1 once forgotten."""
        i = seq & (SENT_RING - 1)
        return self._sent_canon[i] if self._sent_wire[i] == seq else -1


class NativeSrtpOut:
    """``SrtpOut``'s interface with the per-packet loop in C (``_rtpsend.c``).

    With ``gso`` (the default), each run of equal-size packets leaves as one UDP GSO message
    where the path allows it (``_rtpsend.c`` says how, and when it turns itself off)."""

    def __init__(self, session: Session, sock: socket.socket, address: tuple[Any, ...], *, gso: bool = True) -> None:
        ffi, native = _rtpsend.ffi, _rtpsend.lib
        self._session = session  # keeps the libsrtp context alive as long as this writer
        self._socket = sock  # and the socket its fd belongs to
        context = int(_srtp_ffi.cast("uintptr_t", _context(session)))
        protect = int(_srtp_ffi.cast("uintptr_t", _srtp_ffi.addressof(lib, "srtp_protect")))
        name = _sockaddr(address)
        out = native.cg_out_new(context, protect, sock.fileno(), name, len(name), 1 if gso else 0)
        if out == ffi.NULL:
            raise MemoryError("cannot allocate a viewer's packet buffers")
        self._out = ffi.gc(out, native.cg_out_free)
        self._ffi, self._lib = ffi, native
        #: ``SrtpOut.send_frame``, in C.
        self.send_frame = partial(native.cg_send_frame, self._out)

    def error(self, code: int) -> Exception:
        native = self._lib
        if code == _SOCKET_GONE:
            number = native.cg_last_errno(self._out)
            return OSError(number, f"sendmmsg: {errno.errorcode.get(number, number)}")
        if code == _SRTP_FAILED:
            return SrtpError(f"srtp_protect failed with status {native.cg_last_status(self._out)}")
        return ValueError("a malformed frame blob, or an RTP payload larger than a packet slot")

    @property
    def packets(self) -> int:
        return self._lib.cg_packets(self._out)

    @property
    def octets(self) -> int:
        return self._lib.cg_octets(self._out)

    @property
    def gso(self) -> bool:
        """Whether packets still leave in GSO messages (False once the path refused one)."""
        return bool(self._lib.cg_gso(self._out))

    def send_packet(self, head: bytes, payload: bytes | memoryview) -> bool:
        result = self._lib.cg_send_packet(self._out, head, len(head), self._ffi.from_buffer(payload), len(payload))
        if result < 0:
            raise self.error(result)
        return result == 0

    def canon_of(self, seq: int) -> int:
        return self._lib.cg_canon(self._out, seq)


def open_srtp_out(session: Session, sock: socket.socket, address: tuple[Any, ...]) -> SrtpOut | NativeSrtpOut:
    """The C sender where it was built, else the Python one."""
    if NATIVE_UNAVAILABLE is None:
        return NativeSrtpOut(session, sock, address)
    return SrtpOut(session, sock, address)

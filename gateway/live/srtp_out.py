"""SRTP-protect a viewer's RTP packets in place in C buffers and send each batch with one
``sendmmsg``: the per-packet core of a WebRTC viewer's sender.

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
import sys
from typing import Any

from cffi import FFI
from pylibsrtp import SRTP_MAX_TRAILER_LEN, Session
from pylibsrtp._binding import lib

#: One packet of up to 1500 bytes (an Ethernet MTU) and libsrtp's largest trailer.
SLOT_BYTES = 1500 + SRTP_MAX_TRAILER_LEN
#: Bytes a packet may have before protection (libsrtp may add its largest trailer).
CAPACITY = SLOT_BYTES - SRTP_MAX_TRAILER_LEN
#: Packets per ``sendmmsg`` (a 64 KB access unit at most; larger ones take several calls).
BATCH = 48

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


class SrtpError(RuntimeError):
    """libsrtp refused to protect a packet (its status code in the message)."""


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
        context = getattr(session, "_srtp", None)
        if context is None:
            raise RuntimeError("pylibsrtp changed shape: Session has no _srtp context")
        self._session = session  # keeps the libsrtp context alive as long as this writer
        self._context = context[0]
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

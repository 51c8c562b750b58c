"""SRTP-protect RTP packets in place in one C buffer and send them: the per-packet core of a
WebRTC viewer's sender.

``pylibsrtp.Session.protect`` takes and returns ``bytes``: per packet it allocates a C
``int``, copies the packet into the session's buffer, protects it, checks the status in a
second Python call and copies the result out again. With several hundred viewers' packets
a second that bookkeeping costs more than the AES-GCM itself. ``SrtpOut`` keeps its own C
buffer and length cell per viewer: the caller writes the 12-byte RTP header
(``struct.pack_into``) and the shared payload straight into the buffer, libsrtp protects it
there, and ``sendto`` sends a view of it: one copy of the payload, no allocation but the
view, three calls into C.

It calls ``srtp_protect`` with the context of the DTLS transport's own ``Session`` (the
keys aiortc derived), and holds that session so the context outlives the writer.
"""

from __future__ import annotations

import socket
from typing import Any

from pylibsrtp import SRTP_MAX_TRAILER_LEN, Session
from pylibsrtp._binding import ffi, lib

#: A packet of up to 1500 bytes (an Ethernet MTU) and libsrtp's largest trailer.
BUFFER_BYTES = 1500 + SRTP_MAX_TRAILER_LEN
#: Bytes a packet may have before protection (libsrtp may add its largest trailer).
CAPACITY = BUFFER_BYTES - SRTP_MAX_TRAILER_LEN


class SrtpError(RuntimeError):
    """libsrtp refused to protect a packet (its status code in the message)."""


class SrtpOut:
    """One viewer's SRTP protection and UDP socket.

    ``view[:HEADER + len(payload)]`` is where the caller writes a packet; ``send(length)``
    protects and sends it. Returns False when the socket buffer is full (the packet is
    dropped: the viewer's NACK brings it back); raises ``OSError`` when the network is gone.
    """

    def __init__(self, session: Session, sock: socket.socket, address: tuple[Any, ...]) -> None:
        context = getattr(session, "_srtp", None)
        if context is None:
            raise RuntimeError("pylibsrtp changed shape: Session has no _srtp context")
        self._session = session  # keeps the libsrtp context alive as long as this writer
        self._context = context[0]
        self._cdata = ffi.new("char[]", BUFFER_BYTES)
        self._length = ffi.new("int *")
        self.view = memoryview(ffi.buffer(self._cdata))
        self._sendto = sock.sendto
        self._address = address

    def send(self, length: int) -> bool:
        """Protect the ``length`` bytes at the start of ``view`` in place and send them."""
        cell = self._length
        cell[0] = length
        status = lib.srtp_protect(self._context, self._cdata, cell)
        if status:
            raise SrtpError(f"srtp_protect failed with status {status}")
        try:
            self._sendto(self.view[: cell[0]], self._address)
        except BlockingIOError:
            return False
        return True

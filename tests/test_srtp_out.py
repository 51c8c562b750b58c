"""gateway.live.srtp_out: packets protected in place and sent in one sendmmsg arrive whole,
in order, and decrypt with the peer's keys, on IPv4 and IPv6 (and through the one-sendto
fallback); a socket that is gone is an OSError with its reason."""

from __future__ import annotations

import os
import socket
import struct

import pytest
from pylibsrtp import Policy, Session

from gateway.live import srtp_out
from gateway.live.srtp_out import BATCH, SrtpOut

HEADER = struct.Struct("!BBHII")


def sessions() -> tuple[Session, Session]:
    key = os.urandom(30)
    tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    rx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    return tx, rx


def write(out: SrtpOut, k: int, seq: int, payload: bytes) -> None:
    slot = out.slots[k]
    HEADER.pack_into(slot, 0, 0x80, 96, seq, 9000, 0x1234)
    slot[12 : 12 + len(payload)] = payload
    out.protect(k, 12 + len(payload))


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
@pytest.mark.parametrize("batched", [True, False])
def test_a_batch_arrives_in_order_and_decrypts(family, host, batched, monkeypatch) -> None:
    if not batched:
        monkeypatch.setattr(srtp_out, "_sendmmsg", None)  # the one-sendto-per-packet fallback
    try:
        receiver = socket.socket(family, socket.SOCK_DGRAM)
        receiver.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} loopback here")
    sender = socket.socket(family, socket.SOCK_DGRAM)
    sender.setblocking(False)
    receiver.settimeout(2)
    tx, rx = sessions()
    out = SrtpOut(tx, sender, receiver.getsockname())
    payloads = [os.urandom(100 + 37 * k % 1100) for k in range(BATCH + 5)]
    for start in range(0, len(payloads), BATCH):
        batch = payloads[start : start + BATCH]
        for k, payload in enumerate(batch):
            write(out, k, start + k, payload)
        assert out.flush(len(batch)) == 0
    for seq, payload in enumerate(payloads):
        packet = rx.unprotect(receiver.recv(2048))
        assert HEADER.unpack_from(packet)[2] == seq
        assert packet[12:] == payload
    sender.close()
    receiver.close()


def test_a_socket_that_is_gone_raises_oserror_with_its_reason() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx, _ = sessions()
    out = SrtpOut(tx, sender, receiver.getsockname())
    write(out, 0, 1, bytes(1200))
    sender.close()  # the fd the batch would go to is gone (as when the ICE transport closed)
    with pytest.raises(OSError, match="EBADF"):
        out.flush(1)
    receiver.close()

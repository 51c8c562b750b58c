"""gateway.live.srtp_out, both implementations (the C sender and the Python one): a frame's
packets arrive whole, in order, with the viewer's header and the marker bit on the last, and
decrypt with the peer's keys, on IPv4 and IPv6 (and through the one-sendto fallback); every
wire sequence number names the camera packet it carried, for NACKs; a retransmission arrives
as written; a socket that is gone is an OSError with its reason; a malformed frame blob is
refused. The C sender is built here, and sends runs of equal-size packets as UDP GSO messages
that arrive as single datagrams, falling back to one message per packet where the path
refuses GSO."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from pylibsrtp import Policy, Session

from gateway.live import srtp_out
from gateway.live.rtp_payloads import ends_at, join_payloads
from gateway.live.srtp_out import BATCH, CAPACITY, NativeSrtpOut, SrtpOut

HEADER = struct.Struct("!BBHII")
IMPLEMENTATIONS = {"c": NativeSrtpOut, "python": SrtpOut}


def sessions() -> tuple[Session, Session]:
    key = os.urandom(30)
    tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    rx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    return tx, rx


@dataclass
class Link:
    """A sender of one implementation, and the peer that receives and decrypts."""

    out: SrtpOut | NativeSrtpOut
    rx: Session
    sender: socket.socket
    receiver: socket.socket

    def received(self) -> bytes:
        return self.rx.unprotect(self.receiver.recv(2048))


def send(out: SrtpOut | NativeSrtpOut, payloads: list[bytes], first_canon: int, pt: int, ssrc: int, ts: int, seq: int,
         extension: bytes = b"") -> tuple[int, int]:
    """One frame of ``payloads`` through ``out.send_frame``: (packets dropped, last sequence number)."""
    count, blob = join_payloads(payloads)
    result = out.send_frame(blob, ends_at(blob, count), count, first_canon, pt, ssrc, ts, seq, extension, len(extension))
    if result < 0:
        raise out.error(result)
    return result >> 16, result & 0xFFFF


@contextmanager
def open_link(kind: str, family: int = socket.AF_INET, host: str = "127.0.0.1") -> Iterator[Link]:
    try:
        receiver = socket.socket(family, socket.SOCK_DGRAM)
        receiver.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} loopback here")
    receiver.settimeout(2)
    sender = socket.socket(family, socket.SOCK_DGRAM)
    sender.setblocking(False)
    tx, rx = sessions()
    try:
        yield Link(IMPLEMENTATIONS[kind](tx, sender, receiver.getsockname()), rx, sender, receiver)
    finally:
        sender.close()
        receiver.close()


@pytest.fixture(params=list(IMPLEMENTATIONS))
def link(request) -> Iterator[Link]:
    with open_link(request.param) as opened:
        yield opened


def test_the_c_sender_is_built_and_usable_here() -> None:
    # Every other test of the fan-out runs on what open_srtp_out picks; this says it is C.
    assert srtp_out.NATIVE_UNAVAILABLE is None


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_a_frame_arrives_in_order_marked_and_decrypts(kind, family, host) -> None:
    with open_link(kind, family, host) as link:
        a_frame_arrives_in_order_marked_and_decrypts(link)


def a_frame_arrives_in_order_marked_and_decrypts(link: Link) -> None:
    out = link.out
    # More packets than one sendmmsg batch, every payload size up to the largest.
    payloads = [os.urandom(1 + 37 * k % 1200) for k in range(BATCH + 5)] + [os.urandom(1200)]
    dropped, last_seq = send(out, payloads, 7000, 102, 0x1234ABCD, 0xFFFFFF00, 65530)
    assert dropped == 0
    assert last_seq == (65530 + len(payloads)) & 0xFFFF  # wraps
    for i, payload in enumerate(payloads):
        packet = link.received()
        first, second, seq, ts, ssrc = HEADER.unpack_from(packet)
        assert (first, second & 0x7F, ts, ssrc) == (0x80, 102, 0xFFFFFF00, 0x1234ABCD)
        assert bool(second & 0x80) == (i == len(payloads) - 1), "the marker bit is on the frame's last packet only"
        assert seq == (65531 + i) & 0xFFFF
        assert packet[12:] == payload
        assert out.canon_of(seq) == 7000 + i
    assert out.canon_of((last_seq + 1) & 0xFFFF) == -1
    assert (out.packets, out.octets) == (len(payloads), sum(map(len, payloads)))  # for sender reports


def test_the_python_sender_falls_back_to_one_sendto_per_packet(monkeypatch) -> None:
    monkeypatch.setattr(srtp_out, "_sendmmsg", None)  # not Linux
    with open_link("python") as link:
        payloads = [os.urandom(900) for _ in range(BATCH + 2)]
        assert send(link.out, payloads, 0, 96, 1, 0, 10) == (0, 10 + len(payloads))
        assert [link.received()[12:] for _ in payloads] == payloads


def test_a_retransmission_arrives_as_written(link: Link) -> None:
    head = HEADER.pack(0x80, 0x80 | 97, 40, 9000, 0x55) + struct.pack("!H", 12)  # RTX: the original seq
    payload = os.urandom(1200)
    assert link.out.send_packet(head, memoryview(payload))
    assert link.received() == head + payload


def test_a_payload_larger_than_a_packet_is_refused(link: Link) -> None:
    with pytest.raises(ValueError):
        send(link.out, [bytes(CAPACITY)], 0, 96, 1, 0, 0)  # no room left for the header


def test_a_blob_whose_ends_point_past_its_payloads_is_refused(link: Link) -> None:
    count, blob = join_payloads([bytes(100), bytes(100)])
    forged = blob[: ends_at(blob, count)] + struct.pack("=II", 100, 4000)  # the second end is past the payloads
    result = link.out.send_frame(forged, ends_at(forged, count), count, 0, 96, 1, 0, 0, b"", 0)
    assert result < 0 and isinstance(link.out.error(result), ValueError)
    assert link.out.packets == 0


def test_a_socket_that_is_gone_raises_oserror_with_its_reason(link: Link) -> None:
    link.sender.close()  # the fd the frame would go to is gone (as when the ICE transport closed)
    with pytest.raises(OSError, match="EBADF"):
        send(link.out, [bytes(1200)], 0, 96, 1, 0, 0)


def test_a_header_extension_block_follows_every_header(link: Link) -> None:
    block = b"\xbe\xde\x00\x01\x62\x00\x00\x00"  # playout-delay, id 6, 0/0
    payloads = [os.urandom(1200 - len(block)), os.urandom(10)]
    assert send(link.out, payloads, 0, 96, 1, 0, 0, block) == (0, 2)
    for payload in payloads:
        packet = link.received()
        assert packet[0] == 0x90 and packet[12:20] == block and packet[20:] == payload


# -- UDP GSO (the C sender) ----------------------------------------------------------------

#: A keyframe as the packetizer cuts it: parameter sets, then each slice's FU-A fragments of
#: one size and a shorter last one; more packets than a batch, so runs cross batches.
KEYFRAME_SIZES = [24, 6] + [1200] * 60 + [333] + [1200] * 3 + [50, 700, 700, 900]


def sends_every_packet_in_order(link: Link, sizes: list[int], seq: int = 100) -> None:
    payloads = [os.urandom(n) for n in sizes]
    dropped, last_seq = send(link.out, payloads, 0, 96, 7, 0, seq)
    assert (dropped, last_seq) == (0, seq + len(payloads))
    for i, payload in enumerate(payloads):
        packet = link.received()  # one datagram per packet, as the viewer must see them
        assert HEADER.unpack_from(packet)[2] == seq + 1 + i
        assert packet[12:] == payload


def test_equal_size_runs_leave_in_gso_messages_and_arrive_as_single_packets() -> None:
    with open_link("c") as link:
        sends_every_packet_in_order(link, KEYFRAME_SIZES)
        assert link.out.gso, "loopback takes GSO; the sender must still be using it"


def test_a_path_that_refuses_gso_gets_the_packets_one_message_each() -> None:
    with open_link("c") as link:
        # Without UDP checksums Linux refuses GSO (EINVAL) but sends single datagrams.
        link.sender.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_NO_CHECK", 11), 1)
        sends_every_packet_in_order(link, KEYFRAME_SIZES)
        assert not link.out.gso, "the refusal turned GSO off for this viewer"
        sends_every_packet_in_order(link, [1200] * 5, seq=1000)  # and later frames go one by one at once


def test_gso_can_be_turned_off() -> None:
    with open_link("c") as link:
        tx, rx = sessions()
        link.out, link.rx = NativeSrtpOut(tx, link.sender, link.receiver.getsockname(), gso=False), rx
        assert not link.out.gso
        sends_every_packet_in_order(link, KEYFRAME_SIZES)

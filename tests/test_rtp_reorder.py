"""RTP over UDP and decoding order numbers, below the native RTSP client: the reorder buffer
(gateway/rtsp/reorder.py) on shuffled, duplicated, lost and wrapped sequences and on a
restarted sender; the depacketizer on STAP-B, MTAP16, MTAP24 and FU-B packets built here from
real H.264 access units (PyAV's libx264), and on H.265 packets with DONL/DOND (libx265), put
back in decoding order by their DON, decoded by PyAV picture for picture like the source."""

from __future__ import annotations

import random
import struct
from fractions import Fraction

import av
import numpy as np
import pytest

from gateway.media import h26x
from gateway.rtsp.client import parse_sdp
from gateway.rtsp.depacketizer import H264_FU_B, H264_MTAP16, H264_MTAP24, H264_STAP_B, Depacketizer
from gateway.rtsp.reorder import ReorderBuffer, seq_delta
from gateway.rtsp.rtp import RtpPacketizer, parse_rtp

SSRC = 0x1234ABCD


def rtp(seq: int, payload: bytes = b"", *, ts: int = 0, marker: bool = False, ssrc: int = SSRC, pt: int = 96) -> bytes:
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def seqs(packets: list[bytes]) -> list[int]:
    return [struct.unpack_from("!H", p, 2)[0] for p in packets]


# --- the reorder buffer -----------------------------------------------------------------------


def test_sequence_arithmetic_wraps():
    assert seq_delta(2, 65534) == 4 and seq_delta(65534, 2) == -4 and seq_delta(7, 7) == 0
    assert seq_delta(0x8000, 0) == -0x8000 and seq_delta(0x7FFF, 0) == 0x7FFF


def test_in_order_packets_leave_at_once_and_nothing_is_held():
    buf = ReorderBuffer(max_delay=0.02)
    # the first packets of a stream wait the hold time: the first to arrive may not be the first sent
    assert buf.push(rtp(65529), 0.0) == [] and buf.deadline() == pytest.approx(0.02)
    assert buf.push(rtp(65528), 0.005) == [] and buf.poll(0.01) == []
    assert seqs(buf.poll(0.02)) == [65528, 65529]
    for i, seq in enumerate(range(65530, 65530 + 12)):  # across the 16-bit wrap
        assert seqs(buf.push(rtp(seq), now=0.03 + i * 0.001)) == [seq & 0xFFFF]
        assert len(buf) == 0 and buf.deadline() is None
    assert buf.reordered == 1
    buf.reordered = 0
    assert buf.lost == buf.reordered == buf.duplicates == 0


@pytest.mark.parametrize("start", [0, 65500])
def test_shuffled_and_duplicated_packets_leave_in_order_without_loss(start: int):
    rng = random.Random(start)
    wanted = [(start + i) & 0xFFFF for i in range(200)]
    arrival = []
    for block in range(0, 200, 8):  # shuffled within windows of 8, some sent twice
        window = wanted[block : block + 8]
        rng.shuffle(window)
        arrival += window + rng.sample(window, 2)
    buf = ReorderBuffer(max_packets=16, max_delay=0.05)
    out = []
    for i, seq in enumerate(arrival):
        out += seqs(buf.push(rtp(seq), now=i * 0.001))  # a packet every ms: 8 within the hold time
    out += seqs(buf.flush())
    assert out == wanted
    assert buf.lost == 0 and buf.duplicates + buf.late == 2 * 25 and buf.reordered > 0


def test_a_lost_packet_is_given_up_after_the_hold_time_or_when_the_buffer_is_full():
    buf = ReorderBuffer(max_packets=4, max_delay=0.02)
    assert buf.push(rtp(65535), -0.1) == [] and seqs(buf.poll(-0.08)) == [65535]
    # 0 is lost: 1 and 2 wait, at most 20 ms
    assert buf.push(rtp(1), 0.001) == [] and buf.push(rtp(2), 0.002) == []
    assert buf.deadline() == pytest.approx(0.021)
    assert buf.poll(0.015) == []
    assert seqs(buf.poll(0.021)) == [1, 2] and buf.lost == 1 and len(buf) == 0
    # the lost one comes after all: too late, dropped
    assert buf.push(rtp(0), 0.03) == [] and buf.late == 1
    # 3 is lost and four packets wait behind it: the fifth gives it up at once
    got = []
    for i, seq in enumerate(range(4, 9)):
        got += seqs(buf.push(rtp(seq), 0.04 + i * 0.001))
    assert got == [4, 5, 6, 7, 8] and buf.lost == 2
    # a burst lost and two packets out of order behind it
    assert buf.push(rtp(13), 0.1) == [] and buf.push(rtp(12), 0.1) == []
    assert seqs(buf.poll(0.2)) == [12, 13] and buf.lost == 5


def test_a_restarted_sender_is_followed_after_two_packets_in_a_row():
    buf = ReorderBuffer(max_delay=1.0)
    assert buf.push(rtp(100), -1) == [] and seqs(buf.poll(0)) == [100]
    assert buf.push(rtp(102), 0) == []  # held: 101 is missing
    assert buf.push(rtp(40_000), 0) == []  # one stray packet far away: ignored
    assert seqs(buf.push(rtp(103), 0)) == []  # still the old sequence
    assert buf.push(rtp(20_000), 0) == []  # the camera restarted: 20000, 20001 ...
    assert seqs(buf.push(rtp(20_001), 0)) == [102, 103, 20_001]  # what was held goes first, in order
    assert seqs(buf.push(rtp(20_002), 0)) == [20_002] and buf.resyncs == 1
    # a new SSRC starts a new sequence at once
    assert buf.push(rtp(5000, ssrc=SSRC + 1), 0) == [] and buf.resyncs == 2
    assert seqs(buf.push(rtp(5001, ssrc=SSRC + 1), 0.5)) == [] and seqs(buf.poll(1.0)) == [5000, 5001]


def test_the_depacketizer_follows_a_sequence_that_restarted_behind():
    """A camera that restarts its encoder on the same TCP session starts a new sequence far
    behind the old one: its pictures are not dropped as 'late' until the numbers catch up."""
    pk = RtpPacketizer("h264", payload_type=96, sequence=30_000, ssrc=SSRC)
    au = b"".join(h26x.START_CODE + n for n in (bytes([0x67, 1, 2]), bytes([0x68, 3]), bytes([0x65]) + bytes(range(1, 101))))
    depacketizer = Depacketizer("h264", 96)
    got = [u for p in pk.packetize(au, 0) + pk.packetize(au, 3600) for u in depacketizer.push(p)]
    restarted = RtpPacketizer("h264", payload_type=96, sequence=12, ssrc=SSRC)
    for pts in (0, 3600, 7200):
        got += [u for p in restarted.packetize(au, pts) for u in depacketizer.push(p)]
    assert len(got) == 5 and all(u.data == au for u in got) and depacketizer.resyncs == 1 and depacketizer.late == 0


# --- H.264 interleaved mode (packetization-mode=2) ------------------------------------------------


def encode(frames: int = 12) -> list[bytes]:
    """Annex B access units of a moving picture, two slices each, a keyframe every 4."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 160, 96, "yuv420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "slices=2:keyint=4:min-keyint=4:scenecut=0:bframes=0"}
    out = []
    for i in range(frames):
        img = np.zeros((96, 160, 3), np.uint8)
        img[:, :, 0] = (np.arange(160)[None, :] * 3 + i * 17) % 256
        img[20 + i * 4 : 40 + i * 4, 30:60, 1] = 255
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return out


def decode(units: list[bytes]) -> list[np.ndarray]:
    ctx = av.CodecContext.create("h264", "r")
    frames = []
    for data in units:
        frames += ctx.decode(av.Packet(data))
    frames += ctx.decode(None)
    return [f.to_ndarray(format="gray") for f in frames]


def interleave(units: list[bytes], *, first_don: int, max_payload: int) -> tuple[list[bytes], int]:
    """RTP packets of ``units`` in interleaved mode, and the sprop-interleaving-depth they need.

    DONs count the NAL units in decoding order (from ``first_don``, across the 16-bit wrap).
    Transmission order swaps every two pictures (the later one first). NAL units that fit go
    by two or three into STAP-B (same picture, DONs in a row) or MTAP16/MTAP24 packets (several
    pictures: a DON and a timestamp offset each); larger ones go as FU-B then FU-A fragments.
    """
    nals = [(first_don + i, 3600 * n, nal) for i, (n, nal) in enumerate((n, nal) for n, au in enumerate(units) for nal in h26x.iter_nals(au))]
    by_picture: dict[int, list[tuple[int, int, bytes]]] = {}
    for item in nals:
        by_picture.setdefault(item[1], []).append(item)
    pictures = list(by_picture.values())
    sent: list[tuple[int, int, bytes]] = []
    for i in range(0, len(pictures), 2):
        for picture in reversed(pictures[i : i + 2]):
            sent += picture
    # depth: most VCL NAL units ahead of one in transmission that follow it in decoding order
    vcl = [d for d, _, n in sent if 1 <= n[0] & 0x1F <= 5]
    depth = max(sum(1 for other in vcl[:k] if other > d) for k, d in enumerate(vcl))
    payloads: list[tuple[int, bytes]] = []  # (RTP timestamp, payload)
    group: list[tuple[int, int, bytes]] = []
    mtap24 = False

    def flush_group() -> None:
        nonlocal group, mtap24
        if not group:
            return
        dons = [d for d, _, _ in group]
        stamps = {t for _, t, _ in group}
        if len(stamps) == 1 and dons == list(range(dons[0], dons[0] + len(dons))):
            body = bytes([H264_STAP_B]) + (dons[0] & 0xFFFF).to_bytes(2, "big")
            body += b"".join(len(n).to_bytes(2, "big") + n for _, _, n in group)
            payloads.append((group[0][1], body))
        else:
            base_don, base_ts = min(dons), min(stamps)
            kind, size = (H264_MTAP24, 3) if mtap24 else (H264_MTAP16, 2)
            mtap24 = not mtap24
            body = bytes([kind]) + (base_don & 0xFFFF).to_bytes(2, "big")
            for d, t, n in group:
                body += (len(n) + 1 + size).to_bytes(2, "big") + bytes([d - base_don]) + (t - base_ts).to_bytes(size, "big") + n
            payloads.append((base_ts, body))
        group = []

    for d, t, nal in sent:
        if len(nal) + 8 > max_payload:
            flush_group()
            body = memoryview(nal)[1:]
            step = max_payload - 4
            for start in range(0, len(body), step):
                header = (nal[0] & 0x1F) | (0x80 if start == 0 else 0) | (0x40 if start + step >= len(body) else 0)
                if start == 0:
                    payloads.append((t, bytes([(nal[0] & 0xE0) | H264_FU_B, header]) + (d & 0xFFFF).to_bytes(2, "big") + body[:step]))
                else:
                    payloads.append((t, bytes([(nal[0] & 0xE0) | 28, header]) + body[start : start + step]))
            continue
        if len(group) == 3 or sum(len(n) + 8 for _, _, n in group) + len(nal) + 8 > max_payload:
            flush_group()
        group.append((d, t, nal))
    flush_group()
    return [rtp(60_000 + i, p, ts=t + 2**32 - 7200) for i, (t, p) in enumerate(payloads)], depth


@pytest.fixture(scope="module")
def source_units() -> list[bytes]:
    units = encode()
    assert len(units) == 12 and all(h26x.iter_nals(u) for u in units)
    return units


@pytest.mark.parametrize("from_sdp", [True, False], ids=["sdp-says-mode-2", "found-in-the-packets"])
def test_interleaved_packets_are_put_back_in_decoding_order_by_don(source_units: list[bytes], from_sdp: bool):
    packets, depth = interleave(source_units, first_don=65_530, max_payload=300)
    kinds = {parse_rtp(p)[5][0] & 0x1F for p in packets}
    assert {H264_STAP_B, H264_MTAP16, H264_MTAP24, H264_FU_B, 28} <= kinds, kinds  # every form in use
    assert depth >= 2  # the order on the wire really differs from the decoding order
    depacketizer = Depacketizer("h264", 96, interleaved=from_sdp, interleaving_depth=depth)
    units = [u for p in packets for u in depacketizer.push(p)] + depacketizer.flush_all()
    assert depacketizer.interleaved and depacketizer.late_nals == 0
    assert [list(h26x.iter_nals(u.data)) for u in units] == [list(h26x.iter_nals(u)) for u in source_units]
    assert [u.timestamp - units[0].timestamp for u in units] == [3600 * i for i in range(12)]  # across the 32-bit wrap
    assert not any(u.damaged for u in units)
    got, want = decode([u.data for u in units]), decode(source_units)
    assert len(got) == len(want) == 12 and all(np.array_equal(a, b) for a, b in zip(got, want))


def test_a_too_small_interleaving_depth_loses_nal_units_visibly(source_units: list[bytes]):
    """The SDP understates the depth: NAL units whose turn has passed are counted and their
    pictures marked damaged, never handed on out of order."""
    packets, depth = interleave(source_units, first_don=0, max_payload=300)
    depacketizer = Depacketizer("h264", 96, interleaved=True, interleaving_depth=0)
    units = [u for p in packets for u in depacketizer.push(p)] + depacketizer.flush_all()
    assert depacketizer.late_nals > 0 and any(u.damaged for u in units)
    stamps = [u.timestamp for u in units]
    assert stamps == sorted(stamps)


def test_a_lost_fragment_damages_its_picture_and_the_rest_decodes(source_units: list[bytes]):
    packets, depth = interleave(source_units, first_don=100, max_payload=300)
    fu_a = next(i for i, p in enumerate(packets) if parse_rtp(p)[5][0] & 0x1F == 28)
    depacketizer = Depacketizer("h264", 96, interleaved=True, interleaving_depth=depth)
    units = [u for p in packets[:fu_a] + packets[fu_a + 1 :] for u in depacketizer.push(p)] + depacketizer.flush_all()
    assert depacketizer.lost == 1 and sum(u.damaged for u in units) >= 1
    assert len(units) == 12  # the other slice of the picture still makes one


# --- H.265 with decoding order numbers (sprop-max-don-diff > 0) ---------------------------------


def encode_hevc(frames: int = 8) -> list[bytes]:
    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 160, 96, "yuv420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"preset": "ultrafast", "x265-params": "keyint=4:min-keyint=4:scenecut=0:bframes=0:slices=2:log-level=none"}
    out = []
    for i in range(frames):
        img = np.zeros((96, 160), np.uint8) + np.uint8(40)
        img[10 + i * 6 : 30 + i * 6, 20:70] = 220
        frame = av.VideoFrame.from_ndarray(np.stack([img] * 3, axis=-1), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return out


def hevc_with_donl(units: list[bytes], *, first_don: int, max_payload: int) -> tuple[list[bytes], int]:
    """RTP packets of H.265 ``units`` with DONL/DOND fields, two pictures at a time sent later
    one first: parameter sets in one AP (DONL then DONDs), large NAL units as FUs (DONL in the
    start fragment), the rest as single NAL unit packets (DONL after the payload header).
    Returns the packets and the sprop-depack-buf-nalus they need."""
    pictures = []
    don = first_don
    for n, au in enumerate(units):
        nals = []
        for nal in h26x.iter_nals(au):
            nals.append((don, 3600 * n, nal))
            don += 1
        pictures.append(nals)
    sent: list[tuple[int, int, bytes]] = []
    for i in range(0, len(pictures), 2):
        for picture in reversed(pictures[i : i + 2]):
            sent += picture
    dons = [d for d, _, _ in sent]
    depth = max(sum(1 for other in dons[:k] if other > d) for k, d in enumerate(dons))
    payloads: list[tuple[int, bytes]] = []
    i = 0
    while i < len(sent):
        d, t, nal = sent[i]
        kind = (nal[0] >> 1) & 0x3F
        if kind in (h26x.HEVC_VPS, h26x.HEVC_SPS, h26x.HEVC_PPS):  # the parameter sets: one AP
            group = [sent[i]]
            while i + len(group) < len(sent) and (sent[i + len(group)][2][0] >> 1) & 0x3F in (33, 34):
                group.append(sent[i + len(group)])
            body = bytes([48 << 1, 1]) + (group[0][0] & 0xFFFF).to_bytes(2, "big")
            for k, (gd, _, gn) in enumerate(group):
                if k:
                    body += bytes([gd - group[k - 1][0] - 1])
                body += len(gn).to_bytes(2, "big") + gn
            payloads.append((t, body))
            i += len(group)
            continue
        if len(nal) + 2 <= max_payload:
            payloads.append((t, nal[:2] + (d & 0xFFFF).to_bytes(2, "big") + nal[2:]))
        else:
            header = bytes([(nal[0] & 0x81) | (49 << 1), nal[1]])
            body = nal[2:]
            step = max_payload - 5
            for start in range(0, len(body), step):
                fu = kind | (0x80 if start == 0 else 0) | (0x40 if start + step >= len(body) else 0)
                donl = (d & 0xFFFF).to_bytes(2, "big") if start == 0 else b""
                payloads.append((t, header + bytes([fu]) + donl + body[start : start + step]))
        i += 1
    return [rtp(100 + k, p, ts=t) for k, (t, p) in enumerate(payloads)], depth


def test_h265_with_decoding_order_numbers_is_put_back_in_order():
    units = encode_hevc()
    assert len(units) == 8
    packets, depth = hevc_with_donl(units, first_don=65_533, max_payload=300)
    assert depth >= 2 and any((parse_rtp(p)[5][0] >> 1) & 0x3F == 49 for p in packets)
    depacketizer = Depacketizer("hevc", 96, interleaved=True, interleaving_depth=depth)
    got = [u for p in packets for u in depacketizer.push(p)] + depacketizer.flush_all()
    assert [list(h26x.iter_nals(u.data)) for u in got] == [list(h26x.iter_nals(u)) for u in units]
    assert not any(u.damaged for u in got) and depacketizer.late_nals == 0

    def decode_hevc(data: list[bytes]) -> list[np.ndarray]:
        ctx = av.CodecContext.create("hevc", "r")
        frames = [f for d in data for f in ctx.decode(av.Packet(d))] + ctx.decode(None)
        return [f.to_ndarray(format="gray") for f in frames]

    a, b = decode_hevc([u.data for u in got]), decode_hevc(units)
    assert len(a) == len(b) == 8 and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_the_sdp_turns_on_decoding_order_numbers():
    sdp = "v=0\r\nm=video 0 RTP/AVP 97\r\na=rtpmap:97 H265/90000\r\na=fmtp:97 sprop-max-don-diff=2;sprop-depack-buf-nalus=3\r\n"
    track = parse_sdp(sdp, "rtsp://cam/")
    assert (track.codec, track.max_don_diff, track.interleaving_depth) == ("hevc", 2, 3)
    sdp = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=2;sprop-interleaving-depth=4\r\n"
    track = parse_sdp(sdp, "rtsp://cam/")
    assert (track.packetization_mode, track.interleaving_depth, track.max_don_diff) == (2, 4, 0)

from gateway.media import h26x
from tests.media_fixtures import encode_frames


def _kinds(codec, data):
    return [h26x.nal_type(codec, n) for n in h26x.iter_nals(data)]


def test_split_and_classify_h264():
    units = encode_frames(12, gop=10)
    kinds = _kinds("h264", units[0])
    assert h26x.H264_SPS in kinds and h26x.H264_PPS in kinds and h26x.H264_IDR in kinds
    assert h26x.H264_IDR not in _kinds("h264", units[1])


def test_keeper_inserts_parameter_sets_stripped_from_keyframes():
    units = encode_frames(12, gop=10)
    ps = b"".join(h26x.START_CODE + n for n in h26x.iter_nals(units[0]) if h26x.nal_type("h264", n) in (7, 8))
    stripped = b"".join(
        h26x.START_CODE + n for n in h26x.iter_nals(units[10]) if h26x.nal_type("h264", n) not in (7, 8)
    )
    keeper = h26x.ParameterSetKeeper("h264", ps)  # as if they came only in the SDP
    data, key = keeper.process(stripped)
    assert key
    kinds = _kinds("h264", data)
    assert kinds.index(7) < kinds.index(5) and kinds.index(8) < kinds.index(5)


def test_keeper_leaves_non_keyframes_alone():
    units = encode_frames(3, gop=10)
    keeper = h26x.ParameterSetKeeper("h264")
    keeper.process(units[0])
    data, key = keeper.process(units[1])
    assert not key and data == units[1]


def test_hevc_keyframes_recognised():
    units = encode_frames(3, codec="libx265", gop=10)
    kinds = _kinds("hevc", units[0])
    assert {h26x.HEVC_VPS, h26x.HEVC_SPS, h26x.HEVC_PPS} <= set(kinds)
    keeper = h26x.ParameterSetKeeper("hevc")
    assert keeper.process(units[0])[1] is True
    assert keeper.process(units[1])[1] is False


def test_length_prefixed_roundtrip_and_avcc_extradata():
    units = encode_frames(1)
    nals = list(h26x.iter_nals(units[0]))
    avcc_sample = b"".join(len(n).to_bytes(4, "big") + n for n in nals)
    assert list(h26x.iter_nals(h26x.length_prefixed_to_annexb(avcc_sample))) == nals
    sps = next(n for n in nals if h26x.nal_type("h264", n) == 7)
    pps = next(n for n in nals if h26x.nal_type("h264", n) == 8)
    avcc = bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]) + len(sps).to_bytes(2, "big") + sps + b"\x01" + len(pps).to_bytes(2, "big") + pps
    assert h26x.parameter_sets_from_extradata("h264", avcc) == h26x.START_CODE + sps + h26x.START_CODE + pps


def test_has_picture_tells_frames_from_bare_delimiters():
    units = encode_frames(2)
    assert h26x.has_picture("h264", units[0]) and h26x.has_picture("h264", units[1])
    assert not h26x.has_picture("h264", b"\x00\x00\x00\x01\x09\x30")  # AUD only
    hevc = encode_frames(1, codec="libx265")
    assert h26x.has_picture("hevc", hevc[0])
    assert not h26x.has_picture("hevc", b"\x00\x00\x00\x01\x46\x01\x50")  # AUD only

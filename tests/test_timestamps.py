from gateway.media.timestamps import TimestampSanitizer


def test_first_packet_without_timestamp_then_real_clock():
    s = TimestampSanitizer()
    s.new_epoch()
    out = [s(None), s(900_000), s(903_600), s(907_200)]
    assert out[0] == 0
    assert all(b > a for a, b in zip(out, out[1:]))
    assert out[3] - out[2] == 3600


def test_repeated_and_backwards_timestamps_strictly_increase():
    s = TimestampSanitizer()
    s.new_epoch()
    raw = [0, 3600, 3600, 7200, 5400, 10800]
    out = [s(r) for r in raw]
    assert all(b > a for a, b in zip(out, out[1:])), out


def test_clock_reset_and_reconnect_continue_the_timeline():
    s = TimestampSanitizer()
    s.new_epoch()
    a = [s(r) for r in (1_000_000, 1_003_600, 1_007_200)]
    b = s(50)  # camera rebooted its clock
    assert b == a[-1] + 3600
    s.new_epoch(gap_seconds=2.0)
    c = s(123_456_789)
    assert c == b + 180_000  # continues after a real-time gap of 2 s
    assert s(123_460_389) == c + 3600

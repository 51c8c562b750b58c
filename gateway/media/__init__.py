"""Media plumbing: ingest, fan-out, and the types every reader sees."""

from gateway.media.packet import CLOCK_RATE, MediaPacket, StreamInfo

__all__ = ["CLOCK_RATE", "MediaPacket", "StreamInfo"]

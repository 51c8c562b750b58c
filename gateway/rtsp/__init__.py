"""RTSP/RTP protocol code: packetizers (``rtp``) and a server for stream hubs (``server``)."""

from gateway.rtsp.rtp import RtpPacketizer, depacketize
from gateway.rtsp.server import RtspServer

__all__ = ["RtpPacketizer", "RtspServer", "depacketize"]

"""Continuous recording: recorders, the segment catalogue, retention and the service owning them."""

from gateway.recording.index import Catalogue, Gap, Hold, ReplicationLag, Segment
from gateway.recording.service import RecordingService, recording_ctx

__all__ = ["Catalogue", "Gap", "Hold", "RecordingService", "ReplicationLag", "Segment", "recording_ctx"]

"""WS-Discovery (2005/04, as ONVIF uses it) replies for the ONVIF face: a Probe for an ONVIF
device (``dn:NetworkVideoTransmitter`` or ``tds:Device``, or no type at all) received on UDP
port 3702 — multicast to 239.255.255.250 or sent to us directly — is answered with a
ProbeMatch, unicast to the sender, naming the device service address. Nothing else is
said: no Hello or Bye announcements, no Resolve. Off unless ``[onvif-server] discovery``.

The socket listens on every interface (multicast reaches only sockets bound to the wildcard
address), so the answer reveals that an ONVIF device is here to anyone on the LAN who asks;
the device itself still needs credentials for everything but its clock.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

logger = logging.getLogger(__name__)

MULTICAST_GROUP = "239.255.255.250"
ENV = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
DN = "http://www.onvif.org/ver10/network/wsdl"
TDS = "http://www.onvif.org/ver10/device/wsdl"
PROBE = f"{WSD}/Probe"
PROBE_MATCHES = f"{WSD}/ProbeMatches"
ANONYMOUS = f"{WSA}/role/anonymous"
#: Probes longer than this are not read (a probe is a few hundred bytes).
MAX_PROBE_BYTES = 8192
TYPES = ("NetworkVideoTransmitter", "Device")
SCOPES = (
    "onvif://www.onvif.org/type/video_encoder",
    "onvif://www.onvif.org/type/ptz",
    "onvif://www.onvif.org/Profile/Streaming",
    "onvif://www.onvif.org/name/Citygate",
    "onvif://www.onvif.org/hardware/Citygate",
)


def probe_match(probe: bytes, *, endpoint: str, xaddr: str) -> bytes | None:
    """The ProbeMatches answer to ``probe``, or None if it is no probe for a device like us."""
    if len(probe) > MAX_PROBE_BYTES or b"<!DOCTYPE" in probe or b"<!ENTITY" in probe:
        return None
    try:
        root = ET.fromstring(probe)
    except ET.ParseError:
        return None
    action = (root.findtext(f"{{{ENV}}}Header/{{{WSA}}}Action") or "").strip()
    body = root.find(f"{{{ENV}}}Body/{{{WSD}}}Probe")
    if body is None or (action and action != PROBE):
        return None
    types = (body.findtext(f"{{{WSD}}}Types") or "").split()
    if types and not any(t.rsplit(":", 1)[-1] in TYPES for t in types):
        return None
    scopes = (body.findtext(f"{{{WSD}}}Scopes") or "").split()
    if any(not any(ours.startswith(s.rstrip("/")) for ours in SCOPES) for s in scopes):
        return None
    relates = escape((root.findtext(f"{{{ENV}}}Header/{{{WSA}}}MessageID") or "").strip())
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="{ENV}" xmlns:wsa="{WSA}" xmlns:d="{WSD}" '
        f'xmlns:dn="{DN}" xmlns:tds="{TDS}"><env:Header><wsa:MessageID>urn:uuid:{uuid.uuid4()}</wsa:MessageID>'
        f"<wsa:RelatesTo>{relates}</wsa:RelatesTo><wsa:To>{ANONYMOUS}</wsa:To><wsa:Action>{PROBE_MATCHES}</wsa:Action>"
        "</env:Header><env:Body><d:ProbeMatches><d:ProbeMatch><wsa:EndpointReference>"
        f"<wsa:Address>{escape(endpoint)}</wsa:Address></wsa:EndpointReference>"
        "<d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>"
        f"<d:Scopes>{' '.join(SCOPES)}</d:Scopes><d:XAddrs>{escape(xaddr)}</d:XAddrs>"
        "<d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></env:Body></env:Envelope>"
    ).encode()


def _local_address_towards(address: str) -> str:
    """The address of ours a datagram to ``address`` leaves from (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((address, 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, responder: DiscoveryResponder) -> None:
        self.responder = responder
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.responder.answer(data, addr)
        except Exception:
            logger.exception("onvif discovery: answering a probe from %s failed", addr[0])


class DiscoveryResponder:
    """Answers WS-Discovery probes; an async context manager owned by the ONVIF face."""

    def __init__(self, *, bind: str, port: int, endpoint: str, xaddr: Callable[[str], str]) -> None:
        self._bind = bind
        self._requested_port = port
        self._endpoint = endpoint
        self._xaddr = xaddr
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Protocol | None = None
        self.port = 0
        self.answered = 0

    async def __aenter__(self) -> DiscoveryResponder:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", self._requested_port))
        interface = self._bind if self._bind not in ("", "0.0.0.0", "::") else "0.0.0.0"
        try:
            membership = struct.pack("4s4s", socket.inet_aton(MULTICAST_GROUP), socket.inet_aton(interface))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        except OSError as exc:  # no multicast route (a container, loopback only): unicast probes still work
            logger.warning("onvif discovery: cannot join %s on %s (%s); answering unicast probes only", MULTICAST_GROUP, interface, exc)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        self._transport, self._protocol = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        self.port = sock.getsockname()[1]
        logger.info("onvif discovery: answering probes on UDP port %d", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def answer(self, data: bytes, addr: tuple[str, int]) -> None:
        local = self._bind if self._bind not in ("", "0.0.0.0", "::") else _local_address_towards(addr[0])
        reply = probe_match(data, endpoint=self._endpoint, xaddr=self._xaddr(local))
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)
            self.answered += 1

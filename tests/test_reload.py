"""Changes without restarts: ``conf/`` read again (reload, SIGHUP, ``citygate reload``) and
cameras managed through the API, on a running gateway with real demo cameras."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgspec
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from gateway.appkeys import AUDIT, CAMERAS, RECORDING
from gateway.cameras import RESTARTED
from gateway.recording.index import Gap
from gateway.reload import PID_FILE, RELOADER
from tests.fixtures_app import ROOT, camera_toml

SMALL = {"width": 160, "height": 120, "fps": 10, "keyframe_interval": 0.5}
FAST = "[recording]\nsegment-seconds = 1\n"


async def poll(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)


class Viewer:
    """A WHEP viewer that counts the frames it receives."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.frames = 0
        self._task: asyncio.Task | None = None

    async def open(self, session, url: str) -> None:
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with session.post(url, data=self.pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as resp:
            assert resp.status == 201, await resp.text()
            answer = await resp.text()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        track = self.pc.getTransceivers()[0].receiver.track

        async def count() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    await track.recv()
                    self.frames += 1

        self._task = asyncio.create_task(count())
        await poll(self._got(5), what="first frames")

    def _got(self, n: int):
        start = self.frames

        async def check() -> bool:
            return self.frames >= start + n

        return check

    async def keeps_receiving(self) -> None:
        await poll(self._got(5), what="frames after the change")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pc.close()


async def test_reload_adds_changes_removes_refuses_and_applies_roles(make_gateway):
    gw = await make_gateway(camera_toml("c-a", "demo", area="centre", **SMALL) + camera_toml("c-b", "demo", area="north", **SMALL), FAST)
    await gw.wait_online()
    reloader = gw.app[RELOADER]
    audit = gw.app[AUDIT]
    viewer = Viewer()
    await viewer.open(gw.session, f"{gw.url}/api/cameras/c-a/whep")
    officer = await gw.sign_in("officer", role="district-police", areas=("centre",))
    officer_view = Viewer()
    await officer_view.open(officer, f"{gw.url}/api/cameras/c-a/whep")
    untouched = gw.app[CAMERAS].get("c-a")
    t0 = time.time()
    cameras_toml = gw.conf_dir / "cameras.toml"

    # add c-c, change c-b (its picture size): c-a is not touched
    cameras_toml.write_text(
        camera_toml("c-a", "demo", area="centre", **SMALL)
        + camera_toml("c-b", "demo", area="north", **{**SMALL, "width": 176})
        + camera_toml("c-c", "demo", area="north", **SMALL)
    )
    reloaded_at = time.time()
    result = await reloader.reload(by="tester", via="test")
    assert result.ok and result.added == ["c-c"] and result.changed == ["c-b"] and result.restarted == ["c-b"], result
    await gw.wait_online("c-b", "c-c")
    assert (await gw.get_json("/api/cameras/c-b"))["width"] == 176

    async def recorded_since_restart() -> list:
        items = await gw.app[RECORDING].timeline("c-b", t0, time.time())
        return [i for i in items if not isinstance(i, Gap) and i.start >= reloaded_at]

    # c-b records on after its restart; a restart that left a hole in the recording (longer
    # than a run's tolerance: the FFmpeg ingest takes ~0.5 s to reconnect, the native one a
    # few ms) is catalogued as such, never as an unexplained gap
    await poll(recorded_since_restart, what="c-b's recording after its restart")
    items = await gw.app[RECORDING].timeline("c-b", t0, time.time())
    assert [g.reason for g in items if isinstance(g, Gap) and g.id is not None] in ([], [RESTARTED])
    await viewer.keeps_receiving()

    # an invalid cameras.toml is refused whole, naming file and key; nothing changes
    cameras_toml.write_text(
        camera_toml("c-a", "demo", area="centre", **SMALL) + camera_toml("c-d", "no-such-vendor", area="north")
    )
    result = await reloader.reload(by="tester", via="test")
    assert not result.ok
    assert any(str(cameras_toml) in e and "camera[1].vendor" in e and "no-such-vendor" in e for e in result.errors), result.errors
    assert gw.app[CAMERAS].ids() == ["c-a", "c-b", "c-c"]
    refused = await audit.query(action="config.reload")
    assert refused[0]["outcome"] == "refused" and "camera[1].vendor" in str(refused[0]["detail"])

    # remove c-b (its recordings stay); a role loses live.view: the officer's view ends, audited
    cameras_toml.write_text(camera_toml("c-a", "demo", area="centre", **SMALL) + camera_toml("c-c", "demo", area="north", **SMALL))
    roles = gw.conf_dir / "roles.toml"
    roles.write_text(roles.read_text().replace(
        'actions = ["live.view", "snapshot.view", "ptz.control", "incident.open", "plates.search"]',
        'actions = ["snapshot.view", "ptz.control", "incident.open", "plates.search"]',
    ))
    result = await reloader.reload(by="tester", via="test")
    assert result.ok and result.removed == ["c-b"] and result.roles["changed"] == ["district-police"], result
    changed_at = time.monotonic()
    while officer_view.pc.connectionState not in ("closed", "failed"):
        assert time.monotonic() - changed_at < 2.0, "the officer's view outlived the role change"
        await asyncio.sleep(0.05)
    revoked = await poll(lambda: audit.query(action="live.revoked", user="officer"), what="live.revoked audited")
    assert revoked[0]["camera"] == "c-a"
    assert "c-b" not in gw.app[CAMERAS].ids()
    assert await gw.app[RECORDING].timeline("c-b", t0, time.time()), "the removed camera's recordings are gone"
    reloads = [r for r in await audit.query(action="config.reload") if r["outcome"] == "ok"]
    assert reloads[0]["user"] == "tester" and reloads[0]["detail"]["removed"] == ["c-b"]

    # c-a: the same running camera all along, its viewer still receiving, no gap in its recording
    await viewer.keeps_receiving()
    assert gw.app[CAMERAS].get("c-a") is untouched
    t1 = time.time()
    recording = gw.app[RECORDING]

    async def recorded_through() -> bool:
        items = await recording.timeline("c-a", t0, t1)
        return bool(items) and not isinstance(items[-1], Gap) and items[-1].end >= t1

    await poll(recorded_through, what="c-a recorded up to the last reload")
    items = await recording.timeline("c-a", t0, t1)
    assert not [i for i in items if isinstance(i, Gap)], items
    await viewer.close()
    await officer_view.close()


async def test_cameras_managed_through_the_api(make_gateway):
    gw = await make_gateway(camera_toml("c-file", "demo", area="centre", **SMALL))
    admin = await gw.sign_in("root", role="admin", all_areas=True)
    audit = gw.app[AUDIT]
    base = f"{gw.url}/api/cameras/managed"
    options = {"width": 160, "height": 120, "fps": 10, "keyframe-interval": 0.5}
    table = {"id": "c-api", "vendor": "demo", "area": "north", "name": "Bridge", "options": options}

    # an operator may not (refused, audited)
    async with gw.session.post(base, json=table) as resp:
        assert resp.status == 403
    assert (await audit.query(action="cameras.manage", user="tester"))[0]["outcome"] == "refused"

    # the same errors as cameras.toml, by key; a file camera's id is taken
    async with admin.post(base, json={**table, "vendor": "no-such-vendor"}) as resp:
        assert resp.status == 400
        assert "managed camera: camera.vendor: unknown vendor 'no-such-vendor'" in (await resp.json())["error"]
    async with admin.post(base, json={**table, "colour": "red"}) as resp:
        assert resp.status == 400 and "camera.colour: unknown key" in (await resp.json())["error"]
    async with admin.post(base, json={**table, "id": "c-file"}) as resp:
        assert resp.status == 409
    async with admin.put(f"{base}/c-file", json=table) as resp:
        assert resp.status == 409  # the file's cameras are read-only here

    async with admin.post(base, json=table) as resp:
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["created_by"] == "root"
    await gw.wait_online("c-api")
    listing = await (await admin.get(base)).json()
    assert [m["id"] for m in listing["managed"]] == ["c-api"] and [c["id"] for c in listing["configured"]] == ["c-file"]
    async with admin.get(f"{gw.url}/api/cameras/inventory") as resp:  # the city's register lists it too
        assert sorted(r["id"] for r in await resp.json()) == ["c-api", "c-file"]

    async with admin.put(f"{base}/c-api", json={**table, "name": "Old bridge", "area": "centre"}) as resp:
        assert resp.status == 200, await resp.text()
    assert (await gw.get_json("/api/cameras/c-api"))["name"] == "Old bridge"
    edits = await audit.query(action="cameras.edit")
    assert edits[0]["user"] == "root" and edits[0]["detail"]["changed"] == ["area", "name"]

    async with admin.delete(f"{base}/c-api") as resp:
        assert resp.status == 200
    assert gw.app[CAMERAS].ids() == ["c-file"]
    assert [r["action"] for r in await audit.query(camera="c-api") if r["outcome"] == "ok"][:3] == [
        "cameras.remove", "cameras.edit", "cameras.add"
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _reload_audit(db_file: Path) -> list[tuple[str, str, dict]]:
    import json

    import sqlalchemy as sa

    from gateway.db import Database, audit

    async with Database(f"sqlite+aiosqlite:///{db_file}") as db, db.connect() as conn:
        rows = (await conn.execute(
            sa.select(audit.c.user, audit.c.outcome, audit.c.detail).where(audit.c.action == "config.reload").order_by(audit.c.id)
        )).all()
    return [(user, outcome, json.loads(detail) if isinstance(detail, str) else detail) for user, outcome, detail in rows]


def test_sighup_reloads_a_real_citygate_serve(tmp_path: Path):
    conf = tmp_path / "conf"
    conf.mkdir()
    port = _free_port()
    (conf / "gateway.toml").write_text(f'[server]\ndata-dir = "data"\nport = {port}\n')
    (conf / "cameras.toml").write_text(camera_toml("c-1", "demo", **SMALL))
    (conf / "roles.toml").write_text((ROOT / "conf" / "roles.toml").read_text())
    env = {**os.environ, "CITYGATE_CONFIG": str(conf)}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        pid_file = conf / "data" / PID_FILE
        deadline = time.monotonic() + 30
        while not pid_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "citygate serve did not start"
            time.sleep(0.1)
        assert int(pid_file.read_text()) == proc.pid
        (conf / "cameras.toml").write_text(camera_toml("c-1", "demo", **SMALL) + camera_toml("c-2", "demo", **SMALL))
        with (conf / "gateway.toml").open("a") as f:
            f.write("[map]\nzoom = 12\n")  # not reloadable: named as applying at the next restart
        done = subprocess.run([sys.executable, "-m", "gateway", "reload"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "cameras added: c-2" in done.stdout and "applied at the next restart only: [map]" in done.stdout, done.stdout
        (conf / "cameras.toml").write_text("[[camera]]\nid = 'c-1'\n")
        done = subprocess.run([sys.executable, "-m", "gateway", "reload"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "camera[0].vendor: required key is missing" in done.stderr, done.stderr
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert not pid_file.exists()
    assert b"Traceback" not in out, out.decode()[-3000:]
    who = f"os:{getpass.getuser()}"
    reloads = asyncio.run(_reload_audit(conf / "data" / "citygate.db"))
    assert [(u, o, d["via"]) for u, o, d in reloads] == [(who, "ok", "citygate reload"), (who, "refused", "citygate reload")]
    assert reloads[0][2]["added"] == ["c-2"] and "camera[0].vendor" in reloads[1][2]["errors"][0]


async def test_a_cluster_node_follows_added_changed_and_removed_cameras(tmp_path: Path):
    """Two nodes on one database, each told the same change (as a reload or the managed
    cameras' poll does on every node): an added camera is taken by one of them, a changed
    one restarts on its owner under the same lease, a removed one stops and its lease is
    released (and nobody takes it again). A camera added through the API on one node is
    learnt by the other from the table (each node re-reads it), run by one, and removed on both."""
    import sqlalchemy as sa

    from gateway import config as config_mod
    from gateway.cameras import CameraManager
    from gateway.cluster.node import ClusterNode
    from gateway.config import ClusterConfig
    from gateway.db import Database, leases
    from gateway.events import EventBus
    from gateway.plugins import load_plugins

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gateway.toml").write_text('[server]\ndata-dir = "data"\n')
    cams = [camera_toml(f"k{i}", "demo", **SMALL) for i in range(4)]
    (conf / "cameras.toml").write_text("".join(cams))
    vendors = load_plugins().camera_vendors()
    full = config_mod.load(conf, vendors=vendors)
    k0, k1, k2, k3 = full.cameras
    start = [k0, k1, k2]
    events = EventBus()
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'cluster.db'}") as db:
        nodes, managers = [], []
        for name in ("n-a", "n-b"):
            cluster = ClusterConfig(node_id=name, advertise_url=f"http://{name}.invalid", lease_seconds=2, secret_file="x")
            manager = CameraManager(full, vendors, events, owns_all=False, cameras=start)
            node = ClusterNode(db, cluster, events)
            node.bind(manager)
            nodes.append(node)
            managers.append(manager)
        async with contextlib.AsyncExitStack() as stack:
            for node, manager in zip(nodes, managers, strict=True):
                await stack.enter_async_context(manager)
                await stack.enter_async_context(node)

            def owner(cid: str) -> ClusterNode | None:
                holders = [n for n in nodes if cid in n.owned()]
                return holders[0] if len(holders) == 1 else None

            def running(cid: str) -> list[int]:
                return [i for i, m in enumerate(managers) if m.is_running(cid)]

            async def spread() -> bool:
                return all(owner(c.id) is not None and len(running(c.id)) == 1 for c in start)

            await poll(spread, 15, "the cameras spread over the nodes")
            # k3 added and k1 changed on every node; k0 removed on every node
            changed = msgspec.structs.replace(k1, name="renamed", record=False)
            epoch_before = owner("k1")._owned["k1"].epoch
            holder_k0 = owner("k0")
            for manager in managers:
                await manager.apply([changed, k2, k3])

            async def settled() -> bool:
                return owner("k3") is not None and len(running("k3")) == 1 and not running("k0")

            await poll(settled, 15, "k3 taken, k0 stopped")
            k1_owner = owner("k1")
            assert k1_owner._owned["k1"].epoch == epoch_before  # restarted under the same lease
            assert managers[nodes.index(k1_owner)].get("k1").config.name == "renamed"
            assert "k0" not in holder_k0.owned()
            async with db.connect() as conn:
                row = (await conn.execute(sa.select(leases.c.holder).where(leases.c.name == "camera:k0"))).one()
            assert row.holder is None
            for node in nodes:  # a few more ticks: nobody takes the removed camera
                await node.settled()
                await node.settled()
            assert not any("k0" in n.owned() for n in nodes) and not running("k0")

            # a camera managed through the API on one node: the other learns of it from the table
            from gateway.access.audit import AuditLog
            from gateway.access.control import AccessControl
            from gateway.access.policy import load_roles
            from gateway.reload import Reloader

            (conf / "roles.toml").write_text((ROOT / "conf" / "roles.toml").read_text())
            policy = load_roles(conf)
            audit_log = await stack.enter_async_context(AuditLog(db))
            plugins = load_plugins()
            files = msgspec.structs.replace(full, cameras=(changed, k2, k3))
            reloaders = []
            for manager in managers:
                access = await stack.enter_async_context(AccessControl(db=db, policy=policy, audit=audit_log, config=full))
                reloaders.append(await stack.enter_async_context(Reloader(
                    config=files, plugins=plugins, policy=policy, cameras=manager, access=access, audit=audit_log, db=db,
                    cluster=True,
                )))
            table = {"id": "m1", "vendor": "demo", "area": "a", "options": {"width": 160, "height": 120, "fps": 10}}
            await reloaders[0].add_managed(table, by="root")

            async def taken() -> bool:
                return all("m1" in m.ids() for m in managers) and owner("m1") is not None and len(running("m1")) == 1

            await poll(taken, 15, "m1 known to both nodes and run by one")
            await reloaders[1].remove_managed("m1")

            async def gone() -> bool:
                return not any("m1" in m.ids() for m in managers) and owner("m1") is None and not running("m1")

            await poll(gone, 15, "m1 stopped and forgotten by both nodes")

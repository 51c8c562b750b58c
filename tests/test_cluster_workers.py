"""``citygate serve --workers 2`` on the default SQLite database and local disk: two worker
processes own the cameras between them, and the one public URL serves everything — every
camera's WHEP view and LL-HLS playlist answer through it, whichever worker the kernel hands
each connection to; SIGTERM stops both workers cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCSessionDescription

from tests.fixtures_app import ROOT, camera_toml
from tests.fixtures_cameras import free_port
from tests.test_cluster import Node, poll, signed_in
from tests.test_webrtc import client_offer_pc

CAMERAS = ("w0", "w1", "w2", "w3")
PASSWORD = "Two-workers-pass-1"


@pytest.mark.parametrize("machines", [False, True], ids=["one-machine", "node-of-a-cluster-of-machines"])
async def test_two_workers_share_the_cameras_behind_one_port(tmp_path: Path, machines: bool) -> None:
    """Alone, the workers are nodes ``<host>-w<i>`` on loopback; as a ``[cluster]`` node of a
    cluster of machines, they are ``<node-id>-w<i>``, reached on the advertised host at the
    ports after the advertised one, signed with the cluster's secret."""
    conf = tmp_path / "conf"
    conf.mkdir()
    port = free_port()
    cluster = "lease-seconds = 3\n"
    if machines:
        secret = tmp_path / "cluster.key"
        secret.write_text("s" * 64)
        secret.chmod(0o600)
        cluster += f'node-id = "rack-1"\nadvertise-url = "http://127.0.0.1:{port}"\nsecret-file = "{secret}"\n'

    conf.joinpath("cameras.toml").write_text("".join(
        camera_toml(cid, "demo", area="d1", width=160, height=120, fps=10, keyframe_interval=1.0) for cid in CAMERAS
    ))
    conf.joinpath("roles.toml").write_text((ROOT / "conf" / "roles.toml").read_text())
    conf.joinpath("gateway.toml").write_text(textwrap.dedent(f"""
        [server]
        port = {port}
        data-dir = "data"
        [cluster]
    """) + cluster)
    url = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(conf), "--workers", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    supervisor = Node("supervisor", tmp_path, "", tmp_path / "unused")
    supervisor.proc = proc
    sessions: list[aiohttp.ClientSession] = []
    pcs = []
    try:
        one_time = await supervisor.first_password()
        supervisor.drain_output()
        first = await signed_in(url, PASSWORD, first=one_time)
        sessions.append(first)
        http = await signed_in(url, PASSWORD)
        sessions.append(http)

        async def shared():
            async with http.get(url + "/api/cluster") as resp:
                report = await resp.json()
            owners = list(report["cameras"].values())
            nodes = {n["node"] for n in report["nodes"] if n["alive"]}
            return report if len(nodes) == 2 and sorted(owners.count(n) for n in nodes) == [2, 2] else None
        report = await poll(shared, 60, "two workers owning two cameras each")
        assert all(node.endswith(("-w0", "-w1")) for node in report["cameras"].values())
        if machines:
            assert {(n["node"], n["url"]) for n in report["nodes"]} == {
                ("rack-1-w0", f"http://127.0.0.1:{port + 1}"), ("rack-1-w1", f"http://127.0.0.1:{port + 2}")}

        for cid in CAMERAS:  # every camera through the one URL, whichever worker answers
            pc = client_offer_pc()
            pcs.append(pc)
            await pc.setLocalDescription(await pc.createOffer())

            async def answered(cid=cid, pc=pc):
                async with http.post(url + f"/api/cameras/{cid}/whep", data=pc.localDescription.sdp.encode(),
                                     headers={"Content-Type": "application/sdp"}) as resp:
                    return await resp.text() if resp.status == 201 else None
            answer = await poll(answered, 20, f"a WHEP answer for {cid}")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            frame = await asyncio.wait_for(pc.getTransceivers()[0].receiver.track.recv(), 20)
            assert (frame.width, frame.height) == (160, 120)

            async def playlist(cid=cid):
                async with http.get(url + f"/api/cameras/{cid}/hls/stream.m3u8") as resp:
                    return resp.status == 200 and (await resp.text()).startswith("#EXTM3U")
            await poll(playlist, 20, f"an LL-HLS playlist of {cid}")
    finally:
        for pc in pcs:
            await pc.close()
        for session in sessions:
            await session.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 30)
            assert code == 0, "the supervisor and its workers stop cleanly on SIGTERM"
        if supervisor.output is not None:
            await supervisor.output

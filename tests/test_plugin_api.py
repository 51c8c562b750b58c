"""The declared plugin API (``gateway.plugin_api``): built-in plugins keep to it, registry and
auth hooks run through pluggy (traced), registered classes are checked, plugin options are
validated with file, key and reason, lifecycle hooks get the facade, the CLI and the export
service import no entry modules, and the template plugin in ``examples/`` works end to end
in a real gateway."""

from __future__ import annotations

import ast
import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from aiohttp import web

import gateway.plugin_api as plugin_api
from gateway.appkeys import AUDIT
from gateway.config import load as load_config
from gateway.errors import ConfigErrors, PluginError
from gateway.plugin_api import CameraVendor, EventSink, Gateway, MaskFilter, PluginOptions, api, hookimpl, requires
from gateway.plugins import load_plugins
from tests.fixtures_app import RunningGateway

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "citygate-example-plugin"
PLUGIN_DIRS = (ROOT / "plugins", EXAMPLE / "citygate_example")


# --- the surface ---------------------------------------------------------------------------


def _gateway_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a ``gateway`` module in ``path``, at any depth."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name == "gateway" or a.name.startswith("gateway.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "gateway" or node.module.startswith("gateway."):
                found.append((node.lineno, node.module))
    return found


def test_plugins_import_only_the_plugin_api():
    files = [f for d in PLUGIN_DIRS for f in sorted(d.rglob("*.py"))]
    assert len(files) > 20
    private = [
        f"{f.relative_to(ROOT)}:{line}: imports {module}"
        for f in files
        for line, module in _gateway_imports(f)
        if module != "gateway.plugin_api"
    ]
    assert not private, "plugins may import only gateway.plugin_api (add what they need there):\n" + "\n".join(private)


def test_the_scan_catches_a_private_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from gateway.plugin_api import hookimpl\n\ndef f():\n    from gateway.appkeys import CONFIG\n    import gateway.db\n")
    assert [m for _, m in _gateway_imports(bad)] == ["gateway.plugin_api", "gateway.appkeys", "gateway.db"]


def test_every_exported_name_resolves_and_hooks_take_the_facade():
    assert not [n for n in plugin_api.__all__ if not hasattr(plugin_api, n)]
    for base in (plugin_api.CameraVendor, plugin_api.StorageBackend, plugin_api.MaskFilter, plugin_api.ExportFormat,
                 plugin_api.AuthProvider, plugin_api.EventSink):
        assert issubclass(base.Options, PluginOptions), base
    from gateway import hookspecs

    for name in ("gateway_startup", "gateway_shutdown", "gateway_add_routes"):
        assert list(getattr(hookspecs, name).__annotations__)[:1] == ["gateway"], name


# --- import cycles ---------------------------------------------------------------------------


def _module_graph() -> dict[str, set[str]]:
    """Runtime imports between gateway modules (``if TYPE_CHECKING:`` blocks left out)."""
    mods: dict[str, Path] = {}
    for f in (ROOT / "gateway").rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f

    def runtime_nodes(tree: ast.AST):
        for node in ast.iter_child_nodes(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from (n for orelse in node.orelse for n in [orelse, *runtime_nodes(orelse)])
                continue
            yield node
            yield from runtime_nodes(node)

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names)
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_no_import_cycle_through_the_cli_or_the_composition_root():
    graph = _module_graph()
    entry = ["gateway.__main__", "gateway.app"] + sorted(m for m in graph if m.startswith("gateway.cli_"))
    assert len(entry) > 4
    cycles = {m: sorted(n for n in _reach(graph, m) if m in _reach(graph, n)) for m in entry}
    assert not {m: c for m, c in cycles.items() if m in c}, cycles
    assert "gateway.app" not in _reach(graph, "gateway.evidence.requests")
    assert not [m for m in graph if "gateway.__main__" in graph[m]], "nothing imports the command line's entry module"


def test_cli_and_export_modules_import_in_isolation():
    modules = [
        "gateway.cli_audit", "gateway.cli_cameras", "gateway.cli_export", "gateway.cli_recordings", "gateway.cli_users",
        "gateway.evidence.requests", "gateway.plugin_api",
    ]
    procs = [subprocess.Popen([sys.executable, "-c", f"import {m}"], cwd=ROOT, stderr=subprocess.PIPE, text=True) for m in modules]
    failed = {m: p.communicate(timeout=120)[1][-800:] for m, p in zip(modules, procs) if p.wait() != 0}
    assert not failed, failed


# --- registries ---------------------------------------------------------------------------------


class _Vendor(CameraVendor):
    @staticmethod
    def id() -> str:
        return "acme"


def _vendor_plugin(cls: object) -> object:
    class Plugin:
        @hookimpl
        def gateway_register_camera_vendors(self, register):
            register(cls)

    return Plugin()


@pytest.fixture(scope="module")
def builtins():
    return load_plugins()


def test_a_class_is_checked_against_its_interface():
    class NotAVendor:
        @staticmethod
        def id() -> str:
            return "nope"

    class BadId(CameraVendor):
        @staticmethod
        def id() -> str:
            return "has space"

    class NoId(CameraVendor):
        pass

    cases = [
        (NotAVendor, "not a subclass of gateway.plugin_api.CameraVendor"),
        (BadId, "with the id 'has space'"),
        (NoId, "without a usable static id(): NotImplementedError"),
        ("acme", "not a class"),
    ]
    for cls, reason in cases:
        plugins = load_plugins(entry_points=False)
        plugins.register(_vendor_plugin(cls), name="acme-cams")
        with pytest.raises(PluginError, match=r"plugin 'acme-cams' registered .* as a camera vendor") as err:
            plugins.camera_vendors()
        assert reason in str(err.value)


def test_a_duplicate_id_from_two_third_party_plugins_names_both(builtins):
    class Other(CameraVendor):
        @staticmethod
        def id() -> str:
            return "acme"

    builtins.register(_vendor_plugin(_Vendor), name="acme-cams")
    builtins.register(_vendor_plugin(Other), name="other-cams")
    try:
        with pytest.raises(PluginError) as err:
            builtins.camera_vendors()
        assert "camera vendor id 'acme' is registered by two plugins, 'other-cams' and 'acme-cams'" in str(err.value)
        assert "CITYGATE_DISABLE_PLUGINS" in str(err.value)
    finally:
        builtins.unregister("acme-cams")
        builtins.unregister("other-cams")
    assert "acme" not in builtins.camera_vendors() and "demo" in builtins.camera_vendors()


def test_registry_and_auth_hooks_are_traced(monkeypatch, caplog):
    monkeypatch.setenv("CITYGATE_TRACE_HOOKS", "1")
    plugins = load_plugins(entry_points=False)
    started: list[str] = []

    class First:
        @hookimpl(tryfirst=True)
        async def gateway_authenticate(self, request):
            return "alice"

    class Later:
        @hookimpl
        async def gateway_authenticate(self, request, gateway):
            started.append("later")  # never runs: the first provider answered
            return "bob"

    plugins.register(_vendor_plugin(_Vendor), name="acme-cams")
    plugins.register(First(), name="first")
    plugins.register(Later(), name="later")
    with caplog.at_level(logging.DEBUG, logger="gateway.plugins"):
        assert list(plugins.camera_vendors()) == ["acme"]
        assert asyncio.run(plugins.authenticate(object())) == "alice"
    traced = caplog.text
    assert "gateway_register_camera_vendors" in traced and "gateway_authenticate" in traced
    assert started == []


# --- options -------------------------------------------------------------------------------------


def _conf(tmp_path: Path, gateway_toml: str, cameras_toml: str = "") -> Path:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gateway.toml").write_text(gateway_toml)
    (conf / "cameras.toml").write_text(cameras_toml)
    return conf


def test_mask_filter_and_event_sink_options_are_validated_with_file_and_key(tmp_path, builtins):
    conf = _conf(
        tmp_path,
        '[events.sinks.incident-log]\nqueue-size = 0\n[events.sinks.incident-log-typo]\npath = "x"\n',
        '[[camera]]\nid = "c1"\nvendor = "demo"\narea = "north"\n'
        '[[camera.masks]]\npoints = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]\nfilter = "pixelate"\noptions = { block = 2 }\n'
        '[[camera.masks]]\npoints = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]\nfilter = "fill"\noptions = { colour = "red" }\n',
    )
    with pytest.raises(ConfigErrors) as err:
        load_config(conf, vendors=builtins.camera_vendors(), mask_filters=builtins.mask_filters(), event_sinks=builtins.event_sinks())
    text = str(err.value)
    assert f"{conf}/cameras.toml: camera[0].masks[0].options.block: expected `int` >= 4" in text
    assert f"{conf}/cameras.toml: camera[0].masks[1].options.colour: unknown key" in text
    assert f"{conf}/gateway.toml: events.sinks.incident-log.queue-size: expected `int` >= 1" in text
    assert f"{conf}/gateway.toml: events.sinks.incident-log-typo: unknown event sink 'incident-log-typo'" in text


def test_valid_options_reach_the_plugins_as_their_structs(tmp_path, builtins):
    conf = _conf(
        tmp_path,
        '[events.sinks.incident-log]\npath = "logs/i.jsonl"\nkinds = ["incident.opened"]\n',
        '[[camera]]\nid = "c1"\nvendor = "demo"\narea = "north"\n'
        '[[camera.masks]]\npoints = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]\nfilter = "blur"\noptions = { radius = 4 }\n',
    )
    config = load_config(conf, vendors=builtins.camera_vendors(), mask_filters=builtins.mask_filters(), event_sinks=builtins.event_sinks())
    sink_options = config.events.sinks["incident-log"]
    assert type(sink_options).__name__ == "IncidentLogOptions" and sink_options.kinds == ("incident.opened",)

    from gateway.media.masking import filter_options

    blur = builtins.mask_filters()["blur"]()
    assert filter_options(blur, {"radius": 4}) == blur.Options(radius=4)
    assert filter_options(blur, {"radius": 1}) is None  # the mask stage then fills the region black


# --- the facade ------------------------------------------------------------------------------------


def test_routes_must_declare_access_and_a_contract():
    gateway = Gateway(web.Application())

    async def bare(request):
        return web.Response()

    @requires("audit.read", camera_param=None)
    async def no_contract(request):
        return web.Response()

    @api(summary="fine")
    @requires("audit.read", camera_param=None)
    async def fine(request):
        return web.Response()

    with pytest.raises(PluginError, match="declares no access"):
        gateway.add_route("GET", "/api/plugins/x", bare)
    with pytest.raises(PluginError, match=r"has no api\(...\) declaration"):
        gateway.add_route("GET", "/api/plugins/x", no_contract)
    gateway.add_route("GET", "/api/plugins/x", fine)
    with pytest.raises(PluginError, match="exists only between gateway_startup and gateway_shutdown"):
        gateway.emit("x.y")


def _key_names(app: web.Application) -> set[str]:
    """The short names of what the application holds (``cameras`` for ``gateway.appkeys.cameras``)."""
    return {getattr(key, "_name", str(key)).rsplit(".", 1)[-1] for key in app}


class _Lifecycle:
    """A third-party plugin with state: sees the facade in every lifecycle hook."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []
        self.events: list[str] = []
        self.services_at_startup: set[str] = set()

    @hookimpl
    async def gateway_startup(self, gateway: Gateway) -> None:
        self.seen.append(("startup", gateway))
        # what the composition root has started so far (a test's look behind the facade)
        self.services_at_startup = _key_names(gateway._app)
        gateway.emit("example.started", detail_key="x")
        await gateway.audit("example.started")

    @hookimpl
    def gateway_shutdown(self, gateway: Gateway) -> None:
        self.seen.append(("shutdown", gateway))

    @hookimpl
    def gateway_add_routes(self, gateway: Gateway) -> None:
        self.seen.append(("routes", gateway))


# --- the example plugin, installed by CI, through a real gateway ---------------------------------------

CAMERAS = """
[[camera]]
id = "north-1"
vendor = "demo"
area = "north"
enabled = false

[[camera]]
id = "south-1"
vendor = "demo"
area = "south"
enabled = false
"""

SINK_TOML = """
[events.sinks.incident-log]
path = "plugin-data/incidents.jsonl"
"""


async def _wait_lines(path: Path, count: int) -> list[bytes]:
    deadline = time.monotonic() + 15
    while True:
        lines = path.read_bytes().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, f"{path}: {len(lines)} of {count} lines"
        await asyncio.sleep(0.05)


async def test_example_plugin_end_to_end(make_gateway):
    assert "incident-log" in load_plugins().event_sinks(), f"install it: pip install -e {EXAMPLE.relative_to(ROOT)}"
    lifecycle = _Lifecycle()
    plugins = load_plugins()
    plugins.register(lifecycle, name="lifecycle-probe")
    gw: RunningGateway = await make_gateway(CAMERAS, SINK_TOML, plugins=plugins)
    assert [k for k, _ in lifecycle.seen] == ["routes", "startup"]
    assert all(isinstance(g, Gateway) and g is lifecycle.seen[0][1] for _, g in lifecycle.seen)
    # gateway_startup runs once every service exists: nothing was started after it
    # (a single node: the cluster's context, the one last by design, starts nothing here)
    started = _key_names(gw.app)
    assert {"exports", "ptz", "pushes", "hls", "incidents", "tours", "cameras", "recording"} <= started
    assert started - lifecycle.services_at_startup == set()

    officer = await gw.sign_in("officer", role="duty-officer", all_areas=True)
    north = await gw.sign_in("north-officer", role="duty-officer", areas=("north",))
    for camera in ("north-1", "south-1"):
        async with officer.post(gw.url + "/api/incidents", json={"camera": camera, "category": "theft", "note": camera}) as resp:
            assert resp.status == 201, await resp.text()

    path = gw.conf_dir / "data" / "plugin-data" / "incidents.jsonl"
    lines = await _wait_lines(path, 2)
    written = [msgspec.json.decode(line) for line in lines]
    assert [(e["kind"], e["camera"]) for e in written] == [("incident.opened", "north-1"), ("incident.opened", "south-1")]
    assert not any(e["kind"] == "example.started" for e in written)  # only the configured kinds

    url = gw.url + "/api/plugins/example/incidents"
    async with officer.get(url, params={"limit": "10"}) as resp:
        assert resp.status == 200
        assert [e["camera"] for e in (await resp.json())["entries"]] == ["north-1", "south-1"]
    async with north.get(url) as resp:  # an officer of one district sees its incidents only
        assert [e["camera"] for e in (await resp.json())["entries"]] == ["north-1"]
    async with north.get(url, params={"limit": "0"}) as resp:
        assert resp.status == 400
    async with gw.session.get(url) as resp:  # an operator may open incidents, not read the register
        assert resp.status == 403
    async with gw.anonymous.get(url) as resp:
        assert resp.status == 401

    audit = gw.app[AUDIT]
    await audit.flush()
    reads = await audit.query(action="example.incidents.read")
    assert sorted((r["user"], r["outcome"]) for r in reads) == [("north-officer", "ok"), ("officer", "ok")]
    refused = await audit.query(action="incident.manage", outcome="refused")
    assert any(r["user"] == "tester" and r["detail"]["path"] == "/api/plugins/example/incidents" for r in refused)
    assert await audit.query(action="example.started")

    async with gw.session.get(gw.url + "/api/openapi.json") as resp:
        assert "/api/plugins/example/incidents" in (await resp.json())["paths"]


def test_an_old_style_lifecycle_hook_is_named_with_the_way_forward():
    class OldStyle:
        @hookimpl
        def gateway_startup(self, app):
            pass

    plugins = load_plugins(entry_points=False)
    with pytest.raises(PluginError, match=r"(?s)plugin .old-style. does not match the hook specifications: .*take `gateway`"):
        plugins.register(OldStyle(), name="old-style")

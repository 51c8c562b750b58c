import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway import hookspecs
from gateway.errors import PluginError
from gateway.interfaces import CameraVendor
from gateway.plugins import load_plugins

ROOT = Path(__file__).parent.parent


def make_distribution(where: Path, module_source: str, name: str = "acme_cams", version: str = "1.2.0") -> Path:
    """A real installed distribution: a module plus a dist-info with an entry point."""
    (where / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = where / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[gateway]\nacme = {name}\n")
    return where


ACME = """
from gateway import hookimpl
from gateway.interfaces import CameraVendor, StreamProfile

class AcmeCamera(CameraVendor):
    @staticmethod
    def id():
        return "acme"

    async def stream_url(self, profile=StreamProfile.MAIN):
        return "rtsp://127.0.0.1:1/acme"

@hookimpl
def gateway_register_camera_vendors(register):
    register(AcmeCamera)
"""


def run_cli(*args: str, extra_path: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = dict(os.environ, **(env or {}))
    if extra_path:
        environ["PYTHONPATH"] = f"{extra_path}{os.pathsep}{environ.get('PYTHONPATH', '')}"
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, env=environ, cwd=ROOT)


def test_entry_point_plugin_is_discovered_and_listed(tmp_path):
    make_distribution(tmp_path, ACME)
    proc = run_cli("plugins", "list", extra_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "acme\n    kinds:    camera vendor\n    provides: vendor:acme\n    from:     acme-cams 1.2.0 (entry point" in out
    # built-ins are discovered through the very same entry point group
    assert "demo\n" in out and "citygate 0.1.0 (built-in" in out


def test_entry_point_vendor_usable_in_config(tmp_path):
    (tmp_path / "site").mkdir()
    make_distribution(tmp_path / "site", ACME)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "cameras.toml").write_text('[[camera]]\nid = "a1"\nvendor = "acme"\narea = "north"\n')
    (conf / "roles.toml").write_text((ROOT / "conf" / "roles.toml").read_text())
    proc = run_cli("check-config", str(conf), extra_path=tmp_path / "site")
    assert proc.returncode == 0, proc.stderr
    assert "a1" in proc.stdout and "acme" in proc.stdout


def test_blocked_plugin_is_not_loaded(tmp_path):
    make_distribution(tmp_path, ACME)
    proc = run_cli("plugins", "list", extra_path=tmp_path, env={"CITYGATE_DISABLE_PLUGINS": "acme"})
    assert "acme\n    blocked by CITYGATE_DISABLE_PLUGINS" in proc.stdout
    assert "vendor:acme" not in proc.stdout


def test_broken_plugin_is_named_with_the_way_out(tmp_path):
    make_distribution(tmp_path, "raise ImportError('libacme.so missing')\n")
    proc = run_cli("plugins", "list", extra_path=tmp_path)
    assert proc.returncode == 2
    assert "plugin 'acme' from acme-cams 1.2.0 failed to load" in proc.stderr
    assert "CITYGATE_DISABLE_PLUGINS=acme" in proc.stderr


def test_misspelt_hook_is_caught_at_startup():
    from gateway import hookimpl

    plugins = load_plugins()

    class Typo:
        @hookimpl
        def gateway_register_camera_vendor(self, register):  # missing "s"
            pass

    with pytest.raises(PluginError, match="gateway_register_camera_vendor"):
        plugins.register(Typo(), name="typo")


def test_integrator_vendor_wins_over_builtin_of_same_id():
    plugins = load_plugins()

    class MyRtsp(CameraVendor):
        @staticmethod
        def id():
            return "generic_rtsp"

    from gateway import hookimpl

    class Override:
        @hookimpl
        def gateway_register_camera_vendors(self, register):
            register(MyRtsp)

    plugins.register(Override(), name="override")
    try:
        assert plugins.camera_vendors()["generic_rtsp"] is MyRtsp
    finally:
        plugins.unregister("override")
    assert plugins.camera_vendors()["generic_rtsp"] is not MyRtsp


def test_every_hookspec_is_documented_and_has_a_kind():
    from gateway.plugins import _KIND_OF_HOOK

    specs = [name for name in dir(hookspecs) if name.startswith("gateway_")]
    assert set(specs) == set(_KIND_OF_HOOK)
    readme = (ROOT / "README.md").read_text()
    for name in specs:
        assert getattr(hookspecs, name).__doc__, name
        assert name in readme, f"{name} is not documented in README.md"


async def test_async_auth_provider_falls_through_to_next():
    plugins = load_plugins()
    from gateway import hookimpl

    class NoOpinion:
        @hookimpl(tryfirst=True)
        async def gateway_authenticate(self, request):
            return None

    class Knows:
        @hookimpl
        async def gateway_authenticate(self, request):
            return "alice"

    plugins.register(NoOpinion(), name="a")
    plugins.register(Knows(), name="b")
    assert await plugins.authenticate(object()) == "alice"

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway import config
from gateway.errors import ConfigErrors
from gateway.plugins import load_plugins

PLUGINS = load_plugins()
VENDORS = PLUGINS.camera_vendors()

GOOD_CAMERA = """
[[camera]]
id = "cam-7"
name = "Market Square"
vendor = "generic_rtsp"
area = "centre"
[camera.options]
url = "rtsp://10.0.0.7/stream1"
username = "viewer"
password-env = "CAM7_PASSWORD"
"""


def write(tmp_path: Path, cameras: str = "", gateway: str = "") -> Path:
    (tmp_path / "cameras.toml").write_text(textwrap.dedent(cameras))
    (tmp_path / "gateway.toml").write_text(textwrap.dedent(gateway))
    return tmp_path


def errors_of(tmp_path: Path, env=None) -> list:
    with pytest.raises(ConfigErrors) as info:
        config.load(tmp_path, vendors=VENDORS, env=env or {})
    return info.value.errors


def test_valid_config_with_secret_from_environment(tmp_path):
    cfg = config.load(write(tmp_path, GOOD_CAMERA), vendors=VENDORS, env={"CAM7_PASSWORD": "s3cret"})
    cam = cfg.camera("cam-7")
    assert cam.options.password == "s3cret" and cam.options.username == "viewer"
    assert cfg.server.port == 8080 and cfg.data_dir == (tmp_path / "../data").resolve()


def test_shipped_default_config_is_valid():
    cfg = config.load(Path(__file__).parent.parent / "conf", vendors=VENDORS, env={})
    assert [c.vendor for c in cfg.cameras] == ["demo"] * 4


@pytest.mark.parametrize(
    ("cameras", "gateway", "file", "key", "reason"),
    [
        ("", "[server]\nprot = 80\n", "gateway.toml", "server.prot", "unknown key"),
        ("", "[server]\nport = \"eighty\"\n", "gateway.toml", "server.port", "expected `int`, got `str`"),
        ("", "[server]\nport = 70000\n", "gateway.toml", "server.port", "<= 65535"),
        ("", "[ingest]\nread-timeout = -1\n", "gateway.toml", "ingest.read-timeout", "> 0"),
        ("", "[server\n", "gateway.toml", "", "not valid TOML"),
        ('[[camera]]\nid = "a"\narea = "x"\n', "", "cameras.toml", "camera[0].vendor", "required key is missing"),
        ('[[camera]]\nid = "a"\nvendor = "acme"\narea = "x"\n', "", "cameras.toml", "camera[0].vendor", "unknown vendor 'acme'"),
        (GOOD_CAMERA + GOOD_CAMERA.replace("[camera.options]", "[camera.options]"), "", "cameras.toml", "camera[1].id", "duplicate camera id 'cam-7'"),
        (GOOD_CAMERA.replace('username = "viewer"', 'usernme = "viewer"'), "", "cameras.toml", "camera[0].options.usernme", "unknown key"),
        (GOOD_CAMERA.replace("rtsp://10.0.0.7/stream1", "http://x/"), "", "cameras.toml", "camera[0].options", "must be an rtsp:// or rtsps:// URL"),
        ('[[camera]]\nid = "bad id!"\nvendor = "demo"\narea = "x"\n', "", "cameras.toml", "camera[0]", "camera id 'bad id!' must be 1-64 letters"),
    ],
)
def test_each_mistake_names_file_key_and_reason(tmp_path, cameras, gateway, file, key, reason):
    errs = errors_of(write(tmp_path, cameras, gateway), env={"CAM7_PASSWORD": "x"})
    assert len(errs) == 1, [e.message for e in errs]
    err = errs[0]
    assert err.file.endswith(file)
    assert err.key == key
    assert reason in err.reason, err.message


def test_missing_environment_variable_is_named(tmp_path):
    (err,) = errors_of(write(tmp_path, GOOD_CAMERA), env={})
    assert err.key == "camera[0].options.password-env"
    assert "environment variable 'CAM7_PASSWORD' is not set" in err.reason


def test_all_mistakes_reported_together(tmp_path):
    errs = errors_of(write(tmp_path, GOOD_CAMERA + '[[camera]]\nid = "b"\nvendor = "nope"\narea = "x"\n', "[server]\nfoo = 1\n"))
    assert {e.key for e in errs} == {"server.foo", "camera[0].options.password-env", "camera[1].vendor"}


def test_check_config_cli_exits_nonzero_and_names_file_and_key(tmp_path):
    write(tmp_path, '[[camera]]\nid = "a"\nvendor = "acme"\narea = "x"\n')
    proc = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{tmp_path}/cameras.toml: camera[0].vendor: unknown vendor 'acme'" in proc.stderr


def test_check_config_cli_summarises_a_good_config(tmp_path):
    write(tmp_path, GOOD_CAMERA)
    (tmp_path / "roles.toml").write_text((Path(__file__).parent.parent / "conf" / "roles.toml").read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(tmp_path)],
        capture_output=True, text=True, env={"CAM7_PASSWORD": "x", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "cameras: 1 (1 enabled)" in proc.stdout and "cam-7" in proc.stdout
    roles = next(line for line in proc.stdout.splitlines() if line.strip().startswith("roles: "))
    assert {"admin", "agency", "auditor", "district-police"} <= set(roles.split(": ", 1)[1].split(", "))


def test_missing_or_wrong_roles_file_is_named(tmp_path):
    write(tmp_path, "")
    proc = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and f"{tmp_path}/roles.toml: missing" in proc.stderr
    (tmp_path / "roles.toml").write_text('[role.op]\nactions = ["live.view", "live.veiw"]\n')
    proc = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{tmp_path}/roles.toml: role.op.actions[1]: unknown action 'live.veiw'" in proc.stderr

"""A real OpenLDAP server (Debian's ``slapd``) on loopback for the directory sign-in tests.

The fixture writes a minimal ``slapd.conf`` (mdb database, core/cosine/inetOrgPerson
schemas), a self-signed certificate for 127.0.0.1 made with ``cryptography``, loads the
people and groups with ``slapadd`` and runs ``slapd`` in the foreground with LDAPS and
plain LDAP (for StartTLS) on free loopback ports; it stops it afterwards. Tests change the
directory as its administrator over LDAP (``Ldap.modify``/``Ldap.delete``).
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SCHEMA = Path("/etc/ldap/schema")
SUFFIX = "dc=city,dc=test"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "directory-admin-secret"
LOOKUP_DN = f"cn=citygate,ou=services,{SUFFIX}"
LOOKUP_PASSWORD = "lookup-account-secret"
#: Every person in the test directory has this password.
LDAP_PASSWORD = "Directory-Pa55word!"
#: Users and the groups they are in (group cn -> members' uids).
PEOPLE = ("alice", "bob", "carol", "dave", "erin", "frank", "grace")
GROUPS = {
    "cctv-operators": ("alice", "erin", "frank", "dave"),
    "north-district": ("alice", "frank"),
    "cctv-supervisors": ("bob", "erin"),
    "canteen": ("carol",),
}

requires_slapd = pytest.mark.skipif(
    not Path(SLAPD).exists(), reason="no slapd (apt-get install slapd ldap-utils; scripts/test.sh does it)"
)


def person_dn(uid: str) -> str:
    return f"uid={uid},ou=people,{SUFFIX}"


def group_dn(cn: str) -> str:
    return f"cn={cn},ou=groups,{SUFFIX}"


@dataclass
class Ldap:
    ldaps_url: str
    ldap_url: str  #: plain LDAP, for StartTLS
    ca_file: Path

    def _admin(self):  # -> ldap3.Connection
        import ldap3

        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(self.ca_file))
        server = ldap3.Server(self.ldaps_url, use_ssl=True, tls=tls, get_info=ldap3.NONE)
        return ldap3.Connection(server, user=ADMIN_DN, password=ADMIN_PASSWORD, auto_bind=True)

    def modify(self, dn: str, changes: dict) -> None:
        """``changes`` as ldap3 takes them: ``{"member": [(ldap3.MODIFY_DELETE, [dn])]}``."""
        conn = self._admin()
        try:
            assert conn.modify(dn, changes), conn.result
        finally:
            conn.unbind()

    def delete(self, dn: str) -> None:
        conn = self._admin()
        try:
            assert conn.delete(dn), conn.result
        finally:
            conn.unbind()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def _ldif() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: city\no: City\n",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: {LOOKUP_DN}\nobjectClass: person\ncn: citygate\nsn: service\nuserPassword: {LOOKUP_PASSWORD}\n",
    ]
    for uid in PEOPLE:
        entries.append(
            f"dn: {person_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid.title()} Example\n"
            f"sn: Example\nuserPassword: {LDAP_PASSWORD}\n"
        )
    for cn, members in GROUPS.items():
        lines = "".join(f"member: {person_dn(m)}\n" for m in members)
        entries.append(f"dn: {group_dn(cn)}\nobjectClass: groupOfNames\ncn: {cn}\n{lines}")
    return "\n".join(entries)


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"slapd exited with {proc.returncode}: {proc.stderr.read().decode(errors='replace')[-2000:]}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"slapd did not listen on {port} within {timeout}s")


@pytest.fixture(scope="module")
def ldap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ldap]:
    """slapd on loopback with people, groups and a lookup account; stopped afterwards."""
    if not Path(SLAPD).exists():
        pytest.skip("no slapd (apt-get install slapd ldap-utils; scripts/test.sh does it)")
    work = tmp_path_factory.mktemp("slapd")
    (work / "db").mkdir()
    cert, key = _self_signed(work)
    conf = work / "slapd.conf"
    conf.write_text(
        f"include {SCHEMA}/core.schema\ninclude {SCHEMA}/cosine.schema\ninclude {SCHEMA}/inetorgperson.schema\n"
        f"modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {work}/slapd.pid\n"
        f"TLSCertificateFile {cert}\nTLSCertificateKeyFile {key}\n"
        f'database mdb\nsuffix "{SUFFIX}"\nrootdn "{ADMIN_DN}"\nrootpw {ADMIN_PASSWORD}\ndirectory {work}/db\n'
        f"maxsize 10485760\n"
        "access to attrs=userPassword by self write by anonymous auth by * none\n"
        "access to * by users read by * none\n"
    )
    (work / "data.ldif").write_text(_ldif())
    subprocess.run([SLAPADD, "-f", str(conf), "-l", str(work / "data.ldif")], check=True, capture_output=True, timeout=60)
    ldaps_port, ldap_port = _free_port(), _free_port()
    urls = f"ldaps://127.0.0.1:{ldaps_port}/ ldap://127.0.0.1:{ldap_port}/"
    proc = subprocess.Popen([SLAPD, "-f", str(conf), "-h", urls, "-d", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_port(ldaps_port, proc)
        _wait_port(ldap_port, proc)
        yield Ldap(f"ldaps://127.0.0.1:{ldaps_port}", f"ldap://127.0.0.1:{ldap_port}", cert)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

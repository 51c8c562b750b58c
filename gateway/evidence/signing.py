"""The gateway's evidence signing key (Ed25519) and the check of a signed package.

The private key is created on first start in the data dir (never under the web root),
written with mode 0600 in a 0700 directory. Its public key is served at
``GET /api/evidence/public-key`` and copied into every package, so a court can check a
package with the key it got from the city, not only with the one the package carries.

``manifest.sig`` is a small JSON document: the algorithm, the signing key's fingerprint
(SHA-256 of the raw public key), the SHA-256 of the exact manifest bytes that were
signed, and the Ed25519 signature over those bytes. The fingerprint and digest are not
what makes the package trustworthy (the signature is); they let ``verify`` say *what*
went wrong: an edited manifest, a signature from another key, or a forged signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import posixpath
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config import Config

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "public-key.pem"
#: Files every package has besides those its manifest lists.
PACKAGE_META = frozenset({MANIFEST, SIGNATURE, PUBLIC_KEY})
ALGORITHM = "Ed25519"
CHUNK = 1 << 20


def fingerprint(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """A PEM public key, or 32 raw bytes given as base64 or hex."""
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(text)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the key is not an Ed25519 public key")
        return key
    for decode in (bytes.fromhex, base64.b64decode):
        try:
            raw = decode(text.decode() if decode is bytes.fromhex else text)
        except ValueError:
            continue
        if len(raw) == 32:
            return Ed25519PublicKey.from_public_bytes(raw)
    raise ValueError("not a PEM, hex or base64 Ed25519 public key")


class Signer:
    """Holds the private key; ``sign`` makes the ``manifest.sig`` document."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.fingerprint = fingerprint(self.public_key)
        self.public_pem = public_pem(self.public_key)

    @classmethod
    def load_or_create(cls, path: Path) -> Signer:
        """Read the key at ``path``; create it (0600, in a 0700 directory) if missing.

        Blocking file I/O: call at start-up or from a worker thread."""
        if path.exists():
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                logger.warning("evidence: signing key %s is readable by others (mode %o); tightening to 0600", path, mode)
                path.chmod(0o600)
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path} is not an Ed25519 private key")
            return cls(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        signer = cls(key)
        logger.warning("evidence: created a new signing key %s (fingerprint %s); keep a backup of it", path, signer.fingerprint)
        return signer

    def signature(self, data: bytes) -> bytes:
        """The raw Ed25519 signature of ``data`` (callers prefix their own domain tag)."""
        return self._key.sign(data)

    def sign(self, manifest: bytes) -> bytes:
        doc = {
            "algorithm": ALGORITHM,
            "key_fingerprint": self.fingerprint,
            "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "signature": base64.b64encode(self.signature(manifest)).decode(),
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def outside_web_root(path: Path, web_root: Path | None, key: str) -> None:
    """Raise a ConfigError naming ``key`` if ``path`` would be served by the web server."""
    if web_root is not None:
        root = web_root.resolve()
        if path == root or root in path.parents:
            raise ConfigError("gateway.toml", key, f"{path} lies inside the web root {root}")


def gateway_key_path(config: Config) -> Path:
    """Where the gateway's private key lives (``[evidence] key-path`` in the data dir)."""
    return (config.data_dir / config.evidence.key_path).resolve()


def gateway_public_key(config: Config) -> Ed25519PublicKey:
    """The public half of the gateway's key, read from ``[evidence] key-path`` (never
    created: a verifier on the gateway's host trusts the key that host signs with).
    Raises OSError (no key there, not readable) or ValueError (not an Ed25519 key)."""
    path = gateway_key_path(config)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key.public_key()


def gateway_signer(config: Config, web_root: Path | None) -> Signer:
    """The gateway's key: it signs evidence packages and audit checkpoints. Blocking file I/O."""
    path = gateway_key_path(config)
    outside_web_root(path, web_root, "evidence.key-path")
    return Signer.load_or_create(path)


# --------------------------------------------------------------------------------------
# verifying a package


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files_checked: int = 0
    key_fingerprint: str = ""
    #: The signature was checked with a key the verifier trusts (given by them), not only
    #: with the key the package carries: anyone can re-sign a forged package with their own.
    trusted: bool = False

    @property
    def ok(self) -> bool:
        """The package is intact and consistent with its signature (see ``trusted``)."""
        return not self.problems


def _sha256_member(zf: zipfile.ZipFile, name: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with zf.open(name) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def verify_package(package: Path, trusted_key: Ed25519PublicKey | None = None) -> VerifyReport:
    """Check the signature over the manifest and every file's hash; name each failure.

    Without ``trusted_key`` the key inside the package is used, which proves only that
    the package is consistent with itself: the report says so, with the fingerprint to
    compare against the gateway's published key."""
    report = VerifyReport(trusted=trusted_key is not None)
    try:
        zf = zipfile.ZipFile(package)
    except (OSError, zipfile.BadZipFile) as exc:
        report.problems.append(f"{package} is not a readable ZIP package: {exc}")
        return report
    with zf:
        duplicates = duplicate_names(zf.namelist())
        if duplicates:
            # ZIP readers disagree on which of two same-named members they use: the one
            # checked here need not be the one a court's tool extracts.
            for name, count in duplicates:
                report.problems.append(
                    f"{name} is in the package {count} times: a file was added under a name already used, "
                    "so which copy a reader extracts is undefined"
                )
            return report
        names = set(zf.namelist())
        manifest = zf.read(MANIFEST) if MANIFEST in names else None
        if manifest is None:
            report.problems.append(f"{MANIFEST} is missing: nothing says what the package should contain")
            return report
        key = trusted_key
        if key is None:
            if PUBLIC_KEY not in names:
                report.problems.append(f"{PUBLIC_KEY} is missing and no --key was given: the signature cannot be checked")
            else:
                try:
                    key = load_public_key(zf.read(PUBLIC_KEY))
                except ValueError as exc:
                    report.problems.append(f"{PUBLIC_KEY} is unusable: {exc}")
            if key is not None:
                report.notes.append(
                    f"checked with the key inside the package (fingerprint {fingerprint(key)}); "
                    "compare it with the gateway's published key, or pass --key"
                )
        if key is not None:
            report.key_fingerprint = fingerprint(key)
            _check_signature(zf, names, manifest, key, report)
        _check_files(zf, names, manifest, report)
    return report


def duplicate_names(names: list[str]) -> list[tuple[str, int]]:
    """Member names that occur more than once, also after normalising the path
    (``./a``, ``a//b``, ``a\\b``), each with how often; in package order."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for name in names:
        key = posixpath.normpath(name.replace("\\", "/")).lstrip("/")
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, name)
    return [(first[key], n) for key, n in counts.items() if n > 1]


def _check_signature(zf: zipfile.ZipFile, names: set[str], manifest: bytes, key: Ed25519PublicKey, report: VerifyReport) -> None:
    if SIGNATURE not in names:
        report.problems.append(f"{SIGNATURE} is missing: the manifest is not signed")
        return
    try:
        doc = json.loads(zf.read(SIGNATURE))
        signature = base64.b64decode(doc["signature"], validate=True)
        signed_digest = str(doc.get("manifest_sha256", ""))
        signer = str(doc.get("key_fingerprint", ""))
    except (ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"{SIGNATURE} is not a signature document ({type(exc).__name__}): the signature was replaced or damaged")
        return
    if doc.get("algorithm") != ALGORITHM:
        report.problems.append(f"{SIGNATURE} uses algorithm {doc.get('algorithm')!r}, not {ALGORITHM}: the signature was replaced")
        return
    expected = fingerprint(key)
    if signer != expected:
        report.problems.append(
            f"{SIGNATURE} names signing key {signer or '(none)'}, not the trusted key {expected}: the signature was replaced"
        )
        return
    if hashlib.sha256(manifest).hexdigest() != signed_digest:
        report.problems.append(f"{MANIFEST} was edited after it was signed: its SHA-256 differs from the one in {SIGNATURE}")
        return
    try:
        key.verify(signature, manifest)
    except InvalidSignature:
        report.problems.append(
            f"the signature in {SIGNATURE} is not valid for {MANIFEST} under key {expected}: the signature was replaced or forged"
        )


def _check_files(zf: zipfile.ZipFile, names: set[str], manifest: bytes, report: VerifyReport) -> None:
    try:
        listed = json.loads(manifest)["files"]
        entries = {str(f["path"]): f for f in listed}
    except (ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"{MANIFEST} has no readable file list ({type(exc).__name__}: {exc})")
        return
    for path, entry in sorted(entries.items()):
        if path not in names:
            report.problems.append(f"{path} is missing from the package (the manifest lists it)")
            continue
        digest, size = _sha256_member(zf, path)
        report.files_checked += 1
        if digest != entry.get("sha256"):
            report.problems.append(f"{path} was altered: its SHA-256 is {digest}, the manifest says {entry.get('sha256')}")
        elif size != entry.get("bytes"):
            report.problems.append(f"{path} has {size} bytes, the manifest says {entry.get('bytes')}")
    for extra in sorted(names - set(entries) - PACKAGE_META):
        if not extra.endswith("/"):
            report.problems.append(f"{extra} is in the package but not in the manifest: a file was added")

"""Signed checkpoints of the audit chain, and the check of the chain against them.

The hash chain shows that entries were altered, inserted or deleted, unless whoever did it
recomputed every hash after the edit: anyone who can write the database can. A checkpoint
is a statement "entry N has hash H", signed with the gateway's Ed25519 key, which lives in
the gateway's data dir and never in the database. Every few minutes (if the chain grew) and
at shutdown the gateway signs its chain head and

- stores the checkpoint in ``audit_checkpoints``, numbered consecutively;
- publishes it as the event ``audit.checkpoint`` (a webhook takes it to a SIEM);
- appends it as one JSON line to ``[audit] checkpoint-file``, if set: a file on another
  host's share or WORM storage, out of reach of database administrators.

``citygate audit verify`` then checks every checkpoint's signature against the trusted
key and the chain against every checkpoint: a rewritten chain no longer has the vouched
hash at the vouched entry, a truncated one ends before it, and deleted checkpoint rows
leave a gap in their numbering. Deleting the newest checkpoints together with the newest
entries is what the external copies (file, SIEM) are for. Deleting the newest checkpoints
(or all of them) is caught from the chain itself: the gateway signs every entry within
``checkpoint-minutes`` of its writing, so entries left uncovered for longer than that (plus
``FRESHNESS_MARGIN``) before the newest entry mean checkpoints are missing from the top.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.access.audit import AuditLog, VerifyResult
from gateway.db import Database, audit, audit_checkpoints
from gateway.evidence.signing import Signer
from gateway.interfaces import Event
from gateway.tasks import cancel_and_wait

if TYPE_CHECKING:
    from gateway.config import Config

logger = logging.getLogger(__name__)

#: Prefixed to the signed bytes so a checkpoint signature can never pass for the
#: signature of anything else the same key signs (evidence manifests).
DOMAIN = b"citygate audit checkpoint v1\n"
EVENT = "audit.checkpoint"
#: Slack on top of ``checkpoint-minutes`` before uncovered entries count as missing
#: checkpoints: the signing tick sleeps after each checkpoint, and a busy loop runs late.
FRESHNESS_MARGIN = 60.0
_SIGNED = ("id", "at", "entry_id", "entry_hash")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: int
    at: float
    entry_id: int
    entry_hash: str
    key_fingerprint: str
    signature: str  #: base64 of the Ed25519 signature over ``signed_bytes()``

    def signed_bytes(self) -> bytes:
        body = {k: getattr(self, k) for k in _SIGNED}
        return DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> Checkpoint:
        """Raises ValueError naming what is wrong with ``doc``."""
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        types = {"id": int, "at": (int, float), "entry_id": int, "entry_hash": str, "key_fingerprint": str, "signature": str}
        for key, kind in types.items():
            if key not in doc:
                raise ValueError(f"no {key!r}")
            if not isinstance(doc[key], kind) or isinstance(doc[key], bool):
                raise ValueError(f"{key!r} has the wrong type")
        return cls(**{k: doc[k] for k in types})

    def label(self, source: str = "") -> str:
        when = datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return f"checkpoint {self.id} (signed {when}{', ' + source if source else ''})"


def sign_checkpoint(signer: Signer, *, id: int, at: float, entry_id: int, entry_hash: str) -> Checkpoint:
    unsigned = Checkpoint(id, at, entry_id, entry_hash, signer.fingerprint, "")
    signature = base64.b64encode(signer.signature(unsigned.signed_bytes())).decode()
    return Checkpoint(id, at, entry_id, entry_hash, signer.fingerprint, signature)


def signature_problem(cp: Checkpoint, trusted: dict[str, Ed25519PublicKey], label: str) -> str | None:
    key = trusted.get(cp.key_fingerprint)
    if key is None:
        return f"{label} is signed by key {cp.key_fingerprint[:16]}…, which is not trusted (give its public key with --key)"
    try:
        key.verify(base64.b64decode(cp.signature, validate=True), cp.signed_bytes())
    except (InvalidSignature, ValueError):
        return f"{label} has an invalid signature: it was forged or edited"
    return None


# --------------------------------------------------------------------------------------
# making checkpoints


def append_line(path: Path, cp: Checkpoint) -> None:
    """One JSON line, flushed to disk before the checkpoint counts as published."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(cp.to_json(), sort_keys=True, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


class AuditCheckpointer:
    """Signs the chain head every ``every`` seconds if it moved, and once more at exit."""

    def __init__(
        self,
        db: Database,
        signer: Signer,
        *,
        every: float,
        file: Path | None = None,
        publish: Callable[[Event], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.signer = signer
        self.every = every
        self.file = file
        self._publish = publish
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AuditCheckpointer:
        if self.every > 0:
            # entries written while the gateway was stopped (by the command line) are signed
            # now, so they never sit uncovered beside the entries of this run
            try:
                await self.checkpoint()
            except Exception:
                logger.exception("audit: the checkpoint at start-up failed")
            self._task = asyncio.create_task(self._run(), name="audit-checkpoints")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)
        if self.every > 0:
            try:
                await self.checkpoint()
            except Exception:
                logger.exception("audit: the checkpoint at shutdown failed")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.checkpoint()
            except Exception:
                logger.exception("audit: making a checkpoint failed")

    async def checkpoint(self) -> Checkpoint | None:
        """Sign the current head; None if the newest checkpoint already covers it."""
        async with self.db.begin() as conn:
            if not self.db.is_sqlite:  # one numbering across nodes
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(724302)"))
            head = (await conn.execute(sa.select(audit.c.id, audit.c.hash).order_by(audit.c.id.desc()).limit(1))).first()
            last = (
                await conn.execute(
                    sa.select(audit_checkpoints.c.id, audit_checkpoints.c.entry_id).order_by(audit_checkpoints.c.id.desc()).limit(1)
                )
            ).first()
            if head is None or (last is not None and last.entry_id >= head.id):
                return None
            cp = sign_checkpoint(self.signer, id=(last.id if last else 0) + 1, at=self._clock(), entry_id=head.id, entry_hash=head.hash)
            await conn.execute(audit_checkpoints.insert().values(**cp.to_json()))
        if self.file is not None:
            try:
                await asyncio.to_thread(append_line, self.file, cp)
            except OSError as exc:
                logger.error("audit: could not append checkpoint %d to %s: %s (it is in the database)", cp.id, self.file, exc)
        if self._publish is not None:
            self._publish(Event(kind=EVENT, at=cp.at, detail=cp.to_json()))
        logger.debug("audit: checkpoint %d vouches for entry %d", cp.id, cp.entry_id)
        return cp


def checkpoint_file(config: Config) -> Path | None:
    name = config.audit.checkpoint_file
    return (config.data_dir / name).resolve() if name else None


def checkpointer(config: Config, db: Database, signer: Signer, publish: Callable[[Event], Any]) -> AuditCheckpointer:
    """The checkpointer ``[audit]`` asks for."""
    return AuditCheckpointer(db, signer, every=config.audit.checkpoint_minutes * 60, file=checkpoint_file(config), publish=publish)


# --------------------------------------------------------------------------------------
# checking the chain against checkpoints


async def stored_checkpoints(db: Database, *, limit: int | None = None) -> list[Checkpoint]:
    """Oldest first; with ``limit``, the newest ``limit``."""
    q = sa.select(*[audit_checkpoints.c[f.name] for f in fields(Checkpoint)])
    q = q.order_by(audit_checkpoints.c.id.desc()).limit(limit) if limit else q.order_by(audit_checkpoints.c.id)
    async with db.connect() as conn:
        rows = (await conn.execute(q)).mappings().all()
    cps = [Checkpoint(**row) for row in rows]
    return sorted(cps, key=lambda c: c.id)


def read_anchor_file(path: Path) -> tuple[list[tuple[Checkpoint, str]], list[str]]:
    """The checkpoints in a checkpoint file, each with where it was, and the lines that
    are not checkpoints (a torn last line after a crash is one of them, and says so)."""
    found: list[tuple[Checkpoint, str]] = []
    problems: list[str] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                found.append((Checkpoint.from_json(json.loads(line)), f"{path.name} line {number}"))
            except ValueError as exc:
                problems.append(f"{path} line {number} is not a checkpoint: {exc}")
    return found, problems


@dataclass
class ChainReport:
    chain: VerifyResult
    problems: list[str] = field(default_factory=list)
    checkpoints: int = 0  #: checkpoints whose signature was checked
    newest: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.problems


async def verify_chain(
    db: Database,
    trusted: dict[str, Ed25519PublicKey],
    *,
    anchors: Iterable[tuple[Checkpoint, str]] = (),
    every: float = 0.0,
) -> ChainReport:
    """The chain, the stored checkpoints, and checkpoints kept elsewhere (``anchors``,
    each with a note of where it came from), checked against each other.

    ``every`` (seconds; ``checkpoint-minutes`` x 60, 0 when checkpoints are off) also
    checks that the newest checkpoint is not missing: see ``freshness_problem``."""
    problems: list[str] = []
    stored = await stored_checkpoints(db)
    by_id = {cp.id: cp for cp in stored}
    expected = 1
    for cp in stored:
        if cp.id == expected + 1:
            problems.append(f"checkpoint {expected} is missing from the database: it was deleted")
        elif cp.id != expected:
            problems.append(f"checkpoints {expected} to {cp.id - 1} are missing from the database: they were deleted")
        expected = cp.id + 1
    vouchers: list[tuple[Checkpoint, str]] = [(cp, cp.label()) for cp in stored]
    for cp, source in anchors:
        label = cp.label(source)
        mine = by_id.get(cp.id)
        if mine == cp:
            continue  # the same checkpoint: checked once, as the stored one
        if mine is None:
            problems.append(f"{label} is missing from the database: it was deleted")
        else:
            problems.append(f"{label} differs from the database's checkpoint {cp.id}: one of them was edited")
        vouchers.append((cp, label))
    vouched: dict[int, tuple[str, str]] = {}
    checked = 0
    newest_valid: tuple[Checkpoint, str] | None = None
    for cp, label in vouchers:
        problem = signature_problem(cp, trusted, label)
        checked += 1
        if problem is not None:
            problems.append(problem)
            continue
        if newest_valid is None or cp.entry_id > newest_valid[0].entry_id:
            newest_valid = (cp, label)
        other = vouched.get(cp.entry_id)
        if other is not None and other[0] != cp.entry_hash:
            problems.append(f"{label} and {other[1]} vouch for different hashes of entry {cp.entry_id}")
            continue
        vouched.setdefault(cp.entry_id, (cp.entry_hash, label))
    chain = await AuditLog(db).verify(vouched=vouched)
    newest = max((cp for cp, _ in vouchers), key=lambda c: c.id, default=None)
    if every > 0:
        problem = await freshness_problem(db, newest_valid, every)
        if problem is not None:
            problems.append(problem)
    return ChainReport(chain, problems, checked, newest)


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def freshness_problem(db: Database, newest: tuple[Checkpoint, str] | None, every: float) -> str | None:
    """Whether checkpoints are missing from the top: None, or why.

    While it runs, the gateway signs the chain's head every ``every`` seconds whenever the
    chain grew (and at start and shutdown), so no entry stays uncovered for longer than
    that. If the first entry after the newest (validly signed) checkpoint was written more
    than ``every`` + ``FRESHNESS_MARGIN`` before the newest entry, a signing tick fell in
    between and the checkpoint it made is gone. Comparing the uncovered entries with each
    other, not with the checkpoint's time, keeps a quiet night (no entries, so nothing to
    sign) from looking like a deletion."""
    after = newest[0].entry_id if newest is not None else 0
    async with db.connect() as conn:
        first = (
            await conn.execute(sa.select(audit.c.id, audit.c.at).where(audit.c.id > after).order_by(audit.c.id).limit(1))
        ).first()
        if first is None:
            return None  # the newest checkpoint covers the head
        last = (await conn.execute(sa.select(audit.c.id, audit.c.at).order_by(audit.c.id.desc()).limit(1))).first()
    uncovered = last.at - first.at
    if uncovered <= every + FRESHNESS_MARGIN:
        return None
    minutes = f"checkpoint-minutes = {every / 60:g}"
    entries = f"entries {first.id} to {last.id} (written {_when(first.at)} to {_when(last.at)}, over {_span(uncovered)})"
    if newest is None:
        return (
            f"no signed checkpoint vouches for any entry, yet {entries}: with {minutes} the gateway signs the "
            "chain within minutes, so its checkpoints were deleted (or it never signed: run 'citygate audit checkpoint')"
        )
    return (
        f"the newest signed checkpoint, {newest[1]}, vouches only for entry {newest[0].entry_id}, yet {entries} "
        f"are not covered: with {minutes} a later checkpoint must cover entry {first.id}, so the newest checkpoints "
        "were deleted (entries written by the command line while the gateway was stopped are signed with "
        "'citygate audit checkpoint')"
    )

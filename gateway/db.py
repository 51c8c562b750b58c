"""The metadata store: SQLAlchemy 2 Core, async.

A SQLite file in the data dir by default (WAL mode, so readers never wait for the one
writer), PostgreSQL through asyncpg when ``[database] url`` is set. Recordings, users,
grants and the audit chain all live here; nothing of it lives only in a local file other
than the database itself, so several nodes can share one PostgreSQL later.

Schema migrations are numbered Python functions run in order inside one transaction each
and recorded in ``schema_version``. We do not use Alembic: the schema is small, the same
DDL must run on SQLite and PostgreSQL from SQLAlchemy's metadata, and a gateway upgrades
itself at start without an ``alembic.ini`` and an env script for operators to keep.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gateway.datadir import private_dir, private_file
from gateway.errors import GatewayError

logger = logging.getLogger(__name__)

metadata = sa.MetaData()
#: A PostgreSQL transaction left idle this long (ms) is ended by the server (a frozen node).
IDLE_IN_TRANSACTION_MS = 5000
#: The PostgreSQL advisory lock nodes take to migrate one at a time.
MIGRATION_LOCK = 0x43_69_74_79  # "City"

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(64), nullable=False),
    #: Districts the user may act in; ``all_areas`` lifts the restriction.
    sa.Column("areas", sa.JSON, nullable=False),
    sa.Column("all_areas", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("must_change_password", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
    sa.Column("first_failed_at", sa.Float),
    sa.Column("locked_until", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("password_changed_at", sa.Float),
    sa.Column("last_login_at", sa.Float),
    #: Who created the account and who last changed it; ``*_confirmed_by`` is the second
    #: administrator of a change under the two-person rule (migration 11).
    sa.Column("created_by", sa.String(100)),
    sa.Column("created_confirmed_by", sa.String(100)),
    sa.Column("changed_by", sa.String(100)),
    sa.Column("changed_confirmed_by", sa.String(100)),
    sa.Column("changed_at", sa.Float),
)

#: Sign-in failures per (typed username, client address) and the addresses an account signed
#: in from; client "*" counts failures from every address. Unknown names are kept alike, so
#: the answers never tell which accounts exist.
login_addresses = sa.Table(
    "login_addresses",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("client", sa.String(100), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("window_start", sa.Float),
    sa.Column("locked_until", sa.Float),
    #: Locks in a row (each twice as long as the one before); a successful sign-in resets it.
    sa.Column("lockouts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_failed_at", sa.Float),
    #: Set once the account signed in from this address: a known-good address.
    sa.Column("last_ok_at", sa.Float),
)

#: Account changes that need a second administrator (two-person rule).
pending_account_changes = sa.Table(
    "pending_account_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),  # create | update | reset-password
    sa.Column("username", sa.String(64), nullable=False, index=True),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("requested_by", sa.String(100), nullable=False),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),  # pending | confirmed | cancelled | failed
    sa.Column("decided_by", sa.String(100)),
    sa.Column("decided_at", sa.Float),
)

sessions = sa.Table(
    "sessions",
    metadata,
    #: SHA-256 of the token; the token itself is never stored.
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # "cookie" | "token"
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # absolute expiry
    sa.Column("idle_timeout", sa.Float, nullable=False),
    sa.Column("client", sa.String(100), nullable=False, server_default=""),
    sa.Column("user_agent", sa.String(300), nullable=False, server_default=""),
    sa.Column("revoked_at", sa.Float),
    #: Wrong current passwords given in this session in a row (migration 11).
    sa.Column("password_failures", sa.Integer, nullable=False, server_default="0"),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), index=True),
    sa.Column("role", sa.String(64)),
    sa.Column("cameras", sa.JSON, nullable=False),
    sa.Column("actions", sa.JSON, nullable=False),
    sa.Column("starts_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
    sa.Column("revoked_by", sa.String(64)),
    #: Where the grant came from, e.g. "push:17"; free text for manual grants.
    sa.Column("source", sa.String(64), nullable=False, server_default="manual"),
    sa.CheckConstraint("(user_id IS NULL) <> (role IS NULL)", name="grant_has_one_subject"),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("user", sa.String(64)),
    sa.Column("client", sa.String(100)),
    sa.Column("action", sa.String(64), nullable=False, index=True),
    sa.Column("outcome", sa.String(16), nullable=False),  # "ok" | "refused" | "failed"
    sa.Column("camera", sa.String(64), index=True),
    sa.Column("range_from", sa.Float),
    sa.Column("range_to", sa.Float),
    sa.Column("purpose", sa.String(500)),
    #: Canonical JSON (sorted keys); part of the hashed content.
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
)


# -- recordings (migration 2) ---------------------------------------------------------


#: Signed statements "entry N of the audit chain has hash H", made every few minutes with
#: the gateway's Ed25519 key (which the database never holds): someone who can write the
#: database can recompute the hash chain, but cannot sign a checkpoint that matches it.
audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False, index=True),
    sa.Column("entry_hash", sa.String(64), nullable=False),
    sa.Column("key_fingerprint", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(100), nullable=False),
)

segments = sa.Table(
    "segments",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("start", sa.Float, nullable=False),  # epoch seconds of the first sample
    sa.Column("end", sa.Float, nullable=False),
    sa.Column("duration", sa.Float, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("storage_key", sa.String(300), nullable=False),
    sa.Column("backend", sa.String(64), nullable=False),
    sa.Column("codec", sa.String(16), nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("replicated_at", sa.Float),
    #: Size of the segment's init section (ftyp+moov): HLS playback maps it by byte range.
    sa.Column("init_bytes", sa.Integer, nullable=False, server_default="0"),
    #: The privacy masks in force when the segment started (migration 9): the database mask
    #: version and the SHA-256 of the complete mask set ("" for an unmasked camera). Playback
    #: and exports re-mask a segment whose digest is not the camera's current one.
    sa.Column("mask_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("mask_digest", sa.String(64), nullable=False, server_default=""),
    sa.Index("ix_segments_camera_start", "camera", "start"),
    sa.Index("ix_segments_start", "start"),
)

#: Contiguous runs of segments, kept by the catalogue as segments are added and removed,
#: so a timeline over weeks reads a handful of rows instead of every 60 s segment.
recording_runs = sa.Table(
    "recording_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("end", sa.Float, nullable=False),
    sa.Column("segments", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Index("ix_recording_runs_camera_start", "camera", "start"),
)

recording_gaps = sa.Table(
    "recording_gaps",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("end", sa.Float, nullable=False),
    sa.Column("reason", sa.String(100), nullable=False),
    sa.Index("ix_recording_gaps_camera_start", "camera", "start"),
)

evidence_holds = sa.Table(
    "evidence_holds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("camera", sa.String(64), nullable=False, index=True),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("end", sa.Float, nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("placed_by", sa.String(64), nullable=False),
    sa.Column("placed_at", sa.Float, nullable=False),
    #: Where the hold came from, e.g. "export:12"; "manual" for holds placed by hand.
    sa.Column("source", sa.String(64), nullable=False, server_default="manual"),
    sa.Column("released_at", sa.Float),
    sa.Column("released_by", sa.String(64)),
)


# -- emergency pushes (migration 3) --------------------------------------------------

pushes = sa.Table(
    "pushes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("cameras", sa.JSON, nullable=False),
    #: Usernames of the stations the cameras were pushed to.
    sa.Column("stations", sa.JSON, nullable=False),
    #: The grant made for each station: ``{username: grant id}``.
    sa.Column("grants", sa.JSON, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    #: Set when the push ends; ``end_reason`` is "revoked" or "expired".
    sa.Column("ended_at", sa.Float, index=True),
    sa.Column("end_reason", sa.String(16)),
    sa.Column("ended_by", sa.String(64)),
)


# -- privacy masks (migration 4) ------------------------------------------------------

# -- cluster (migration 16) --------------------------------------------------------------

#: Leases with fencing epochs: ``camera:<id>`` (which node owns a camera), ``job:<name>``
#: (which node runs a cluster-wide job). See ``gateway.cluster.leases``.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("holder", sa.String(64)),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("renewed_at", sa.Float),
    sa.Column("taken_at", sa.Float),
)

#: The nodes of the cluster: where to reach each, how many cameras it takes, when it was
#: last alive, whether it is draining (giving its cameras away before maintenance).
cluster_nodes = sa.Table(
    "cluster_nodes",
    metadata,
    sa.Column("node", sa.String(64), primary_key=True),
    sa.Column("url", sa.String(300), nullable=False),
    sa.Column("capacity", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("draining", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("cameras", sa.Integer, nullable=False, server_default="0"),
    #: The node's RTSP re-stream port ([rtsp-out]), where clients of the other nodes' re-streams
    #: are redirected for this node's cameras (migration 31; None: no re-stream).
    sa.Column("rtsp_port", sa.Integer),
    #: The base URL of the node's ONVIF face ([onvif-server]), where the other nodes' faces
    #: pass snapshot requests for this node's cameras (migration 33; None: no face).
    sa.Column("onvif_url", sa.String(300)),
)

#: Events of every node, for the other nodes' events channels (migration 26): an outbox
#: each node appends to and polls; rows older than an hour are swept.
cluster_events = sa.Table(
    "cluster_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("node", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("event", sa.JSON, nullable=False),
)

#: What each camera's owner reports of it (state, stream, rates) for the other nodes' camera
#: lists; rewritten every tick of the owner (migration 28).
camera_views = sa.Table(
    "camera_views",
    metadata,
    sa.Column("camera", sa.String(64), primary_key=True),
    sa.Column("node", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("view", sa.JSON, nullable=False),
)

# -- the hourly playback cap, cluster-wide (migration 32) --------------------------------

#: One row per session that pulled recorded video in the last hour. Every admission of a
#: segment takes the session's row first (an upsert: a row lock on PostgreSQL, the write
#: lock on SQLite), so the admissions of one session are counted one after the other
#: whichever nodes serve them. ``alarmed``: the limit's alarm was raised (once per session
#: until the hour frees up again).
playback_budgets = sa.Table(
    "playback_budgets",
    metadata,
    sa.Column("session", sa.String(100), primary_key=True),
    sa.Column("updated_at", sa.Float, nullable=False, index=True),
    sa.Column("alarmed", sa.Boolean, nullable=False, server_default=sa.false()),
)

#: The segments a session pulled in the last hour: each counted once per session.
playback_counted = sa.Table(
    "playback_counted",
    metadata,
    sa.Column("session", sa.String(100), primary_key=True),
    sa.Column("segment", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("seconds", sa.Float, nullable=False),
)

# -- PTZ positions (migration 10) -------------------------------------------------------

#: Where PTZ cameras pointed: readings of their position (on change, and every few seconds
#: while still) and the commands that made the position unknown until the next reading.
#: Masks drawn later are placed on recorded pictures from these rows.
ptz_positions = sa.Table(
    "ptz_positions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # "reading" or "command"
    sa.Column("pan", sa.Float),
    sa.Column("tilt", sa.Float),
    sa.Column("zoom", sa.Float),
    sa.Column("moving", sa.Boolean),
    sa.Index("ix_ptz_positions_camera_at", "camera", "at"),
)

#: Every saved mask set of a camera, newest = highest version; rows are never changed or
#: deleted, so the history says who set which masks, when and why. Masks declared in the
#: config are not stored here (the database cannot weaken them).
mask_versions = sa.Table(
    "mask_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    #: ``[{"points": [[x, y], ...], "filter": "fill", "options": {}}, ...]``, normalised 0..1.
    sa.Column("masks", sa.JSON, nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("camera", "version", name="uq_mask_versions_camera_version"),
)


# -- evidence release (migration 5) ---------------------------------------------------

#: One row per export request; its life is in ``export_register``.
export_requests = sa.Table(
    "export_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    #: pending | approved | rejected | expired | producing | produced | failed
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("format", sa.String(64), nullable=False),
    sa.Column("cameras", sa.JSON, nullable=False),
    sa.Column("range_from", sa.Float, nullable=False),
    sa.Column("range_to", sa.Float, nullable=False),
    sa.Column("case_number", sa.String(100), nullable=False, index=True),
    sa.Column("authority", sa.String(200), nullable=False),
    sa.Column("legal_basis", sa.String(500), nullable=False),
    sa.Column("purpose", sa.String(1000), nullable=False),
    sa.Column("requested_by", sa.String(64), nullable=False, index=True),
    sa.Column("requested_by_id", sa.Integer, nullable=False),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("decided_by", sa.String(64)),
    sa.Column("decided_at", sa.Float),
    sa.Column("decision_reason", sa.String(1000)),
    #: Evidence hold ids placed at approval.
    sa.Column("holds", sa.JSON, nullable=False),
    sa.Column("holds_released_at", sa.Float),
    sa.Column("produced_by", sa.String(64)),
    sa.Column("produced_at", sa.Float),
    sa.Column("package_name", sa.String(300)),
    sa.Column("package_bytes", sa.BigInteger),
    sa.Column("package_sha256", sa.String(64)),
    sa.Column("error", sa.String(1000)),
    sa.Column("downloads", sa.Integer, nullable=False, server_default="0"),
    #: The format's options as validated at filing (defaults merged in); migration 7.
    sa.Column("options", sa.JSON),
    #: When the package file was deleted (``package-days``); migration 7.
    sa.Column("package_deleted_at", sa.Float),
    #: Releasing the holds takes two approvers: the proposal (who, when, why) and who
    #: confirmed it; migration 13.
    sa.Column("release_proposed_by", sa.String(64)),
    sa.Column("release_proposed_at", sa.Float),
    sa.Column("release_proposal_reason", sa.String(1000)),
    sa.Column("holds_released_by", sa.String(64)),
    #: The cluster node producing the package (migration 27): if it dies, the others fail
    #: the request so it can be produced again; a single node leaves it empty.
    sa.Column("producer_node", sa.String(64)),
)

#: The release register: every step of every request; each row is also in the audit chain.
export_register = sa.Table(
    "export_register",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.Integer, sa.ForeignKey("export_requests.id"), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    #: filed | approved | rejected | expired | produced | production_failed | downloaded
    #: | hold_release_proposed | hold_released | package_deleted
    sa.Column("event", sa.String(32), nullable=False, index=True),
    sa.Column("user", sa.String(64)),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("audit_id", sa.BigInteger, nullable=False),
)


# -- access requests from other agencies (migration 14) -----------------------------------

#: An agency's written request for cameras; its life is in ``access_register``.
access_requests = sa.Table(
    "access_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    #: pending | approved | rejected | revoked | expired
    sa.Column("status", sa.String(16), nullable=False, index=True),
    #: The cameras named, plus those of the areas named, resolved when filed.
    sa.Column("cameras", sa.JSON, nullable=False),
    sa.Column("areas", sa.JSON, nullable=False),
    sa.Column("live", sa.Boolean, nullable=False),
    sa.Column("playback", sa.Boolean, nullable=False),
    #: The period of access asked for (and granted).
    sa.Column("range_from", sa.Float, nullable=False),
    sa.Column("range_to", sa.Float, nullable=False, index=True),
    sa.Column("purpose", sa.String(1000), nullable=False),
    #: The commitment text the agency accepted, as configured when it filed.
    sa.Column("commitment", sa.Text, nullable=False),
    sa.Column("requested_by", sa.String(64), nullable=False, index=True),
    sa.Column("requested_by_id", sa.Integer, nullable=False),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("decided_by", sa.String(64)),
    sa.Column("decided_by_id", sa.Integer),
    sa.Column("decided_at", sa.Float),
    sa.Column("decision_reason", sa.String(1000)),
    sa.Column("grant_id", sa.Integer),
    sa.Column("ended_at", sa.Float),
    sa.Column("ended_by", sa.String(64)),
    sa.Column("end_reason", sa.String(1000)),
)

#: The access register: every step of every access request; each row is also in the audit chain.
access_register = sa.Table(
    "access_register",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.Integer, sa.ForeignKey("access_requests.id"), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    #: filed | approved | rejected | revoked | expired | refused
    sa.Column("event", sa.String(32), nullable=False, index=True),
    sa.Column("user", sa.String(64)),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("audit_id", sa.BigInteger, nullable=False),
)


# -- replica verification (migration 15) ------------------------------------------------

#: What the last verification found of each segment on the replica: "ok" (same SHA-256 as
#: the catalogue), "missing" or "corrupted" (``found_sha256`` says what it held instead).
replica_checks = sa.Table(
    "replica_checks",
    metadata,
    sa.Column(
        "segment_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), sa.ForeignKey("segments.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("camera", sa.String(64), nullable=False, index=True),
    sa.Column("checked_at", sa.Float, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("found_sha256", sa.String(64)),
)


# -- incidents (migration 17) ----------------------------------------------------------

#: An incident an operator opened on a camera at a moment: category, note, further
#: cameras, the evidence holds it placed, its state (open, handed_over, closed) and owner.
incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("camera", sa.String(64), nullable=False, index=True),
    #: Every camera of the incident, the first one included.
    sa.Column("cameras", sa.JSON, nullable=False),
    #: The areas of those cameras when it was opened (the register filters by district).
    sa.Column("areas", sa.JSON, nullable=False),
    sa.Column("area", sa.String(64), nullable=False, index=True),
    sa.Column("category", sa.String(64), nullable=False, index=True),
    sa.Column("note", sa.String(2000), nullable=False, server_default=""),
    #: The moment seen (epoch seconds).
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("opened_by", sa.String(64), nullable=False),
    sa.Column("opened_at", sa.Float, nullable=False, index=True),
    sa.Column("owner", sa.String(64), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("hold_from", sa.Float, nullable=False),
    sa.Column("hold_to", sa.Float, nullable=False),
    sa.Column("holds", sa.JSON, nullable=False),
    sa.Column("push_id", sa.Integer),
    sa.Column("closed_at", sa.Float),
    sa.Column("closed_by", sa.String(64)),
)

#: Every step of an incident: opened, bookmark, handed_over, extended, closed, notified.
incident_log = sa.Table(
    "incident_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False, index=True),
    sa.Column("logged_at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("user", sa.String(64)),
    #: The moment a bookmark marks (None for other steps).
    sa.Column("moment", sa.Float),
    sa.Column("camera", sa.String(64)),
    sa.Column("note", sa.String(2000), nullable=False, server_default=""),
)


# -- PTZ patrol tours (migration 18) ----------------------------------------------------

#: A camera's patrol tour: presets with dwell times and speeds, daily time windows.
ptz_tours = sa.Table(
    "ptz_tours",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("camera", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(100), nullable=False),
    #: [{"preset": token, "dwell_seconds": s, "speed": 0..1 or null}, ...]
    sa.Column("steps", sa.JSON, nullable=False),
    #: [{"from": "HH:MM", "to": "HH:MM"}, ...] local time; empty: on demand only.
    sa.Column("schedule", sa.JSON, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("updated_by", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


# -- saved walls and camera health (migration 19) ----------------------------------------

#: Named wall layouts of a user; ``shared_roles`` lists the roles that may open them too.
walls = sa.Table(
    "walls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("owner", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(100), nullable=False),
    #: {"columns", "rows", "tiles": [{"camera", "profile"} | null, ...]}
    sa.Column("layout", sa.JSON, nullable=False),
    sa.Column("shared_roles", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("owner", "name", name="uq_walls_owner_name"),
)

#: Each camera's state changes (online, offline, connecting, stopped), for its uptime.
camera_states = sa.Table(
    "camera_states",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_camera_states_camera_at", "camera", "at"),
)


# -- number plates (migrations 22, 23) ---------------------------------------------------

#: Every plate read by a plate-reading analyzer: the moment, the camera, the text as read and
#: canonical (``gateway.plates.text``), the OCR-confusion-folded search key, the confidence,
#: and the crop of the plate in the storage backend (deleted with the camera's recordings).
plate_reads = sa.Table(
    "plate_reads",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("plate", sa.String(16), nullable=False),
    sa.Column("display", sa.String(24), nullable=False),
    sa.Column("country", sa.String(4)),
    sa.Column("key", sa.String(16), nullable=False, index=True),
    #: What the OCR read, lines joined with " / " (a two-line plate).
    sa.Column("raw", sa.String(100), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("analyzer", sa.String(64), nullable=False),
    sa.Column("crop_key", sa.String(300)),
    sa.Column("crop_backend", sa.String(64)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_plate_reads_camera_at", "camera", "at"),
    sa.Index("ix_plate_reads_at", "at"),
)

#: Plates watched for: a plate or a pattern (``*``, ``?``), its folded key, why and by whom;
#: a read matching an active entry on a camera of the entry's areas becomes an event.
plate_watchlist = sa.Table(
    "plate_watchlist",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pattern", sa.String(20), nullable=False),
    sa.Column("key", sa.String(20), nullable=False),
    sa.Column("label", sa.String(200), nullable=False, server_default=""),
    sa.Column("purpose", sa.String(500), nullable=False),
    #: The areas whose cameras are watched (the creator's); ``all_areas`` for every camera.
    sa.Column("areas", sa.JSON, nullable=False),
    sa.Column("all_areas", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("expires_at", sa.Float),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_by", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


# -- video analytics (migrations 20 and 21) ----------------------------------------------

#: Vehicles counted per camera, counting line, lane and direction, in one-minute buckets
#: (``bucket``: the minute's start, epoch seconds); hours, days and weeks are summed on read.
analytics_counts = sa.Table(
    "analytics_counts",
    metadata,
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("line", sa.String(64), nullable=False),
    #: "" when the line has no lanes.
    sa.Column("lane", sa.String(64), nullable=False),
    sa.Column("direction", sa.String(64), nullable=False),
    sa.Column("bucket", sa.Integer, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("camera", "line", "lane", "direction", "bucket", name="pk_analytics_counts"),
    sa.Index("ix_analytics_counts_camera_bucket", "camera", "bucket"),
)

#: Every other observation of an analyzer (rule events such as ``wrong-direction``), with
#: its payload; plate reads keep their own table.
analytics_observations = sa.Table(
    "analytics_observations",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("analyzer", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Index("ix_analytics_observations_camera_at", "camera", "at"),
    sa.Index("ix_analytics_observations_kind_at", "kind", "at"),
)


#: Cameras added through the API by ``cameras.manage`` (beside those of ``cameras.toml``):
#: each row is a ``[[camera]]`` table as JSON, checked like the file's on every read.
managed_cameras = sa.Table(
    "managed_cameras",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_by", sa.String(128), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


# --------------------------------------------------------------------------------------
# migrations

Migration = Callable[[sa.Connection], None]


def _v1_initial(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[users, sessions, grants, audit])


def _v2_recordings(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[segments, recording_gaps, evidence_holds])


def _v6_runs(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[recording_runs])
    # Backfill from the segments already catalogued (ordered per camera).
    rows = conn.execute(
        sa.select(segments.c.camera, segments.c.start, segments.c.end, segments.c.bytes).order_by(segments.c.camera, segments.c.start)
    ).all()
    runs: list[dict] = []
    for camera, start, end, size in rows:
        last = runs[-1] if runs else None
        if last is not None and last["camera"] == camera and start - last["end"] <= RUN_TOLERANCE:
            last["end"] = max(last["end"], end)
            last["segments"] += 1
            last["bytes"] += size
        else:
            runs.append({"camera": camera, "start": start, "end": end, "segments": 1, "bytes": size})
    if runs:
        conn.execute(recording_runs.insert(), runs)


#: Two segments closer than this (seconds) are one run; the catalogue uses the same value.
RUN_TOLERANCE = 0.25


def _v3_pushes(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[pushes])


def _v4_masks(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[mask_versions])


def _v5_exports(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[export_requests, export_register])


def _v7_export_options(conn: sa.Connection) -> None:
    # Databases made by migration 5 before these columns existed get them; a database
    # created from the current metadata already has them.
    present = {c["name"] for c in sa.inspect(conn).get_columns("export_requests")}
    for name in ("options", "package_deleted_at"):
        if name not in present:
            column = export_requests.c[name]
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE export_requests ADD COLUMN {name} {kind}"))


def _v13_hold_release_four_eyes(conn: sa.Connection) -> None:
    # Releasing evidence holds takes a proposal and a second approver's confirmation.
    present = {c["name"] for c in sa.inspect(conn).get_columns("export_requests")}
    for name in ("release_proposed_by", "release_proposed_at", "release_proposal_reason", "holds_released_by"):
        if name not in present:
            kind = export_requests.c[name].type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE export_requests ADD COLUMN {name} {kind}"))


def _v8_audit_checkpoints(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[audit_checkpoints])


def _v16_cluster(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[leases, cluster_nodes])


def _v27_export_producer_node(conn: sa.Connection) -> None:
    present = {c["name"] for c in sa.inspect(conn).get_columns("export_requests")}
    if "producer_node" not in present:
        conn.execute(sa.text("ALTER TABLE export_requests ADD COLUMN producer_node VARCHAR(64)"))


def _v28_camera_views(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[camera_views])


def _v29_managed_cameras(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[managed_cameras])


def _v31_node_rtsp_port(conn: sa.Connection) -> None:
    present = {c["name"] for c in sa.inspect(conn).get_columns("cluster_nodes")}
    if "rtsp_port" not in present:
        conn.execute(sa.text("ALTER TABLE cluster_nodes ADD COLUMN rtsp_port INTEGER"))


def _v33_node_onvif_url(conn: sa.Connection) -> None:
    present = {c["name"] for c in sa.inspect(conn).get_columns("cluster_nodes")}
    if "onvif_url" not in present:
        conn.execute(sa.text("ALTER TABLE cluster_nodes ADD COLUMN onvif_url VARCHAR(300)"))


def _v32_playback_budgets(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[playback_budgets, playback_counted])


def _v26_cluster_events(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[cluster_events])


def _v10_ptz_positions(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[ptz_positions])


def _v9_segment_masks(conn: sa.Connection) -> None:
    # Segments recorded before this migration get version 0 and digest "": a camera masked
    # now re-masks them on playback and export (never served as if they were masked).
    present = {c["name"] for c in sa.inspect(conn).get_columns("segments")}
    for name in ("mask_version", "mask_digest"):
        if name not in present:
            column = segments.c[name]
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE segments ADD COLUMN {name} {kind} DEFAULT {column.server_default.arg!r} NOT NULL"))


def _v11_sign_in_and_two_person_rule(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[login_addresses, pending_account_changes])
    for table, names in ((users, ("created_by", "created_confirmed_by", "changed_by", "changed_confirmed_by", "changed_at")), (sessions, ("password_failures",))):
        present = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
        for name in names:
            if name in present:
                continue
            column = table.c[name]
            ddl = f"ALTER TABLE {table.name} ADD COLUMN {name} {column.type.compile(dialect=conn.dialect)}"
            if column.server_default is not None:
                ddl += f" DEFAULT {column.server_default.arg} NOT NULL"
            conn.execute(sa.text(ddl))


def _v14_access_requests(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[access_requests, access_register])


def _v15_replica_checks(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[replica_checks])


def _v17_incidents(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[incidents, incident_log])


def _v18_ptz_tours(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[ptz_tours])


def _v19_walls_and_camera_states(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[walls, camera_states])


def _v22_plate_reads(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[plate_reads])


def _v23_plate_watchlist(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[plate_watchlist])


def _v20_analytics_counts(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[analytics_counts])


def _v21_analytics_observations(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[analytics_observations])


#: (version, description, function). Append only; never edit a released migration.
MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "users, sessions, grants, audit", _v1_initial),
    (2, "recording segments, gaps, evidence holds", _v2_recordings),
    (3, "emergency pushes", _v3_pushes),
    (4, "privacy mask versions", _v4_masks),
    (5, "evidence export requests and release register", _v5_exports),
    (6, "contiguous recording runs", _v6_runs),
    (7, "export request options, package deletion", _v7_export_options),
    (8, "signed audit checkpoints", _v8_audit_checkpoints),
    (9, "segments record the privacy masks in force", _v9_segment_masks),
    (10, "PTZ positions, to place scene-anchored masks on recordings", _v10_ptz_positions),
    (11, "sign-in failures per address, pending account changes, account provenance", _v11_sign_in_and_two_person_rule),
    (13, "export hold release by two approvers", _v13_hold_release_four_eyes),
    (14, "access requests from other agencies and the access register", _v14_access_requests),
    (15, "replica verification: what the replica holds of each segment", _v15_replica_checks),
    (16, "cluster: leases with fencing epochs, nodes", _v16_cluster),
    (17, "incidents and their log", _v17_incidents),
    (18, "PTZ patrol tours", _v18_ptz_tours),
    (19, "saved walls, camera state changes", _v19_walls_and_camera_states),
    (20, "video analytics: vehicle counts per minute", _v20_analytics_counts),
    (21, "video analytics: observations (rule events)", _v21_analytics_observations),
    (22, "number-plate reads", _v22_plate_reads),
    (23, "number-plate watchlist", _v23_plate_watchlist),
    (26, "cluster: the events outbox", _v26_cluster_events),
    (27, "cluster: which node produces an export", _v27_export_producer_node),
    (28, "cluster: what each camera's node reports of it", _v28_camera_views),
    (31, "cluster: each node's RTSP re-stream port", _v31_node_rtsp_port),
    (29, "cameras managed through the API", _v29_managed_cameras),
    (32, "the hourly playback cap, counted for the whole cluster", _v32_playback_budgets),
    (33, "cluster: each node's ONVIF face", _v33_node_onvif_url),
]


def register_migration(version: int, description: str, fn: Migration) -> None:
    """Used by modules that own tables (recordings, evidence) to add their migrations."""
    if any(v == version for v, _, _ in MIGRATIONS):
        raise ValueError(f"migration {version} already registered")
    MIGRATIONS.append((version, description, fn))
    MIGRATIONS.sort(key=lambda m: m[0])


def default_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'citygate.db'}"


def _private_sqlite_file(path: Path) -> None:
    private_dir(path.parent, tighten=False)  # a directory of the operator's choosing is left as it is
    private_file(path)


def _lock_file(path: Path):  # -> an open file holding an exclusive lock
    import fcntl

    handle = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a")  # private like the database
    fcntl.flock(handle, fcntl.LOCK_EX)  # blocks (in a worker thread) while another process migrates
    return handle


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DBAPI types
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be used *for now* (SQLite locked past its busy
    timeout, PostgreSQL stopped, restarting or unreachable), as opposed to a wrong query or a
    constraint: worth answering 503 and trying again later."""
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        text = str(exc.orig if exc.orig is not None else exc).lower()
        return any(s in text for s in ("connection", "shutting down", "starting up", "database is locked", "closed"))
    return isinstance(exc, OSError)


class DatabaseUnavailable(GatewayError):
    """The database cannot be reached at start (wrong URL, server down, credentials)."""

    status = 503


class Database:
    """Owns the engine; ``async with Database(url)`` connects and migrates."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("database not open")
        return self._engine

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    async def __aenter__(self) -> Database:
        kwargs = {}
        if self.is_sqlite:
            path = self.url.split(":///", 1)[1]
            if path and path != ":memory:":
                # 0600 before SQLite opens it; its -wal and -shm files take the same mode
                await asyncio.to_thread(_private_sqlite_file, Path(path))
        else:
            kwargs = {
                "pool_size": 10, "max_overflow": 10, "pool_pre_ping": True,
                # A node frozen inside a transaction (SIGSTOP, a stalled VM) must not hold its row
                # locks — the lease a successor takes over — for longer than this: the server
                # ends such a transaction and the others go on.
                "connect_args": {"server_settings": {"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS)}},
            }
        self._engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self._engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            await self.migrate()
        except (OSError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            await self._engine.dispose()
            self._engine = None
            raise DatabaseUnavailable(f"database {self.display_url}: cannot connect: {exc}") from exc
        return self

    @property
    def display_url(self) -> str:
        """The URL without its password, for messages."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    async def __aexit__(self, *exc: object) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied."""
        # Several nodes may start at once: one migrates while the others wait on a lock (a
        # PostgreSQL advisory lock; beside a SQLite file, a file lock), then find each
        # migration applied already.
        if self.is_sqlite:
            path = self.url.split(":///", 1)[1]
            if not path or path == ":memory:":
                return await self._migrate()
            lock_file = await asyncio.to_thread(_lock_file, Path(path + ".migrate-lock"))
            try:
                return await self._migrate()
            finally:
                lock_file.close()  # closing releases the lock
        async with self.engine.connect() as lock:
            await lock.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            try:
                return await self._migrate()
            finally:
                await lock.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})

    async def _migrate(self) -> list[int]:
        applied: list[int] = []
        async with self.engine.begin() as conn:
            await conn.run_sync(lambda c: metadata.create_all(c, tables=[schema_version]))
        for version, description, fn in MIGRATIONS:
            async with self.engine.begin() as conn:
                done = (await conn.execute(sa.select(schema_version.c.version).where(schema_version.c.version == version))).first()
                if done is not None:
                    continue
                await conn.run_sync(fn)
                await conn.execute(
                    schema_version.insert().values(version=version, description=description, applied_at=time.time())
                )
            logger.info("database: applied migration %d (%s)", version, description)
            applied.append(version)
        return applied

    def connect(self) -> AsyncConnection:
        return self.engine.connect()

    def begin(self):  # -> AsyncContextManager[AsyncConnection]
        return self.engine.begin()

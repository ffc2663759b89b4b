//! The schema, as numbered migrations applied at open (`rusqlite_migration`, which keeps
//! the number in SQLite's `user_version`). A migration is never edited once shipped:
//! a change is a new one. `tests/data/store-v1.db` is a database written by the first
//! migration alone, and a test opens it with today's code.
//!
//! Times are integers, milliseconds since the Unix epoch. Counters live beside the rows
//! they count and are changed in the same transaction as the crash rows, so they always
//! equal a recount (`Store::audit`). Groups are never deleted: a group whose count fell
//! to zero keeps its state.

use rusqlite_migration::{Migrations, M};

/// v1: crashes, the dedup identity, groups and their counters, the debug-file index,
/// the missing-debug-file index and the re-symbolication queue.
const V1: &str = r#"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE groups (
    id TEXT PRIMARY KEY,
    signature TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'unresolved',
    count INTEGER NOT NULL DEFAULT 0,
    devices INTEGER NOT NULL DEFAULT 0,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
);
CREATE INDEX groups_by_count ON groups (count DESC, id);
CREATE INDEX groups_by_last_seen ON groups (last_seen DESC, id);

-- A crash's public id is `{seq:016x}{nonce:016x}`: seq orders by arrival and never
-- repeats (AUTOINCREMENT), the random nonce makes ids unguessable.
CREATE TABLE crashes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    nonce INTEGER NOT NULL,
    identity BLOB NOT NULL UNIQUE,
    received_at INTEGER NOT NULL,
    group_id TEXT NOT NULL REFERENCES groups (id),
    release TEXT,
    device BLOB,
    -- JSON array of [debug_id, image name] the last symbolication lacked; NULL if none.
    missing TEXT,
    -- How `record` is encoded: 1 = deflated JSON.
    record_format INTEGER NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX crashes_by_group ON crashes (group_id, seq);
CREATE INDEX crashes_by_received ON crashes (received_at);

CREATE TABLE group_devices (
    group_id TEXT NOT NULL REFERENCES groups (id),
    device BLOB NOT NULL,
    crashes INTEGER NOT NULL,
    PRIMARY KEY (group_id, device)
) WITHOUT ROWID;

CREATE TABLE group_releases (
    group_id TEXT NOT NULL REFERENCES groups (id),
    release TEXT NOT NULL,
    crashes INTEGER NOT NULL,
    PRIMARY KEY (group_id, release)
) WITHOUT ROWID;
CREATE INDEX group_releases_by_release ON group_releases (release, group_id);

CREATE TABLE missing_debug_files (
    debug_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    crashes INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
);
CREATE TABLE missing_releases (
    debug_id TEXT NOT NULL,
    release TEXT NOT NULL,
    crashes INTEGER NOT NULL,
    PRIMARY KEY (debug_id, release)
) WITHOUT ROWID;
CREATE TABLE crash_missing (
    debug_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (debug_id, seq)
) WITHOUT ROWID;

CREATE TABLE debug_files (
    debug_id TEXT NOT NULL,
    arch TEXT NOT NULL,
    code_id TEXT,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    object_kind TEXT NOT NULL,
    has_symbols INTEGER NOT NULL,
    has_debug_info INTEGER NOT NULL,
    has_unwind_info INTEGER NOT NULL,
    has_sources INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    symcache_size INTEGER NOT NULL,
    symcache_version INTEGER NOT NULL,
    uploaded_at TEXT NOT NULL,
    -- JSON array of release names.
    releases TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (debug_id, arch)
);

CREATE TABLE resymbolication_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    debug_id TEXT NOT NULL
);
"#;

/// v2: releases with crash and device counts, and per-group hourly crash counts (the
/// sparkline, `trend` and spike alerts read them), filled from the crashes stored.
const V2: &str = r#"
CREATE TABLE releases (
    name TEXT PRIMARY KEY,
    crashes INTEGER NOT NULL DEFAULT 0,
    devices INTEGER NOT NULL DEFAULT 0,
    first_seen INTEGER,
    last_seen INTEGER
);
CREATE TABLE release_devices (
    release TEXT NOT NULL REFERENCES releases (name),
    device BLOB NOT NULL,
    crashes INTEGER NOT NULL,
    PRIMARY KEY (release, device)
) WITHOUT ROWID;
CREATE TABLE group_hours (
    group_id TEXT NOT NULL REFERENCES groups (id),
    hour INTEGER NOT NULL,
    crashes INTEGER NOT NULL,
    PRIMARY KEY (group_id, hour)
) WITHOUT ROWID;

INSERT INTO releases (name, crashes, first_seen, last_seen)
    SELECT release, count(*), min(received_at), max(received_at)
    FROM crashes WHERE release IS NOT NULL GROUP BY release;
INSERT INTO release_devices (release, device, crashes)
    SELECT release, device, count(*)
    FROM crashes WHERE release IS NOT NULL AND device IS NOT NULL GROUP BY release, device;
UPDATE releases SET devices = (SELECT count(*) FROM release_devices d WHERE d.release = releases.name);
INSERT INTO group_hours (group_id, hour, crashes)
    SELECT group_id, received_at / 3600000, count(*) FROM crashes GROUP BY group_id, received_at / 3600000;
"#;

/// v3: the state of `sentry-cli debug-files upload`'s assembles, one row per file (the
/// SHA-1 of its bytes). A row is written before the assembly starts, so a restart
/// resumes it; an `ok` row stays, so the same file uploaded again answers `ok` at once
/// and the 2.x legacy path can tell which checksums it already has. Chunk bytes are
/// files in the dsyms dir, not rows.
const V3: &str = r#"
CREATE TABLE sentry_files (
    -- SHA-1 of the whole file, lowercase hex: sentry-cli's name for it.
    checksum TEXT PRIMARY KEY,
    -- 'assembling', 'ok' or 'error'.
    state TEXT NOT NULL,
    name TEXT NOT NULL,
    debug_id TEXT,
    -- JSON array of the chunks' SHA-1s, in file order.
    chunks TEXT NOT NULL,
    detail TEXT,
    -- JSON the caller owns: what sentry-cli is told about the file once 'ok'.
    dif TEXT,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sentry_files_assembling ON sentry_files (state) WHERE state = 'assembling';
"#;

/// v4: triage. Groups belong to an app and carry their title, culprit, lifecycle state
/// (resolved in a release, ignored until a count or a date) and, once merged or moved,
/// the group they are an alias of. Crashes keep their home group (the one their own
/// signature names; `group_id` is the current one, after merges), OS, device model and
/// call-path variant, counted per group like releases. Releases get their app, version,
/// build, order key, channel, rollout, release date and session counts. Activity is
/// one row per change of a group.
const V4: &str = r#"
ALTER TABLE groups ADD COLUMN app TEXT NOT NULL DEFAULT '';
ALTER TABLE groups ADD COLUMN title TEXT NOT NULL DEFAULT '';
ALTER TABLE groups ADD COLUMN culprit TEXT;
-- The release a resolution names (full name), or NULL for a bare resolve; its order key.
ALTER TABLE groups ADD COLUMN resolved_in TEXT;
ALTER TABLE groups ADD COLUMN resolved_key TEXT;
-- 1 when resolved in "next": crashes from releases after `resolved_in` regress it.
ALTER TABLE groups ADD COLUMN resolved_next INTEGER NOT NULL DEFAULT 0;
-- Ignored until this time (ms), or until this many more crashes.
ALTER TABLE groups ADD COLUMN ignore_until INTEGER;
ALTER TABLE groups ADD COLUMN ignore_left INTEGER;
-- The group this one was merged or moved into; NULL while it is a group of its own.
ALTER TABLE groups ADD COLUMN alias_of TEXT;
-- Lowest and highest release (by release order) among its crashes, with order keys.
ALTER TABLE groups ADD COLUMN first_release TEXT;
ALTER TABLE groups ADD COLUMN first_release_key TEXT;
ALTER TABLE groups ADD COLUMN last_release TEXT;
ALTER TABLE groups ADD COLUMN last_release_key TEXT;
-- Crashes in the last 24 hours minus the 24 before, kept by the counter paths and
-- recomputed when the hour turns (`trend_hour` in meta).
ALTER TABLE groups ADD COLUMN trend INTEGER NOT NULL DEFAULT 0;
CREATE INDEX groups_by_trend ON groups (trend DESC, id);
CREATE INDEX groups_by_devices ON groups (devices DESC, id);
CREATE INDEX groups_by_status ON groups (status, last_seen DESC, id);
CREATE INDEX groups_by_first_seen ON groups (first_seen DESC, id);
CREATE INDEX groups_by_alias ON groups (alias_of) WHERE alias_of IS NOT NULL;
CREATE INDEX groups_by_first_release ON groups (first_release) WHERE first_release IS NOT NULL;

ALTER TABLE crashes ADD COLUMN home TEXT;
ALTER TABLE crashes ADD COLUMN os TEXT;
ALTER TABLE crashes ADD COLUMN device_model TEXT;
ALTER TABLE crashes ADD COLUMN variant TEXT;
UPDATE crashes SET home = group_id;
CREATE INDEX crashes_by_home ON crashes (home, group_id);
-- 0 for a debug file a crash only waits for (an image that may be a system one): its
-- upload symbolicates the crash again, but it is not in the missing list.
ALTER TABLE crash_missing ADD COLUMN listed INTEGER NOT NULL DEFAULT 1;

CREATE TABLE group_os (
    group_id TEXT NOT NULL REFERENCES groups (id),
    os TEXT NOT NULL,
    crashes INTEGER NOT NULL,
    PRIMARY KEY (group_id, os)
) WITHOUT ROWID;
CREATE INDEX group_os_by_os ON group_os (os, group_id);
CREATE TABLE group_device_models (
    group_id TEXT NOT NULL REFERENCES groups (id),
    device_model TEXT NOT NULL,
    crashes INTEGER NOT NULL,
    PRIMARY KEY (group_id, device_model)
) WITHOUT ROWID;
CREATE INDEX group_device_models_by_model ON group_device_models (device_model, group_id);
CREATE TABLE group_variants (
    group_id TEXT NOT NULL REFERENCES groups (id),
    variant TEXT NOT NULL,
    crashes INTEGER NOT NULL,
    PRIMARY KEY (group_id, variant)
) WITHOUT ROWID;

CREATE TABLE activity (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id TEXT NOT NULL REFERENCES groups (id),
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    -- JSON the caller owns: what else the change named (a release, merged ids).
    detail TEXT
);
CREATE INDEX activity_by_group ON activity (group_id, seq);
-- The release a regression came from: a release page lists the groups it regressed.
ALTER TABLE activity ADD COLUMN release TEXT;
CREATE INDEX activity_by_release ON activity (release, action) WHERE release IS NOT NULL;

ALTER TABLE releases ADD COLUMN app TEXT NOT NULL DEFAULT '';
ALTER TABLE releases ADD COLUMN version TEXT;
ALTER TABLE releases ADD COLUMN build TEXT;
ALTER TABLE releases ADD COLUMN sort_key TEXT;
ALTER TABLE releases ADD COLUMN channel TEXT;
ALTER TABLE releases ADD COLUMN rollout REAL;
ALTER TABLE releases ADD COLUMN released_at INTEGER;
ALTER TABLE releases ADD COLUMN sessions_total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE releases ADD COLUMN sessions_crashed INTEGER NOT NULL DEFAULT 0;
CREATE INDEX releases_by_app ON releases (app, sort_key);
-- A release page's top groups.
CREATE INDEX group_releases_by_crashes ON group_releases (release, crashes DESC, group_id);
"#;

/// v5 (webhooks): subscriptions, the durable delivery outbox (rows written in the
/// transaction of the state change that causes them), and per-group markers of which
/// events fired, so moves and merges never fire `group.new` twice.
const V5: &str = r#"
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    -- JSON array of event names.
    events TEXT NOT NULL,
    -- Kept in clear: it must sign every delivery. Never returned by the API or logged.
    secret TEXT,
    created_at INTEGER NOT NULL
);

-- The outbox: one row per (webhook, event). `delivery_id` is random and stable across
-- retries, so a receiver can drop a repeat.
CREATE TABLE webhook_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL UNIQUE,
    webhook_id TEXT NOT NULL,
    event TEXT NOT NULL,
    group_id TEXT NOT NULL,
    crash_id TEXT,
    release TEXT,
    -- JSON the event adds (a spike's counts).
    detail TEXT,
    created_at INTEGER NOT NULL,
    -- pending, delivered or failed.
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    last_error TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, seq)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, seq);

-- 1 once the group's first crash arrived (`group.new` happened, whether or not a
-- webhook listened). A merge or move ORs the markers of both groups.
ALTER TABLE groups ADD COLUMN new_fired INTEGER NOT NULL DEFAULT 0;
-- When `group.spike` last fired for the group (ms).
ALTER TABLE groups ADD COLUMN spike_fired_at INTEGER;
-- Every existing group was made by a crash: its first crash is in the past.
UPDATE groups SET new_fired = 1;
"#;

/// v6 (web UI): sign-in sessions. A session row names the token it was opened with
/// by that token's hash, so revoking the token ends its sessions too; the cookie's
/// secret itself is never stored, only its SHA-256.
const V6: &str = r#"
CREATE TABLE sessions (
    -- Hex SHA-256 of the cookie's secret.
    id TEXT PRIMARY KEY,
    -- Hex SHA-256 of the token signed in with (its file name under tokens/).
    token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
"#;

/// v7: the dedup key becomes the crash's own day (4 bytes, big-endian) then the 16
/// bytes of the identity's digest, so new crashes append to the `identity` index
/// (`store::crashes::identity_key`). Rows already stored keep their 16-byte keys (a
/// key is a one-way hash: it cannot be re-keyed, and the report's day is inside the
/// deflated record); `meta` records the highest seq stored that way and the UTC day of
/// the migration, so an insert looks a retry up under the old key too while such rows
/// exist, and only for reports old enough to be one (`LegacyKeys::may_hold`).
const V7: &str = r#"
INSERT INTO meta (key, value)
    SELECT 'identity_legacy_max_seq', CAST(m AS TEXT)
    FROM (SELECT max(seq) AS m FROM crashes) WHERE m IS NOT NULL;
INSERT INTO meta (key, value)
    SELECT 'identity_legacy_day', CAST(CAST(strftime('%s', 'now') AS INTEGER) / 86400 AS TEXT)
    FROM (SELECT max(seq) AS m FROM crashes) WHERE m IS NOT NULL;
"#;

/// Every migration, oldest first.
pub(super) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(V1),
        M::up(V2),
        M::up(V3),
        M::up(V4),
        M::up(V5),
        M::up(V6),
        M::up(V7),
    ])
}

/// The schema version today's code writes.
#[cfg(test)]
pub(super) const LATEST: usize = 7;

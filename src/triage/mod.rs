//! Triage: groups as engineers read and change them, and releases, over the store.
//! Nothing here knows about HTTP: handlers hand in what a request asked for (already
//! parsed from JSON or a query string) and get back the JSON the contract names
//! (DESIGN.md: G, R, the group and release pages). Lifecycle rules run in the store,
//! in the transaction of the crashes that trigger them; this module checks requests,
//! resolves release names (`version (build)` as well as full names) and shapes answers.
//!
//! Everything here blocks (store reads, writes waited on): `App` runs it on the
//! blocking pool.

use serde_json::{json, Value};

use crate::store::{
    Activity, Group, GroupDetail, GroupFilter, GroupSort, Page, Release, ReleaseDetail,
    ReleaseUpdate, StateChange, Store, StoreError, TriageRefusal,
};

/// Largest page of a listing.
pub const MAX_LIMIT: usize = 500;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: usize = 50;

/// Why a triage request failed.
#[derive(Debug, thiserror::Error)]
pub enum TriageError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A web UI page failed to render: a bug, never the request's fault.
    #[error("page: {0}")]
    Render(String),
}

impl TriageError {
    pub fn code(&self) -> &'static str {
        match self {
            TriageError::NotFound(_) => "not_found",
            TriageError::Invalid(_) => "invalid_request",
            TriageError::Store(_) => "store_error",
            TriageError::Render(_) => "render_error",
        }
    }
}

impl From<TriageRefusal> for TriageError {
    fn from(refusal: TriageRefusal) -> Self {
        match refusal {
            TriageRefusal::NoGroup(id) => TriageError::NotFound(format!("no group {id}")),
            TriageRefusal::Invalid(why) => TriageError::Invalid(why),
        }
    }
}

/// The four states, as the API spells them.
pub const STATUSES: [&str; 4] = ["unresolved", "resolved", "ignored", "regressed"];

/// `GET /api/v1/groups`' query, as strings from the request.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct GroupsQuery {
    pub release: Option<String>,
    /// One state or several, comma-separated.
    pub status: Option<String>,
    pub new_in: Option<String>,
    pub os: Option<String>,
    pub device_model: Option<String>,
    pub q: Option<String>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// A group page's crash listing query.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct PageQuery {
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

fn limit(asked: Option<usize>) -> Result<usize, TriageError> {
    match asked {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(TriageError::Invalid(format!(
            "limit must be between 1 and {MAX_LIMIT}, not {n}"
        ))),
    }
}

fn non_blank(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The sort a query names; `last_seen` by default.
pub fn parse_sort(sort: Option<&str>) -> Result<GroupSort, TriageError> {
    Ok(match sort.map(str::trim).unwrap_or("last_seen") {
        "count" => GroupSort::Count,
        "devices" => GroupSort::Devices,
        "last_seen" | "" => GroupSort::LastSeen,
        "first_seen" => GroupSort::FirstSeen,
        "trend" => GroupSort::Trend,
        other => {
            return Err(TriageError::Invalid(format!(
                "sort must be one of count, devices, last_seen, first_seen, trend; not `{other}`"
            )))
        }
    })
}

/// The states a `status` parameter names (comma-separated).
pub fn parse_statuses(status: Option<&str>) -> Result<Vec<String>, TriageError> {
    let mut out = Vec::new();
    for part in status.unwrap_or("").split(',').map(str::trim) {
        if part.is_empty() {
            continue;
        }
        if !STATUSES.contains(&part) {
            return Err(TriageError::Invalid(format!(
                "status must be one of {}; not `{part}`",
                STATUSES.join(", ")
            )));
        }
        if !out.iter().any(|s| s == part) {
            out.push(part.to_owned());
        }
    }
    Ok(out)
}

/// The one release a request names: a full name, or `version (build)` of the only app
/// that has it.
pub fn resolve_release(store: &Store, name: &str) -> Result<String, TriageError> {
    let found = store.releases_named(name)?;
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(TriageError::NotFound(format!(
            "no release `{}`",
            name.trim()
        ))),
        many => Err(TriageError::Invalid(format!(
            "`{}` names a release of several apps ({}); use the full name",
            name.trim(),
            many.join(", ")
        ))),
    }
}

/// Like [`resolve_release`], for a filter: a release nobody has seen matches nothing.
fn filter_release(store: &Store, name: &Option<String>) -> Result<Option<String>, TriageError> {
    match non_blank(name) {
        None => Ok(None),
        Some(name) => match resolve_release(store, &name) {
            Ok(full) => Ok(Some(full)),
            Err(TriageError::NotFound(_)) => Ok(Some(name)),
            Err(err) => Err(err),
        },
    }
}

/// `GET /api/v1/groups`.
pub fn list_groups(store: &Store, query: &GroupsQuery, now_ms: i64) -> Result<Value, TriageError> {
    let page = groups(store, query, now_ms)?;
    Ok(json!({
        "groups": page.items.iter().map(group_json).collect::<Vec<_>>(),
        "next_cursor": page.next,
    }))
}

/// The groups a listing query asks for, one page of them.
pub fn groups(store: &Store, query: &GroupsQuery, now_ms: i64) -> Result<Page<Group>, TriageError> {
    let filter = GroupFilter {
        statuses: parse_statuses(query.status.as_deref())?,
        release: filter_release(store, &query.release)?,
        new_in: filter_release(store, &query.new_in)?,
        os: non_blank(&query.os),
        device_model: non_blank(&query.device_model),
        text: non_blank(&query.q),
    };
    let sort = parse_sort(query.sort.as_deref())?;
    Ok(store.groups(
        &filter,
        sort,
        query.cursor.as_deref(),
        limit(query.limit)?,
        now_ms,
    )?)
}

/// G: a group as every listing shows it.
pub fn group_json(g: &Group) -> Value {
    let mut v = json!({
        "id": g.id,
        "title": g.title,
        "culprit": g.culprit,
        "signature": g.signature,
        "signatures": g.signatures,
        "app": g.app,
        "status": g.status,
        "count": g.count,
        "devices": g.devices,
        "first_seen": g.first_seen,
        "last_seen": g.last_seen,
        "first_release": g.first_release,
        "last_release": g.last_release,
    });
    let map = v.as_object_mut().expect("an object");
    if g.status == "resolved" {
        let resolved_in = match (&g.resolved_in, g.resolved_next) {
            (_, true) => json!("next"),
            (Some(release), false) => json!(release),
            (None, false) => Value::Null,
        };
        map.insert("resolved_in".into(), resolved_in);
        if g.resolved_next {
            map.insert("resolved_after".into(), json!(g.resolved_in));
        }
    }
    if g.status == "ignored" {
        if let Some(until) = &g.ignore_until {
            map.insert("ignored_until".into(), json!(until));
        }
        if let Some(left) = g.ignore_left {
            map.insert("ignored_for_crashes".into(), json!(left));
        }
    }
    v
}

fn activity_json(a: &Activity) -> Value {
    let mut v = json!({"at": a.at, "actor": a.actor, "action": a.action});
    let map = v.as_object_mut().expect("an object");
    if let Some(from) = &a.from {
        map.insert("from".into(), json!(from));
    }
    if let Some(to) = &a.to {
        map.insert("to".into(), json!(to));
    }
    if let Some(detail) = a
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
    {
        map.insert("detail".into(), detail);
    }
    v
}

fn spread_json(key: &str, spread: &[(String, u64)]) -> Value {
    Value::Array(
        spread
            .iter()
            .map(|(name, count)| json!({ key: name, "count": count }))
            .collect(),
    )
}

/// G plus the group page's spreads, variants, hourly counts and activity.
pub fn group_detail_json(
    store: &Store,
    d: &GroupDetail,
    now_ms: i64,
) -> Result<Value, TriageError> {
    let mut v = group_json(&d.group);
    let since = time::OffsetDateTime::from_unix_timestamp(now_ms / 1000 - 14 * 86_400)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let hours = store.group_hours(&d.group.id, since)?;
    let map = v.as_object_mut().expect("an object");
    map.insert("signatures".into(), json!(d.signatures));
    map.insert("releases".into(), spread_json("release", &d.releases));
    map.insert("os".into(), spread_json("os", &d.os));
    map.insert(
        "device_models".into(),
        spread_json("device_model", &d.device_models),
    );
    map.insert("variants".into(), spread_json("variant", &d.variants));
    map.insert(
        "hours".into(),
        Value::Array(
            hours
                .iter()
                .map(|(hour, count)| json!({"hour": hour, "count": count}))
                .collect(),
        ),
    );
    map.insert(
        "activity".into(),
        Value::Array(d.activity.iter().map(activity_json).collect()),
    );
    Ok(v)
}

/// A group with everything its page shows; a merged-away id gives its target.
pub fn detail(store: &Store, id: &str, now_ms: i64) -> Result<GroupDetail, TriageError> {
    store
        .group_detail(id, now_ms)?
        .ok_or_else(|| TriageError::NotFound(format!("no group {id}")))
}

/// `GET /api/v1/groups/{id}`; a merged-away id answers with its target.
pub fn group(store: &Store, id: &str, now_ms: i64) -> Result<Value, TriageError> {
    let d = detail(store, id, now_ms)?;
    group_detail_json(store, &d, now_ms)
}

/// `GET /api/v1/groups/{id}/crashes`, newest first.
pub fn group_crashes(store: &Store, id: &str, query: &PageQuery) -> Result<Value, TriageError> {
    // A merged-away id lists its target's crashes.
    let live = store
        .live_group_id(id)?
        .ok_or_else(|| TriageError::NotFound(format!("no group {id}")))?;
    let page = store.crashes_in_group(&live, query.cursor.as_deref(), limit(query.limit)?)?;
    Ok(json!({
        "crashes": page.items.iter().map(|c| json!({
            "id": c.id,
            "received_at": c.received_at,
            "release": c.release,
            "os": c.os,
            "device_model": c.device_model,
        })).collect::<Vec<_>>(),
        "next_cursor": page.next,
    }))
}

/// `PATCH /api/v1/groups/{id}`'s body.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPatch {
    pub status: Option<String>,
    pub resolved_in: Option<String>,
    pub until_count: Option<i64>,
    pub until: Option<String>,
}

/// The lifecycle change a PATCH body asks for.
pub fn state_change(patch: &GroupPatch, now_ms: i64) -> Result<StateChange, TriageError> {
    let status = patch
        .status
        .as_deref()
        .ok_or_else(|| TriageError::Invalid("`status` is required".into()))?;
    let only = |allowed: &[&str]| -> Result<(), TriageError> {
        for (name, set) in [
            ("resolved_in", patch.resolved_in.is_some()),
            ("until_count", patch.until_count.is_some()),
            ("until", patch.until.is_some()),
        ] {
            if set && !allowed.contains(&name) {
                return Err(TriageError::Invalid(format!(
                    "`{name}` does not go with status `{status}`"
                )));
            }
        }
        Ok(())
    };
    match status {
        "resolved" => {
            only(&["resolved_in"])?;
            match patch.resolved_in.as_deref().map(str::trim) {
                None => Ok(StateChange::Resolve {
                    release: None,
                    next: false,
                }),
                Some("next") => Ok(StateChange::Resolve {
                    release: None,
                    next: true,
                }),
                Some(release) => {
                    crate::release::validate(release).map_err(TriageError::Invalid)?;
                    Ok(StateChange::Resolve {
                        release: Some(release.to_owned()),
                        next: false,
                    })
                }
            }
        }
        "ignored" => {
            only(&["until_count", "until"])?;
            if patch.until_count.is_some() && patch.until.is_some() {
                return Err(TriageError::Invalid(
                    "give `until_count` or `until`, not both".into(),
                ));
            }
            if let Some(n) = patch.until_count {
                if n < 1 {
                    return Err(TriageError::Invalid(
                        "`until_count` must be at least 1".into(),
                    ));
                }
            }
            let until_ms = match &patch.until {
                None => None,
                Some(text) => {
                    let at = time::OffsetDateTime::parse(
                        text,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .map_err(|e| TriageError::Invalid(format!("`until` is not RFC 3339: {e}")))?;
                    let ms = crate::store::unix_ms(at);
                    if ms <= now_ms {
                        return Err(TriageError::Invalid("`until` is in the past".into()));
                    }
                    Some(ms)
                }
            };
            Ok(StateChange::Ignore {
                until_ms,
                count: patch.until_count,
            })
        }
        "unresolved" => {
            only(&[])?;
            Ok(StateChange::Unresolve)
        }
        "regressed" => Err(TriageError::Invalid(
            "`regressed` is set by crashes, not by hand; use `unresolved`".into(),
        )),
        other => Err(TriageError::Invalid(format!(
            "status must be resolved, ignored or unresolved; not `{other}`"
        ))),
    }
}

/// `PATCH /api/v1/groups/{id}`: answers the group's new body.
pub fn patch_group(
    store: &Store,
    id: &str,
    patch: &GroupPatch,
    actor: &str,
    now_ms: i64,
) -> Result<Value, TriageError> {
    let change = state_change(patch, now_ms)?;
    let live = (store.change_group_state(id.to_owned(), change, actor.to_owned(), now_ms))??;
    group(store, &live, now_ms)
}

/// `POST /api/v1/groups/{id}/merge`'s body.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    pub groups: Vec<String>,
}

/// `POST /api/v1/groups/{id}/unmerge`'s body.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmergeRequest {
    pub signatures: Vec<String>,
}

/// Most groups or signatures one merge or unmerge names.
const MAX_MERGE: usize = 100;

pub fn merge(
    store: &Store,
    id: &str,
    request: &MergeRequest,
    actor: &str,
    now_ms: i64,
) -> Result<Value, TriageError> {
    if request.groups.is_empty() || request.groups.len() > MAX_MERGE {
        return Err(TriageError::Invalid(format!(
            "`groups` names 1 to {MAX_MERGE} groups"
        )));
    }
    let live = (store.merge_groups(
        id.to_owned(),
        request.groups.clone(),
        actor.to_owned(),
        now_ms,
    ))??;
    group(store, &live, now_ms)
}

pub fn unmerge(
    store: &Store,
    id: &str,
    request: &UnmergeRequest,
    actor: &str,
    now_ms: i64,
) -> Result<Value, TriageError> {
    if request.signatures.is_empty() || request.signatures.len() > MAX_MERGE {
        return Err(TriageError::Invalid(format!(
            "`signatures` names 1 to {MAX_MERGE} signatures"
        )));
    }
    let live = (store.unmerge_groups(
        id.to_owned(),
        request.signatures.clone(),
        actor.to_owned(),
        now_ms,
    ))??;
    group(store, &live, now_ms)
}

/// R: a release as listings show it.
pub fn release_json(r: &Release) -> Value {
    let mut v = json!({
        "release": r.name,
        "bundle_id": r.app,
        "version": r.version,
        "build": r.build,
        "crashes": r.crashes,
        "devices": r.devices,
        "first_seen": r.first_seen,
        "last_seen": r.last_seen,
        "sessions": {"total": r.sessions_total, "crashed": r.sessions_crashed},
    });
    let map = v.as_object_mut().expect("an object");
    if let Some(channel) = &r.channel {
        map.insert("channel".into(), json!(channel));
    }
    if let Some(rollout) = r.rollout {
        map.insert("rollout".into(), json!(rollout));
    }
    if let Some(at) = &r.released_at {
        map.insert("released_at".into(), json!(at));
    }
    if let Some(free) = crash_free(r) {
        map.insert("crash_free_sessions".into(), json!(free));
    }
    v
}

/// Crash-free sessions in percent, when sessions were counted.
pub fn crash_free(r: &Release) -> Option<f64> {
    (r.sessions_total > 0).then(|| {
        let crashed = r.sessions_crashed.min(r.sessions_total) as f64;
        let pct = 100.0 * (1.0 - crashed / r.sessions_total as f64);
        (pct * 1000.0).round() / 1000.0
    })
}

/// `GET /api/v1/releases`.
pub fn list_releases(store: &Store) -> Result<Value, TriageError> {
    let releases = store.releases()?;
    Ok(json!({"releases": releases.iter().map(release_json).collect::<Vec<_>>()}))
}

/// `GET /api/v1/releases/{release}`.
pub fn release(store: &Store, name: &str, now_ms: i64) -> Result<Value, TriageError> {
    let full = resolve_release(store, name)?;
    let ReleaseDetail {
        release,
        new_groups,
        regressed_groups,
        top_groups,
        missing_debug_files,
    } = store
        .release_detail(&full, now_ms)?
        .ok_or_else(|| TriageError::NotFound(format!("no release `{full}`")))?;
    let mut v = release_json(&release);
    let map = v.as_object_mut().expect("an object");
    let groups = |gs: &[Group]| Value::Array(gs.iter().map(group_json).collect());
    map.insert("new_groups".into(), groups(&new_groups));
    map.insert("regressed_groups".into(), groups(&regressed_groups));
    map.insert("top_groups".into(), groups(&top_groups));
    map.insert(
        "missing_debug_files".into(),
        Value::Array(
            missing_debug_files
                .iter()
                .map(|m| {
                    json!({
                        "debug_id": m.debug_id,
                        "name": m.name,
                        "crash_count": m.crash_count,
                        "releases": m.releases,
                        "last_seen": m.last_seen,
                    })
                })
                .collect(),
        ),
    );
    map.entry("crash_free_sessions").or_insert(Value::Null);
    Ok(v)
}

/// `POST /api/v1/releases`'s body.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub release: String,
    pub channel: Option<String>,
    pub rollout: Option<f64>,
    pub released_at: Option<String>,
}

/// Release channels.
pub const CHANNELS: [&str; 4] = ["development", "alpha", "beta", "production"];

/// `POST /api/v1/releases`: creates or updates a release; answers R.
pub fn put_release(store: &Store, request: &ReleaseRequest) -> Result<Value, TriageError> {
    let name = crate::release::validate(&request.release).map_err(TriageError::Invalid)?;
    if crate::release::parse(name).and_then(|r| r.app).is_none() {
        return Err(TriageError::Invalid(format!(
            "`{name}` is not a full release name: expected `bundle version (build)`"
        )));
    }
    if let Some(channel) = &request.channel {
        if !CHANNELS.contains(&channel.as_str()) {
            return Err(TriageError::Invalid(format!(
                "channel must be one of {}; not `{channel}`",
                CHANNELS.join(", ")
            )));
        }
    }
    if let Some(rollout) = request.rollout {
        if !(0.0..=100.0).contains(&rollout) {
            return Err(TriageError::Invalid(
                "rollout is a percentage between 0 and 100".into(),
            ));
        }
    }
    let released_at_ms = match &request.released_at {
        None => None,
        Some(text) => Some(crate::store::unix_ms(
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|e| TriageError::Invalid(format!("`released_at` is not RFC 3339: {e}")))?,
        )),
    };
    (store.update_release(
        name.to_owned(),
        ReleaseUpdate {
            channel: request.channel.clone(),
            rollout: request.rollout,
            released_at_ms,
        },
    ))?;
    let release = store
        .release(name)?
        .ok_or_else(|| TriageError::NotFound(format!("no release `{name}`")))?;
    Ok(release_json(&release))
}

/// `POST /api/v1/releases/{release}/sessions`'s body.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsRequest {
    pub total: u64,
    pub crashed: u64,
}

/// Most sessions one request may add: a day of a very large app, far past a mistake.
const MAX_SESSIONS: u64 = 1_000_000_000;

/// `POST /api/v1/releases/{release}/sessions`: adds session counts; answers R.
pub fn add_sessions(
    store: &Store,
    name: &str,
    request: &SessionsRequest,
) -> Result<Value, TriageError> {
    if request.crashed > request.total {
        return Err(TriageError::Invalid(
            "`crashed` cannot exceed `total`".into(),
        ));
    }
    if request.total > MAX_SESSIONS {
        return Err(TriageError::Invalid(format!(
            "`total` is at most {MAX_SESSIONS} per request"
        )));
    }
    let full = match resolve_release(store, name) {
        Ok(full) => full,
        Err(TriageError::NotFound(_)) => {
            let name = crate::release::validate(name).map_err(TriageError::Invalid)?;
            if crate::release::parse(name).and_then(|r| r.app).is_none() {
                return Err(TriageError::NotFound(format!("no release `{name}`")));
            }
            name.to_owned()
        }
        Err(err) => return Err(err),
    };
    (store.add_sessions(vec![(full.clone(), request.total, request.crashed)]))?;
    let release = store
        .release(&full)?
        .ok_or_else(|| TriageError::NotFound(format!("no release `{full}`")))?;
    Ok(release_json(&release))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_become_state_changes_or_clear_errors() {
        let now = 1_700_000_000_000;
        let p = |v: Value| serde_json::from_value::<GroupPatch>(v).unwrap();
        assert_eq!(
            state_change(
                &p(json!({"status": "resolved", "resolved_in": "next"})),
                now
            )
            .unwrap(),
            StateChange::Resolve {
                release: None,
                next: true
            }
        );
        assert_eq!(
            state_change(
                &p(json!({"status": "resolved", "resolved_in": "1.2.0 (42)"})),
                now
            )
            .unwrap(),
            StateChange::Resolve {
                release: Some("1.2.0 (42)".into()),
                next: false
            }
        );
        assert_eq!(
            state_change(&p(json!({"status": "ignored", "until_count": 5})), now).unwrap(),
            StateChange::Ignore {
                until_ms: None,
                count: Some(5)
            }
        );
        for bad in [
            json!({"status": "resolved", "until_count": 3}),
            json!({"status": "ignored", "until_count": 0}),
            json!({"status": "ignored", "until": "2000-01-01T00:00:00Z"}),
            json!({"status": "ignored", "until": "tomorrow"}),
            json!({"status": "regressed"}),
            json!({"status": "resolved", "resolved_in": "1.2.0"}),
            json!({}),
        ] {
            assert!(
                matches!(
                    state_change(&p(bad.clone()), now),
                    Err(TriageError::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(serde_json::from_value::<GroupPatch>(json!({"state": "resolved"})).is_err());
    }

    #[test]
    fn statuses_and_sorts_parse_or_say_what_is_allowed() {
        assert_eq!(
            parse_statuses(Some("unresolved, regressed")).unwrap(),
            vec!["unresolved", "regressed"]
        );
        assert!(parse_statuses(Some("open")).is_err());
        assert_eq!(parse_sort(None).unwrap(), GroupSort::LastSeen);
        assert_eq!(parse_sort(Some("trend")).unwrap(), GroupSort::Trend);
        assert!(parse_sort(Some("title")).is_err());
    }
}

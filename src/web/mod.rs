//! The web UI's pages: what each page shows, gathered from the store (through
//! `triage`) and the symbolicated sample crash (through `App`), rendered by askama
//! templates (`templates/`). Nothing here knows about HTTP: `http::ui` checks the
//! session, calls one function here on the blocking pool and answers with its HTML.
//!
//! Every string a page shows goes through a template, which escapes it as HTML: report
//! fields (function names, reasons, paths, thread names, device models, releases) are
//! never concatenated into markup here. URLs are built with `serde_urlencoded` and then
//! escaped by the template like any other value. Charts are inline SVG whose geometry
//! is computed here; their labels are template text too.

mod crash;
mod view;

use askama::Template;

use crate::app::session::Viewer;
use crate::app::App;
use crate::store::{DebugFileFilter, Group, MissingDebugFile, Release};
use crate::triage::{self, GroupsQuery, TriageError};

pub use crash::crash_text;
pub use view::path_segment;
use view::{day_chart, first_hour, query_url, short_release, sparkline, DayChart, Spark, When};

/// The stylesheet, script and icon, embedded in the binary (no asset from elsewhere).
pub const CSS: &str = include_str!("../../assets/app.css");
pub const JS: &str = include_str!("../../assets/app.js");
pub const ICON: &str = include_str!("../../assets/icon.svg");

/// Groups on one page of the groups table.
const PAGE_SIZE: usize = 50;
/// Days the sparklines and the day chart cover.
const DAYS: i64 = 14;
/// Crashes listed on a group's page.
const RECENT_CRASHES: usize = 10;
/// Debug files listed on their page (newest upload first).
const MAX_DEBUG_FILES: usize = 500;

fn render(template: &impl Template) -> Result<String, TriageError> {
    template
        .render()
        .map_err(|e| TriageError::Render(e.to_string()))
}

/// The frame around every signed-in page.
pub struct Layout {
    pub title: String,
    /// Which navigation entry is this page: `groups`, `releases` or `debug-files`.
    pub nav: &'static str,
    pub who: String,
    pub scope: &'static str,
    pub csrf: String,
}

impl Layout {
    fn new(viewer: &Viewer, title: impl Into<String>, nav: &'static str) -> Self {
        Layout {
            title: title.into(),
            nav,
            who: viewer.identity.actor().to_owned(),
            scope: viewer.identity.scope.as_str(),
            csrf: viewer.csrf.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------
// Sign-in and errors

/// Where a sign-in returns to: a path on this server, else `/` (never another site:
/// `//host` and `/\host` are URLs of other hosts to a browser).
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => "/",
    }
}

/// The sign-in form, returning to `path` afterwards.
pub fn login_url(path: &str) -> String {
    match safe_next(Some(path)) {
        "/" => "/login".to_owned(),
        path => query_url("/login", &[("next", path)]),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    error: Option<&'a str>,
    next: &'a str,
}

/// The sign-in form; `error` says why the last try failed.
pub fn login_page(error: Option<&str>, next: &str) -> Result<String, TriageError> {
    render(&LoginPage { error, next })
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Option<Layout>,
    status: u16,
    message: &'a str,
}

/// A page that says what went wrong (a 4xx or 5xx), with the navigation when signed in.
pub fn error_page(viewer: Option<&Viewer>, status: u16, message: &str) -> String {
    let page = ErrorPage {
        layout: viewer.map(|v| Layout::new(v, format!("Error {status}"), "")),
        status,
        message,
    };
    // The error page has no loop and no lookup: if even it fails, say so in text.
    page.render()
        .unwrap_or_else(|_| format!("error {status}: the error page failed to render"))
}

// ---------------------------------------------------------------------------------
// Groups

/// The groups page's query string: the filters, the sort and the page, so a link
/// shares exactly what its sender saw.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct GroupsParams {
    /// `open` (unresolved and regressed; the default), `all`, or one state.
    pub status: Option<String>,
    pub release: Option<String>,
    pub new_in: Option<String>,
    pub os: Option<String>,
    pub device_model: Option<String>,
    pub q: Option<String>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
}

/// The state choices of the groups page's filter: (value, label).
const STATE_CHOICES: [(&str, &str); 6] = [
    ("open", "Open (unresolved + regressed)"),
    ("all", "All states"),
    ("unresolved", "Unresolved"),
    ("regressed", "Regressed"),
    ("resolved", "Resolved"),
    ("ignored", "Ignored"),
];

/// The sortable columns: (sort key, header).
const SORTS: [(&str, &str); 5] = [
    ("count", "Crashes"),
    ("devices", "Devices"),
    ("trend", "Trend"),
    ("first_seen", "First seen"),
    ("last_seen", "Last seen"),
];

impl GroupsParams {
    fn get(value: &Option<String>) -> &str {
        value.as_deref().map(str::trim).unwrap_or("")
    }

    fn status(&self) -> &str {
        match Self::get(&self.status) {
            "" => "open",
            other => other,
        }
    }

    fn sort(&self) -> &str {
        match Self::get(&self.sort) {
            "" => "last_seen",
            other => other,
        }
    }

    /// The query string of this view with some parameters replaced (`""` drops one).
    /// Filters and sort that are at their default stay out of the URL.
    fn url(&self, changes: &[(&str, &str)]) -> String {
        let mut pairs: Vec<(&str, &str)> = vec![
            ("status", Self::get(&self.status)),
            ("release", Self::get(&self.release)),
            ("new_in", Self::get(&self.new_in)),
            ("os", Self::get(&self.os)),
            ("device_model", Self::get(&self.device_model)),
            ("q", Self::get(&self.q)),
            ("sort", Self::get(&self.sort)),
            ("cursor", Self::get(&self.cursor)),
        ];
        for (key, value) in changes {
            if let Some(pair) = pairs.iter_mut().find(|(k, _)| k == key) {
                pair.1 = value;
            }
        }
        query_url("/", &pairs)
    }

    fn query(&self) -> GroupsQuery {
        let statuses = match self.status() {
            "open" => Some("unresolved,regressed".to_owned()),
            "all" => None,
            other => Some(other.to_owned()),
        };
        GroupsQuery {
            release: self.release.clone(),
            status: statuses,
            new_in: self.new_in.clone(),
            os: self.os.clone(),
            device_model: self.device_model.clone(),
            q: self.q.clone(),
            sort: Some(self.sort().to_owned()),
            cursor: self.cursor.clone(),
            limit: Some(PAGE_SIZE),
        }
    }
}

/// One row of a groups table.
pub struct GroupRow {
    pub id: String,
    pub title: String,
    pub culprit: Option<String>,
    pub status: String,
    pub status_note: Option<String>,
    pub count: u64,
    pub devices: u64,
    pub first_release: Option<String>,
    pub last_release: Option<String>,
    pub first_release_full: Option<String>,
    pub last_release_full: Option<String>,
    pub first_seen: When,
    pub last_seen: When,
    pub spark: Spark,
}

fn status_note(g: &Group) -> Option<String> {
    match g.status.as_str() {
        "resolved" if g.resolved_next => Some(match &g.resolved_in {
            Some(after) => format!("in the release after {}", short_release(after, &g.app)),
            None => "in the next release".to_owned(),
        }),
        "resolved" => g
            .resolved_in
            .as_ref()
            .map(|r| format!("in {}", short_release(r, &g.app))),
        "ignored" => match (&g.ignore_until, g.ignore_left) {
            (Some(until), _) => Some(format!("until {}", &until[..until.len().min(10)])),
            (None, Some(left)) => Some(format!("for {left} more crashes")),
            (None, None) => Some("for good".to_owned()),
        },
        _ => None,
    }
}

/// Rows for `groups`, each with its sparkline of the last [`DAYS`] days.
fn group_rows(app: &App, groups: &[Group], now_ms: i64) -> Result<Vec<GroupRow>, TriageError> {
    let now_hour = now_ms.div_euclid(3_600_000);
    let ids: Vec<String> = groups.iter().map(|g| g.id.clone()).collect();
    let hours = app.store().hour_counts(&ids, first_hour(now_hour, DAYS))?;
    Ok(groups
        .iter()
        .zip(hours)
        .map(|(g, hours)| GroupRow {
            id: g.id.clone(),
            title: g.title.clone(),
            culprit: g.culprit.clone(),
            status: g.status.clone(),
            status_note: status_note(g),
            count: g.count,
            devices: g.devices,
            first_release: g.first_release.as_deref().map(|r| short_release(r, &g.app)),
            last_release: g.last_release.as_deref().map(|r| short_release(r, &g.app)),
            first_release_full: g.first_release.clone(),
            last_release_full: g.last_release.clone(),
            first_seen: When::new(&g.first_seen, now_ms),
            last_seen: When::new(&g.last_seen, now_ms),
            spark: sparkline(&hours, now_hour, DAYS),
        })
        .collect())
}

/// A column header that sorts.
pub struct SortLink {
    pub label: &'static str,
    pub url: String,
    pub active: bool,
}

/// A choice in a `<select>`.
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "groups.html")]
struct GroupsPage {
    layout: Layout,
    status: String,
    states: Vec<Choice>,
    release: String,
    new_in: String,
    os: String,
    device_model: String,
    q: String,
    sort: String,
    sorts: Vec<SortLink>,
    releases: Vec<Choice>,
    rows: Vec<GroupRow>,
    next_url: Option<String>,
    first_url: Option<String>,
    /// Filters that narrow the list, for the "clear" link.
    filtered: bool,
    clear_url: String,
    error: Option<String>,
}

/// `/`: groups by the chosen sort and filters.
pub fn groups_page(
    app: &App,
    viewer: &Viewer,
    params: &GroupsParams,
    now_ms: i64,
) -> Result<String, TriageError> {
    let releases = app.store().releases()?;
    let (rows, next, error) = match triage::groups(app.store(), &params.query(), now_ms) {
        Ok(page) => (group_rows(app, &page.items, now_ms)?, page.next, None),
        // A filter or sort the page cannot use: say so above an empty table.
        Err(TriageError::Invalid(why)) => (Vec::new(), None, Some(why)),
        Err(err) => return Err(err),
    };
    let status = params.status().to_owned();
    let page = GroupsPage {
        layout: Layout::new(viewer, "Groups", "groups"),
        states: STATE_CHOICES
            .iter()
            .map(|(value, label)| Choice {
                value: (*value).to_owned(),
                label: (*label).to_owned(),
                selected: *value == status,
            })
            .collect(),
        status,
        release: GroupsParams::get(&params.release).to_owned(),
        new_in: GroupsParams::get(&params.new_in).to_owned(),
        os: GroupsParams::get(&params.os).to_owned(),
        device_model: GroupsParams::get(&params.device_model).to_owned(),
        q: GroupsParams::get(&params.q).to_owned(),
        sort: params.sort().to_owned(),
        sorts: SORTS
            .iter()
            .map(|(key, label)| SortLink {
                label,
                url: params.url(&[("sort", key), ("cursor", "")]),
                active: params.sort() == *key,
            })
            .collect(),
        releases: releases
            .iter()
            .map(|r| Choice {
                value: r.name.clone(),
                label: r.name.clone(),
                selected: false,
            })
            .collect(),
        rows,
        next_url: next.map(|cursor| params.url(&[("cursor", &cursor)])),
        first_url: params
            .cursor
            .as_ref()
            .map(|_| params.url(&[("cursor", "")])),
        filtered: [
            &params.release,
            &params.new_in,
            &params.os,
            &params.device_model,
            &params.q,
        ]
        .iter()
        .any(|v| !GroupsParams::get(v).is_empty()),
        clear_url: GroupsParams::default().url(&[("status", GroupsParams::get(&params.status))]),
        error,
    };
    render(&page)
}

// ---------------------------------------------------------------------------------
// One group

/// A bar of a spread chart (releases, OS versions, device models, variants).
pub struct SpreadRow {
    pub name: String,
    pub count: u64,
    pub percent: String,
    /// Bar width out of 100.
    pub width: u32,
    /// The groups page filtered by this value, when it is a filter.
    pub url: Option<String>,
}

pub struct Spread {
    pub title: &'static str,
    pub rows: Vec<SpreadRow>,
}

fn spread(title: &'static str, rows: &[(String, u64)], filter: Option<&'static str>) -> Spread {
    let total: u64 = rows.iter().map(|(_, n)| n).sum::<u64>().max(1);
    // The ten with the most crashes (the store lists releases newest first).
    let mut rows: Vec<&(String, u64)> = rows.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    Spread {
        title,
        rows: rows
            .into_iter()
            .take(10)
            .map(|(name, count)| SpreadRow {
                name: name.clone(),
                count: *count,
                percent: format!("{:.1} %", 100.0 * *count as f64 / total as f64),
                width: ((100 * count).div_ceil(total)).clamp(1, 100) as u32,
                url: filter.map(|key| query_url("/", &[("status", "all"), (key, name.as_str())])),
            })
            .collect(),
    }
}

pub struct ActivityRow {
    pub at: When,
    pub actor: String,
    pub action: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

pub struct CrashRow {
    pub id: String,
    pub url: String,
    pub received: When,
    pub release: Option<String>,
    pub os: Option<String>,
    pub device_model: Option<String>,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "group.html")]
struct GroupPage {
    layout: Layout,
    g: GroupRow,
    app_name: String,
    signatures: Vec<String>,
    can_triage: bool,
    days: DayChart,
    spreads: Vec<Spread>,
    activity: Vec<ActivityRow>,
    crash: Option<crash::CrashView>,
    newer_url: Option<String>,
    older_url: Option<String>,
    recent: Vec<CrashRow>,
    /// The app's releases, newest first, for "resolved in".
    app_releases: Vec<Choice>,
}

/// What a group URL leads to.
pub enum GroupAnswer {
    Page(String),
    /// A merged-away id or an alias: the group it lives on now.
    Moved(String),
}

/// `/groups/{id}`: the group with a sample crash (`crash`, else its newest).
pub fn group_page(
    app: &App,
    viewer: &Viewer,
    id: &str,
    crash_id: Option<&str>,
    now_ms: i64,
) -> Result<GroupAnswer, TriageError> {
    let store = app.store();
    let detail = triage::detail(store, id, now_ms)?;
    let g = &detail.group;
    if g.id != id {
        let to = format!("/groups/{}", g.id);
        return Ok(GroupAnswer::Moved(match crash_id {
            Some(c) => query_url(&to, &[("crash", c)]),
            None => to,
        }));
    }
    let now_hour = now_ms.div_euclid(3_600_000);
    let hours = store
        .hour_counts(std::slice::from_ref(&g.id), first_hour(now_hour, DAYS))?
        .pop()
        .unwrap_or_default();
    let recent = store.crashes_in_group(&g.id, None, RECENT_CRASHES)?.items;
    let selected = match crash_id {
        Some(c) => Some(c.to_owned()),
        None => recent.first().map(|c| c.id.clone()),
    };
    let group_url = format!("/groups/{}", g.id);
    let crash_url = |c: &str| query_url(&group_url, &[("crash", c)]);
    let (mut newer_url, mut older_url, mut crash) = (None, None, None);
    if let Some(selected) = &selected {
        let Some((newer, older)) = store.crash_neighbors(&g.id, selected)? else {
            return Err(TriageError::NotFound(format!(
                "no crash {selected} in group {}",
                g.id
            )));
        };
        newer_url = newer.as_deref().map(crash_url);
        older_url = older.as_deref().map(crash_url);
        if let Some((record, symbolicated)) = app.crash_now(selected)? {
            crash = Some(crash::CrashView::new(&record, &symbolicated, now_ms));
        }
    }
    let app_releases = store
        .releases()?
        .into_iter()
        .filter(|r: &Release| r.app == g.app)
        .map(|r| Choice {
            label: short_release(&r.name, &g.app),
            selected: g.resolved_in.as_deref() == Some(r.name.as_str()) && !g.resolved_next,
            value: r.name,
        })
        .collect();
    let row = group_rows(app, std::slice::from_ref(g), now_ms)?
        .pop()
        .ok_or_else(|| TriageError::Render("a group without its row".into()))?;
    let page = GroupPage {
        layout: Layout::new(viewer, g.title.clone(), "groups"),
        app_name: g.app.clone(),
        signatures: detail.signatures.clone(),
        can_triage: viewer.can_triage(),
        days: day_chart(&hours, now_hour, DAYS),
        spreads: vec![
            spread("Releases", &detail.releases, Some("release")),
            spread("OS versions", &detail.os, Some("os")),
            spread("Device models", &detail.device_models, Some("device_model")),
            spread("Call paths", &detail.variants, None),
        ],
        activity: detail
            .activity
            .iter()
            .rev()
            .map(|a| ActivityRow {
                at: When::new(&a.at, now_ms),
                actor: a.actor.clone(),
                action: a.action.clone(),
                from: a.from.clone(),
                to: a.to.clone(),
            })
            .collect(),
        crash,
        newer_url,
        older_url,
        recent: recent
            .iter()
            .map(|c| CrashRow {
                url: crash_url(&c.id),
                current: selected.as_deref() == Some(c.id.as_str()),
                id: c.id.clone(),
                received: When::new(&c.received_at, now_ms),
                release: c.release.as_deref().map(|r| short_release(r, &g.app)),
                os: c.os.clone(),
                device_model: c.device_model.clone(),
            })
            .collect(),
        app_releases,
        g: row,
    };
    Ok(GroupAnswer::Page(render(&page)?))
}

/// The state form of a group page.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct StateForm {
    pub csrf: String,
    /// `resolved`, `ignored` or `unresolved`.
    pub status: String,
    /// For `resolved`: `""` (now), `next`, or a release.
    pub resolved_in: String,
    /// For `ignored`: `""` (for good), `count` or `date`.
    pub ignore: String,
    pub until_count: String,
    /// `YYYY-MM-DD` (a date input).
    pub until: String,
}

/// Applies a group page's state form.
pub fn change_state(
    app: &App,
    viewer: &Viewer,
    id: &str,
    form: &StateForm,
    now_ms: i64,
) -> Result<(), TriageError> {
    let mut patch = triage::GroupPatch {
        status: Some(form.status.trim().to_owned()),
        ..Default::default()
    };
    match form.status.trim() {
        "resolved" => {
            let r = form.resolved_in.trim();
            patch.resolved_in = (!r.is_empty()).then(|| r.to_owned());
        }
        "ignored" => match form.ignore.trim() {
            "count" => {
                let n = form.until_count.trim().parse::<i64>().map_err(|_| {
                    TriageError::Invalid("\"more crashes\" must be a whole number".into())
                })?;
                patch.until_count = Some(n);
            }
            "date" => {
                let day = form.until.trim();
                if day.is_empty() {
                    return Err(TriageError::Invalid("choose a date to ignore until".into()));
                }
                // Until the chosen day is over (UTC): choosing today means "today".
                patch.until = Some(format!("{day}T23:59:59Z"));
            }
            _ => {}
        },
        _ => {}
    }
    triage::patch_group(app.store(), id, &patch, viewer.identity.actor(), now_ms)?;
    Ok(())
}

/// Merges the groups a form names (ids separated by spaces or commas) into `id`.
pub fn merge(
    app: &App,
    viewer: &Viewer,
    id: &str,
    groups: &str,
    now_ms: i64,
) -> Result<(), TriageError> {
    let request = triage::MergeRequest {
        groups: groups
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            // A pasted group URL works as well as its id (`/groups/ID`, `/groups/ID/`,
            // `/groups/ID?crash=…`).
            .filter_map(|s| {
                let path = s
                    .split(['?', '#'])
                    .next()
                    .unwrap_or(s)
                    .trim_end_matches('/');
                path.rsplit('/').next().filter(|id| !id.is_empty())
            })
            .map(str::to_owned)
            .collect(),
    };
    if request.groups.is_empty() {
        return Err(TriageError::Invalid(
            "name the groups to merge into this one".into(),
        ));
    }
    triage::merge(app.store(), id, &request, viewer.identity.actor(), now_ms)?;
    Ok(())
}

/// Takes one signature out of group `id`.
pub fn unmerge(
    app: &App,
    viewer: &Viewer,
    id: &str,
    signature: &str,
    now_ms: i64,
) -> Result<(), TriageError> {
    let request = triage::UnmergeRequest {
        signatures: vec![signature.to_owned()],
    };
    triage::unmerge(app.store(), id, &request, viewer.identity.actor(), now_ms)?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Releases

pub struct ReleaseRow {
    pub name: String,
    pub url: String,
    pub app: String,
    pub version: String,
    pub build: String,
    pub channel: Option<String>,
    pub rollout: Option<String>,
    pub crashes: u64,
    pub devices: u64,
    pub crash_free: Option<String>,
    pub sessions: u64,
    pub released_at: Option<When>,
    pub first_seen: Option<When>,
    pub last_seen: Option<When>,
}

fn release_row(r: &Release, now_ms: i64) -> ReleaseRow {
    let when = |t: &Option<String>| t.as_deref().map(|t| When::new(t, now_ms));
    ReleaseRow {
        url: format!("/releases/{}", view::path_segment(&r.name)),
        name: r.name.clone(),
        app: r.app.clone(),
        // A release whose name has no version part (reports may send anything) shows
        // its whole name.
        version: r
            .version
            .clone()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| r.name.clone()),
        build: r
            .build
            .clone()
            .filter(|_| r.version.as_deref().is_some_and(|v| !v.is_empty()))
            .unwrap_or_default(),
        channel: r.channel.clone(),
        rollout: r
            .rollout
            .map(|p| format!("{} %", (p * 10.0).round() / 10.0)),
        crashes: r.crashes,
        devices: r.devices,
        crash_free: triage::crash_free(r).map(|pct| format!("{pct:.2} %")),
        sessions: r.sessions_total,
        released_at: when(&r.released_at),
        first_seen: when(&r.first_seen),
        last_seen: when(&r.last_seen),
    }
}

#[derive(Template)]
#[template(path = "releases.html")]
struct ReleasesPage {
    layout: Layout,
    apps: Vec<(String, Vec<ReleaseRow>)>,
}

/// `/releases`: every release, by app, newest first.
pub fn releases_page(app: &App, viewer: &Viewer, now_ms: i64) -> Result<String, TriageError> {
    let mut apps: Vec<(String, Vec<ReleaseRow>)> = Vec::new();
    for r in app.store().releases()? {
        let row = release_row(&r, now_ms);
        match apps.last_mut() {
            Some((name, rows)) if *name == r.app => rows.push(row),
            _ => apps.push((r.app.clone(), vec![row])),
        }
    }
    render(&ReleasesPage {
        layout: Layout::new(viewer, "Releases", "releases"),
        apps,
    })
}

pub struct GroupTable {
    pub title: &'static str,
    pub empty: &'static str,
    pub rows: Vec<GroupRow>,
    pub more_url: Option<String>,
}

pub struct MissingRow {
    pub debug_id: String,
    pub name: String,
    pub crash_count: u64,
    pub last_seen: When,
}

fn missing_rows(missing: &[MissingDebugFile], now_ms: i64) -> Vec<MissingRow> {
    missing
        .iter()
        .map(|m| MissingRow {
            debug_id: m.debug_id.clone(),
            name: m.name.clone(),
            crash_count: m.crash_count,
            last_seen: When::new(&m.last_seen, now_ms),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "release.html")]
struct ReleasePage {
    layout: Layout,
    r: ReleaseRow,
    tables: Vec<GroupTable>,
    missing: Vec<MissingRow>,
    upload_command: String,
}

/// A shell word: single-quoted unless it is plainly safe.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `/releases/{release}`: its counts, its new, regressed and top groups, and the
/// debug files its crashes still need, with the command that uploads them.
pub fn release_page(
    app: &App,
    viewer: &Viewer,
    name: &str,
    now_ms: i64,
) -> Result<String, TriageError> {
    let store = app.store();
    let full = triage::resolve_release(store, name)?;
    let detail = store
        .release_detail(&full, now_ms)?
        .ok_or_else(|| TriageError::NotFound(format!("no release `{full}`")))?;
    let filtered = |key: &str| query_url("/", &[("status", "all"), (key, full.as_str())]);
    let tables = vec![
        GroupTable {
            title: "New in this release",
            empty: "No group started in this release.",
            rows: group_rows(app, &detail.new_groups, now_ms)?,
            more_url: Some(filtered("new_in")),
        },
        GroupTable {
            title: "Regressed in this release",
            empty: "No resolved group came back in this release.",
            rows: group_rows(app, &detail.regressed_groups, now_ms)?,
            more_url: None,
        },
        GroupTable {
            title: "Top groups",
            empty: "No crash from this release yet.",
            rows: group_rows(app, &detail.top_groups, now_ms)?,
            more_url: Some(query_url(
                "/",
                &[
                    ("status", "all"),
                    ("release", full.as_str()),
                    ("sort", "count"),
                ],
            )),
        },
    ];
    // Every part that came from a report is shell-quoted: people paste this command.
    let upload_command = format!(
        "crashbox upload-dsyms --url {} --token \"$CRASHBOX_UPLOAD_TOKEN\" --release {} path/to/App.xcarchive",
        shell_quote(&app.config().public_url()),
        shell_quote(&full),
    );
    render(&ReleasePage {
        layout: Layout::new(viewer, full.clone(), "releases"),
        r: release_row(&detail.release, now_ms),
        tables,
        missing: missing_rows(&detail.missing_debug_files, now_ms),
        upload_command,
    })
}

// ---------------------------------------------------------------------------------
// Debug files

pub struct DebugFileRow {
    pub debug_id: String,
    pub arch: String,
    pub name: String,
    pub kind: String,
    pub features: Vec<&'static str>,
    pub size: String,
    pub uploaded: When,
    pub releases: Vec<String>,
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

#[derive(Template)]
#[template(path = "debug_files.html")]
struct DebugFilesPage {
    layout: Layout,
    files: Vec<DebugFileRow>,
    more: usize,
    missing: Vec<MissingRow>,
    upload_command: String,
}

/// `/debug-files`: what was uploaded, newest first, and what crashes still need.
pub fn debug_files_page(app: &App, viewer: &Viewer, now_ms: i64) -> Result<String, TriageError> {
    let store = app.store();
    let all = store.list_debug_files(&DebugFileFilter::default())?;
    let more = all.len().saturating_sub(MAX_DEBUG_FILES);
    let files = all
        .into_iter()
        .take(MAX_DEBUG_FILES)
        .map(|f| {
            let mut features = Vec::new();
            if f.has_symbols {
                features.push("symbols");
            }
            if f.has_debug_info {
                features.push("debug info");
            }
            if f.has_unwind_info {
                features.push("unwind");
            }
            if f.has_sources {
                features.push("sources");
            }
            DebugFileRow {
                debug_id: f.debug_id,
                arch: f.arch,
                name: f.name,
                kind: f.kind,
                features,
                size: size(f.size),
                uploaded: When::new(&f.uploaded_at, now_ms),
                releases: f.releases,
            }
        })
        .collect();
    let missing = store.missing_debug_files()?;
    render(&DebugFilesPage {
        layout: Layout::new(viewer, "Debug files", "debug-files"),
        files,
        more,
        missing: missing_rows(&missing, now_ms),
        upload_command: format!(
            "crashbox upload-dsyms --url {} --token \"$CRASHBOX_UPLOAD_TOKEN\" path/to/App.xcarchive",
            shell_quote(&app.config().public_url())
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_returns_only_to_this_server() {
        for ok in ["/", "/groups/abc?crash=1", "/releases/com.a%201.0"] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "/a\nLocation: x",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(login_url("/"), "/login");
        assert_eq!(
            login_url("/groups/x?crash=1"),
            "/login?next=%2Fgroups%2Fx%3Fcrash%3D1"
        );
    }

    #[test]
    fn pasted_commands_quote_what_reports_sent() {
        assert_eq!(shell_quote("com.a 1.0 (1)"), "'com.a 1.0 (1)'");
        assert_eq!(shell_quote("a';rm -rf ~;'"), r"'a'\'';rm -rf ~;'\'''");
        assert_eq!(
            shell_quote("com.evil;curl${IFS}x|sh"),
            "'com.evil;curl${IFS}x|sh'"
        );
        assert_eq!(
            shell_quote("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
    }
}

//! Triage over real HTTP: the group lifecycle (resolve in a release, `next`, bare,
//! ignore until a count or a date, regressions and what does not regress), merges and
//! unmerges, activity with actors, the group listing's filters, sorts and paging, and
//! releases with metadata and sessions. Crashes are crashbox JSON whose one in-app
//! frame has no dSYM, so each distinct offset is its own crash site.

use serde_json::{json, Value};

use crate::support::{spawn_app, TestApp};
use crashbox::auth::{Scope, TokenStore};

const APP: &str = "com.example.triage";

/// A crash of crash site `site` (an offset in the app image) from `version (build)`.
fn report(site: u32, version: &str, build: &str, os: &str, model: &str, device: &str) -> Vec<u8> {
    json!({
        "crashbox": 1,
        "app": {"bundle_id": APP, "name": "Triage", "version": version, "build": build},
        "os": {"name": "iOS", "version": os},
        "device_model": model,
        "device_id": device,
        "exception": {"type": "EXC_BAD_ACCESS", "signal": "SIGSEGV"},
        "images": [{"name": "Triage", "path": "/private/var/containers/Bundle/Application/X/Triage.app/Triage",
                    "uuid": "11111111-2222-3333-4444-555555555555",
                    "load_address": "0x100000000", "size": 1048576}],
        "threads": [{"crashed": true, "frames": [format!("0x{:x}", 0x1_0000_0000u64 + u64::from(site))]}],
        "incident_id": format!("{site}-{version}-{build}-{os}-{model}-{device}-{}", rand_suffix()),
    })
    .to_string()
    .into_bytes()
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

struct Triage {
    app: TestApp,
    ingest: String,
    read: String,
    triage: String,
}

impl Triage {
    fn new() -> Self {
        let app = spawn_app();
        let tokens = TokenStore::open(&app.data_dir()).unwrap();
        let named = |scope, name| tokens.create_named(scope, name).unwrap().token;
        Triage {
            ingest: named(Scope::Ingest, None),
            read: named(Scope::Read, None),
            triage: named(Scope::Triage, Some("alice")),
            app,
        }
    }

    /// Posts a crash; answers its group id.
    fn crash(&self, site: u32, version: &str, build: &str) -> String {
        self.crash_on(site, version, build, "17.1", "iPhone15,2", "device-a")
    }

    fn crash_on(
        &self,
        site: u32,
        version: &str,
        build: &str,
        os: &str,
        model: &str,
        device: &str,
    ) -> String {
        let r = self.app.post(
            "/api/v1/crashes",
            Some(&self.ingest),
            &report(site, version, build, os, model, device),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body["group_id"].as_str().unwrap().to_owned()
    }

    fn group(&self, id: &str) -> Value {
        let r = self
            .app
            .get(&format!("/api/v1/groups/{id}"), Some(&self.read));
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }

    fn patch(&self, id: &str, body: Value) -> (u16, Value) {
        let r = self.app.patch(
            &format!("/api/v1/groups/{id}"),
            Some(&self.triage),
            body.to_string().as_bytes(),
        );
        (r.status, r.body)
    }

    fn list(&self, query: &str) -> Value {
        let r = self
            .app
            .get(&format!("/api/v1/groups{query}"), Some(&self.read));
        assert_eq!(r.status, 200, "{query}: {:?}", r.body);
        r.body
    }

    fn ids(&self, query: &str) -> Vec<String> {
        self.list(query)["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn audit_is_clean(&self) {
        // The store's own recount, through a second read-only handle.
        let store = crashbox::store::Store::open(&self.app.data_dir()).unwrap();
        assert_eq!(store.audit().unwrap(), vec![]);
    }
}

fn status(g: &Value) -> &str {
    g["status"].as_str().unwrap()
}

fn actions(g: &Value) -> Vec<(String, String)> {
    g["activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_owned(),
                a["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_group_resolved_in_a_release_regresses_on_that_release_or_later_only() {
    let t = Triage::new();
    let id = t.crash(0x100, "1.0", "1");
    let g = t.group(&id);
    assert_eq!(status(&g), "unresolved");
    assert_eq!(g["title"], "EXC_BAD_ACCESS: Triage+0x100", "{g}");
    assert_eq!(g["first_release"], format!("{APP} 1.0 (1)"));

    // Resolved in a release nobody has seen yet, named the short way.
    let (code, g) = t.patch(
        &id,
        json!({"status": "resolved", "resolved_in": "1.2.0 (3)"}),
    );
    assert_eq!(code, 200, "{g}");
    assert_eq!(status(&g), "resolved");
    assert_eq!(g["resolved_in"], format!("{APP} 1.2.0 (3)"));

    // Older builds leave it resolved.
    t.crash(0x100, "1.0", "1");
    t.crash(0x100, "1.1.9", "99");
    assert_eq!(status(&t.group(&id)), "resolved");

    // 1.2 (3) is the same release as 1.2.0 (3): it regresses.
    t.crash(0x100, "1.2", "3");
    let g = t.group(&id);
    assert_eq!(status(&g), "regressed", "{g}");
    assert_eq!(
        actions(&g),
        vec![
            ("resolve".to_owned(), "alice".to_owned()),
            ("regress".to_owned(), "crashbox".to_owned())
        ]
    );
    let regress = &g["activity"][1];
    assert_eq!(
        (regress["from"].as_str(), regress["to"].as_str()),
        (Some("resolved"), Some("regressed"))
    );
    assert_eq!(g["count"], 4);
    assert_eq!(g["last_release"], format!("{APP} 1.2 (3)"));

    // The release page lists it as regressed there.
    let r = t.app.get("/api/v1/releases/1.2%20(3)", Some(&t.read));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let regressed: Vec<&str> = r.body["regressed_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(regressed, vec![id.as_str()]);
    t.audit_is_clean();
}

#[test]
fn resolved_in_next_and_bare_resolves_follow_the_rules() {
    let t = Triage::new();
    let next = t.crash(0x200, "2.0", "10");
    let bare = t.crash(0x300, "2.0", "10");
    let (code, g) = t.patch(&next, json!({"status": "resolved", "resolved_in": "next"}));
    assert_eq!(code, 200, "{g}");
    assert_eq!(g["resolved_in"], "next");
    t.patch(&bare, json!({"status": "resolved"}));

    // The newest release when resolving does not regress "next"; a later one does.
    t.crash(0x200, "2.0", "10");
    assert_eq!(status(&t.group(&next)), "resolved");
    t.crash(0x200, "2.0", "11");
    assert_eq!(status(&t.group(&next)), "regressed");

    // A bare resolve regresses on any later crash, even an older build.
    t.crash(0x300, "1.0", "1");
    assert_eq!(status(&t.group(&bare)), "regressed");
}

#[test]
fn ignores_end_after_their_count_and_past_their_date() {
    let t = Triage::new();
    let counted = t.crash(0x400, "1.0", "1");
    let dated = t.crash(0x500, "1.0", "1");
    let (code, g) = t.patch(&counted, json!({"status": "ignored", "until_count": 2}));
    assert_eq!((code, status(&g)), (200, "ignored"), "{g}");
    t.crash(0x400, "1.0", "1");
    assert_eq!(status(&t.group(&counted)), "ignored");
    t.crash(0x400, "1.0", "1");
    let g = t.group(&counted);
    assert_eq!(status(&g), "unresolved", "{g}");
    assert_eq!(actions(&g).last().unwrap().0, "unresolve");

    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (code, g) = t.patch(&dated, json!({"status": "ignored", "until": soon}));
    assert_eq!((code, status(&g)), (200, "ignored"), "{g}");
    assert_eq!(t.ids("?status=ignored"), vec![dated.clone()]);
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    assert_eq!(status(&t.group(&dated)), "unresolved");
    assert!(t.ids("?status=unresolved").contains(&dated));
    assert!(t.ids("?status=ignored").is_empty());
}

#[test]
fn changes_need_the_triage_scope_and_valid_bodies() {
    let t = Triage::new();
    let id = t.crash(0x600, "1.0", "1");
    let path = format!("/api/v1/groups/{id}");
    let body = json!({"status": "resolved"}).to_string();
    assert_eq!(
        t.app.patch(&path, Some(&t.read), body.as_bytes()).status,
        403
    );
    assert_eq!(
        t.app.patch(&path, Some(&t.ingest), body.as_bytes()).status,
        403
    );
    assert_eq!(t.app.patch(&path, None, body.as_bytes()).status, 401);
    assert_eq!(t.app.get(&path, Some(&t.ingest)).status, 403);
    for bad in [
        json!({"status": "closed"}),
        json!({"status": "regressed"}),
        json!({"status": "ignored", "until_count": -1}),
        json!({"status": "resolved", "resolved_in": "not a release"}),
        json!({"status": "resolved", "extra": 1}),
        // Releases compare within one app only.
        json!({"status": "resolved", "resolved_in": "com.other.app 9.0 (1)"}),
    ] {
        let (code, body) = t.patch(&id, bad.clone());
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body["error"]["code"].is_string());
    }
    let r = t.app.patch(
        "/api/v1/groups/ffffffffffffffff",
        Some(&t.triage),
        body.as_bytes(),
    );
    assert_eq!(r.status, 404);
    // Nothing changed, and no activity was written by the refusals.
    let g = t.group(&id);
    assert_eq!(status(&g), "unresolved");
    assert!(actions(&g).is_empty());
    assert_eq!(
        t.app.get("/api/v1/groups?sort=title", Some(&t.read)).status,
        400
    );
    assert_eq!(
        t.app.get("/api/v1/groups?limit=501", Some(&t.read)).status,
        400
    );
    assert_eq!(
        t.app
            .get("/api/v1/groups?status=open", Some(&t.read))
            .status,
        400
    );
}

#[test]
fn merges_stick_and_unmerges_give_old_ids_back() {
    let t = Triage::new();
    let a = t.crash(0x700, "1.0", "1");
    let b = t.crash(0x800, "1.0", "1");
    t.crash_on(0x800, "1.0", "1", "16.0", "iPhone12,1", "device-b");
    let sig_b = t.group(&b)["signature"].as_str().unwrap().to_owned();
    t.patch(&a, json!({"status": "resolved"}));

    let r = t.app.post(
        &format!("/api/v1/groups/{a}/merge"),
        Some(&t.triage),
        json!({"groups": [b]}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let g = &r.body;
    assert_eq!(g["id"], a.as_str());
    assert_eq!(g["count"], 3);
    assert_eq!(g["devices"], 2);
    assert_eq!(g["signatures"].as_array().unwrap().len(), 2);
    // A is older, so the merged group keeps A's state.
    assert_eq!(status(g), "resolved");
    // The merged-away id answers with the target, for GET and /crashes alike.
    assert_eq!(t.group(&b)["id"], a.as_str());
    let crashes = t
        .app
        .get(&format!("/api/v1/groups/{b}/crashes"), Some(&t.read));
    assert_eq!(crashes.body["crashes"].as_array().unwrap().len(), 3);
    // Newest first: B's second crash.
    assert_eq!(crashes.body["crashes"][0]["os"], "iOS 16.0");
    assert_eq!(crashes.body["crashes"][0]["device_model"], "iPhone12,1");
    assert!(!t.ids("").contains(&b));
    // The listing names the merged signatures too.
    let listed = t.list("");
    let row = listed["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == a.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["signatures"].as_array().unwrap().len(), 2, "{row}");

    // Merges stick: B's signature lands in A (and regresses it: a crash after a bare resolve).
    assert_eq!(t.crash(0x800, "1.0", "1"), a);
    assert_eq!(t.group(&a)["count"], 4);
    assert_eq!(status(&t.group(&a)), "regressed");

    let r = t.app.post(
        &format!("/api/v1/groups/{a}/unmerge"),
        Some(&t.triage),
        json!({"signatures": [sig_b]}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["count"], 1);
    let gb = t.group(&b);
    assert_eq!(gb["id"], b.as_str());
    assert_eq!(gb["count"], 3);
    assert_eq!(t.crash(0x800, "1.0", "1"), b);
    let acts: Vec<String> = actions(&t.group(&a)).into_iter().map(|(a, _)| a).collect();
    assert_eq!(acts, vec!["resolve", "merge", "regress", "unmerge"]);
    // Merging needs the triage scope; unknown groups are 404.
    let r = t.app.post(
        &format!("/api/v1/groups/{a}/merge"),
        Some(&t.read),
        json!({"groups": [b]}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 403);
    let r = t.app.post(
        &format!("/api/v1/groups/{a}/merge"),
        Some(&t.triage),
        json!({"groups": ["0000000000000000"]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 404);
    t.audit_is_clean();
}

#[test]
fn the_group_listing_filters_sorts_and_pages() {
    let t = Triage::new();
    // Site 0x900: 3 crashes on 1.0 (1); 0xa00: 2 on 1.1 (2), one of them on iPad;
    // 0xb00: 1 on 1.1 (2) on iOS 16.
    let g1 = t.crash(0x900, "1.0", "1");
    t.crash_on(0x900, "1.0", "1", "17.1", "iPhone15,2", "device-b");
    t.crash_on(0x900, "1.0", "1", "17.1", "iPhone15,2", "device-c");
    let g2 = t.crash(0xa00, "1.1", "2");
    t.crash_on(0xa00, "1.1", "2", "17.1.2", "iPad13,1", "device-b");
    let g3 = t.crash_on(0xb00, "1.1", "2", "16.4", "iPhone12,1", "device-a");

    assert_eq!(
        t.ids("?sort=count"),
        vec![g1.clone(), g2.clone(), g3.clone()]
    );
    assert_eq!(t.ids("?sort=devices")[0], g1);
    assert_eq!(t.ids("?sort=last_seen")[0], g3);
    assert_eq!(t.ids("?sort=first_seen")[0], g3);
    assert_eq!(t.ids("?sort=trend")[0], g1);
    let new_in: Vec<String> = t.ids("?new_in=1.1%20(2)&sort=count");
    assert_eq!(new_in, vec![g2.clone(), g3.clone()]);
    assert_eq!(
        t.ids(&format!("?release={APP}%201.0%20(1)")),
        vec![g1.clone()]
    );
    assert_eq!(t.ids("?os=iOS%2016").len(), 1);
    assert_eq!(
        t.ids("?os=iOS%2017.1&sort=count"),
        vec![g1.clone(), g2.clone()]
    );
    assert_eq!(t.ids("?os=iOS").len(), 3);
    assert_eq!(t.ids("?device_model=iPad13,1"), vec![g2.clone()]);
    assert_eq!(t.ids("?q=0xB00"), vec![g3.clone()]);
    assert!(t.ids("?release=9.9%20(9)").is_empty());
    // Filters choose groups; the totals stay the group's.
    let ipad = t.list("?device_model=iPad13,1");
    assert_eq!(ipad["groups"][0]["count"], 2);

    // Paging by cursor, two at a time, sees each group once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("?sort=count&limit=2&cursor={c}"),
            None => "?sort=count&limit=2".to_owned(),
        };
        let page = t.list(&q);
        for g in page["groups"].as_array().unwrap() {
            seen.push(g["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, vec![g1.clone(), g2.clone(), g3.clone()]);

    // The group page's spreads.
    let g = t.group(&g2);
    assert_eq!(g["os"].as_array().unwrap().len(), 2);
    assert_eq!(g["device_models"].as_array().unwrap().len(), 2);
    assert_eq!(g["releases"][0]["release"], format!("{APP} 1.1 (2)"));
    t.patch(&g2, json!({"status": "resolved"}));
    assert_eq!(t.ids("?status=resolved"), vec![g2.clone()]);
    assert_eq!(
        t.ids("?status=unresolved,regressed&sort=count"),
        vec![g1, g3]
    );
}

#[test]
fn releases_carry_metadata_sessions_and_their_groups() {
    let t = Triage::new();
    let upload = t.app.token(Scope::Upload);
    let g = t.crash(0xc00, "3.0", "30");
    t.crash_on(0xc00, "3.0", "30", "17.1", "iPhone15,2", "device-b");
    let name = format!("{APP} 3.0 (30)");

    let r = t.app.post(
        "/api/v1/releases",
        Some(&upload),
        json!({"release": name, "channel": "beta", "rollout": 20.0, "released_at": "2026-12-01T10:00:00Z"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["channel"], "beta");
    for bad in [
        json!({"release": name, "channel": "nightly"}),
        json!({"release": name, "rollout": 120}),
        json!({"release": "3.0 (30)"}),
    ] {
        let r = t.app.post(
            "/api/v1/releases",
            Some(&upload),
            bad.to_string().as_bytes(),
        );
        assert_eq!(r.status, 400, "{bad}: {:?}", r.body);
    }
    assert_eq!(
        t.app
            .post(
                "/api/v1/releases",
                Some(&t.read),
                json!({"release": name}).to_string().as_bytes()
            )
            .status,
        403
    );
    let r = t.app.post(
        "/api/v1/releases/3.0%20(30)/sessions",
        Some(&t.ingest),
        json!({"total": 200, "crashed": 2}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = t.app.post(
        "/api/v1/releases/3.0%20(30)/sessions",
        Some(&t.ingest),
        json!({"total": 1, "crashed": 2}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 400);

    let r = t.app.get(
        &format!("/api/v1/releases/{}", name.replace(' ', "%20")),
        Some(&t.read),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rel = &r.body;
    assert_eq!(rel["bundle_id"], APP);
    assert_eq!(rel["version"], "3.0");
    assert_eq!(rel["build"], "30");
    assert_eq!(rel["crashes"], 2);
    assert_eq!(rel["devices"], 2);
    assert_eq!(rel["rollout"], 20.0);
    assert_eq!(rel["crash_free_sessions"], 99.0);
    assert_eq!(rel["new_groups"][0]["id"], g.as_str());
    assert_eq!(rel["top_groups"][0]["id"], g.as_str());
    // Its app image has no dSYM: the release names it as missing.
    assert_eq!(
        rel["missing_debug_files"][0]["debug_id"],
        "11111111-2222-3333-4444-555555555555"
    );
    let list = t.app.get("/api/v1/releases", Some(&t.read));
    assert_eq!(list.body["releases"][0]["release"], name.as_str());
    assert_eq!(
        t.app
            .get("/api/v1/releases/9.9%20(9)", Some(&t.read))
            .status,
        404
    );
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(crate::support::BIN)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_groups_cli_lists_shows_and_changes_groups_over_http() {
    let t = Triage::new();
    let id = t.crash(0xd00, "4.0", "40");
    let other = t.crash(0xe00, "4.0", "40");
    let url = t.app.url.as_str();

    let (ok, out, err) = cli(&[
        "groups", "list", "--url", url, "--token", &t.read, "--sort", "count",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains(&id) && out.contains("unresolved"), "{out}");

    let (ok, _, err) = cli(&[
        "groups", "resolve", &id, "--in", "4.1 (41)", "--url", url, "--token", &t.read,
    ]);
    assert!(!ok, "a read token must not resolve");
    assert!(err.contains("403"), "{err}");
    let (ok, out, err) = cli(&[
        "groups", "resolve", &id, "--in", "4.1 (41)", "--url", url, "--token", &t.triage,
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("resolved in {APP} 4.1 (41)")),
        "{out}"
    );

    let (ok, _, err) = cli(&[
        "groups",
        "ignore",
        &other,
        "--until-count",
        "10",
        "--url",
        url,
        "--token",
        &t.triage,
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&[
        "groups", "merge", &id, &other, "--url", url, "--token", &t.triage,
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&[
        "groups", "show", &other, "--json", "--url", url, "--token", &t.read,
    ]);
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["count"], 2);
    assert_eq!(shown["activity"][0]["actor"], "alice");

    let (ok, out, _) = cli(&[
        "groups", "list", "--status", "ignored", "--url", url, "--token", &t.read,
    ]);
    assert!(ok);
    assert!(out.is_empty(), "the ignored group was merged away: {out}");
    let (ok, _, err) = cli(&["groups", "show", "nope", "--url", url, "--token", &t.read]);
    assert!(!ok);
    assert!(err.contains("404"), "{err}");
}

/// Polls `GET /api/v1/groups/{id}` until it answers with another group (a move made
/// by the background worker); returns that body.
fn wait_for_move(app: &TestApp, token: &str, id: &str) -> Value {
    for _ in 0..200 {
        let r = app.get(&format!("/api/v1/groups/{id}"), Some(token));
        if r.status == 200 && r.body["id"] != id {
            return r.body;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("group {id} was never moved");
}

#[test]
fn late_dsyms_and_rules_changes_move_groups_and_keep_their_state() {
    let t = Triage::new();
    let dir = crate::support::fixture("out/triage");
    let report = std::fs::read(
        dir.join("reports/objc_inconsistency/objc_inconsistency.tr_save_draft.v1.ips"),
    )
    .unwrap();
    let r = t.app.post("/api/v1/crashes", Some(&t.ingest), &report);
    assert_eq!(r.status, 201, "{:?}", r.body);
    let unsymbolicated = r.body["group_id"].as_str().unwrap().to_owned();
    let g = t.group(&unsymbolicated);
    assert!(
        g["signature"]
            .as_str()
            .unwrap()
            .contains("CrashboxTriage+0x"),
        "{g}"
    );
    let (code, _) = t.patch(
        &unsymbolicated,
        json!({"status": "resolved", "resolved_in": "next"}),
    );
    assert_eq!(code, 200);

    // The dSYM arrives: the crash is symbolicated again and moves to its real group,
    // which keeps the older group's state; the old id is an alias.
    let r = t
        .app
        .post_dsyms("", &std::fs::read(dir.join("dSYMs-v1.zip")).unwrap());
    assert_eq!(r.status, 201, "{:?}", r.body);
    let moved = wait_for_move(&t.app, &t.read, &unsymbolicated);
    assert_eq!(
        moved["signature"],
        "NSInternalInconsistencyException | tr_commit_transaction"
    );
    assert_eq!(
        moved["title"],
        "NSInternalInconsistencyException: tr_commit_transaction"
    );
    assert!(
        moved["culprit"]
            .as_str()
            .unwrap()
            .starts_with("tr_commit_transaction (/fixture-src/src/triage/triage.c:"),
        "{moved}"
    );
    assert_eq!(moved["status"], "resolved", "{moved}");
    assert_eq!(moved["count"], 1);
    assert_eq!(moved["signatures"].as_array().unwrap().len(), 2);
    assert_eq!(
        actions(&moved),
        vec![("resolve".to_owned(), "alice".to_owned())]
    );
    let symbolicated = moved["id"].as_str().unwrap().to_owned();
    assert!(!t.ids("").contains(&unsymbolicated));
    t.audit_is_clean();

    // A rules file that never counts tr_commit_transaction: after a restart every
    // stored crash is signed again, in the background, and moves to its caller.
    let Triage {
        app,
        ingest,
        read,
        triage,
    } = t;
    let root = app.stop();
    let rules = root.path().join("team.rules");
    std::fs::write(
        &rules,
        "# our commit helper is not the bug\nskip function:tr_commit_transaction\n",
    )
    .unwrap();
    let rules_path = rules.clone();
    let app = crate::support::spawn_app_in(root, move |c| c.grouping_rules = Some(rules_path));
    let t = Triage {
        app,
        ingest,
        read,
        triage,
    };
    let resigned = wait_for_move(&t.app, &t.read, &symbolicated);
    assert_eq!(
        resigned["signature"],
        "NSInternalInconsistencyException | tr_save_draft"
    );
    assert_eq!(resigned["status"], "resolved");
    // Every old id answers with the surviving group.
    assert_eq!(t.group(&unsymbolicated)["id"], resigned["id"]);
    // New crashes of that site (here the same crash as a legacy .crash) sign the new
    // way at once.
    let r = t.app.post(
        "/api/v1/crashes",
        Some(&t.ingest),
        &std::fs::read(
            dir.join("reports/objc_inconsistency/objc_inconsistency.tr_save_draft.v1.crash"),
        )
        .unwrap(),
    );
    assert_eq!(r.status, 201, "a new crash, not a retry: {:?}", r.body);
    assert_eq!(r.body["group_id"], resigned["id"]);
    t.audit_is_clean();

    // A broken rules file stops the server at start with the line that is wrong.
    let Triage { app, .. } = t;
    let root = app.stop();
    std::fs::write(&rules, "skip function:ok\nfrobnicate everything\n").unwrap();
    let config = crashbox::config::Config {
        data_dir: root.path().join("data"),
        dsyms_dir: root.path().join("dsyms"),
        grouping_rules: Some(rules.clone()),
        ..Default::default()
    };
    let err = crashbox::app::App::open(config)
        .err()
        .expect("a broken rules file is refused");
    assert!(err.to_string().contains(":2:"), "{err}");
}

#[test]
fn the_triage_corpus_groups_one_bug_per_group_over_http() {
    let t = Triage::new();
    let dir = crate::support::fixture("out/triage");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected_groups.json")).unwrap()).unwrap();
    for build in manifest["builds"].as_object().unwrap().values() {
        let zip = std::fs::read(dir.join(build["dsyms"].as_str().unwrap())).unwrap();
        let release = build["release"]
            .as_str()
            .unwrap()
            .replace(' ', "%20")
            .replace('(', "%28")
            .replace(')', "%29");
        assert_eq!(
            t.app
                .post_dsyms(&format!("?release={release}"), &zip)
                .status,
            201
        );
    }
    let mut per_bug: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    let mut count_per_group: std::collections::BTreeMap<String, u64> = Default::default();
    for (file, truth) in manifest["reports"].as_object().unwrap() {
        let r = t.app.post(
            "/api/v1/crashes",
            Some(&t.ingest),
            &std::fs::read(dir.join(file)).unwrap(),
        );
        assert_eq!(r.status, 201, "{file}: {:?}", r.body);
        for crash in r.body["crashes"].as_array().unwrap() {
            let group = crash["group_id"].as_str().unwrap().to_owned();
            per_bug
                .entry(truth["bug"].as_str().unwrap().to_owned())
                .or_default()
                .insert(group.clone());
            *count_per_group.entry(group).or_default() += 1;
        }
    }
    for (bug, groups) in &per_bug {
        assert_eq!(groups.len(), 1, "{bug} is split: {groups:?}");
    }
    let listed = t.list("?limit=500&sort=count");
    let listed = listed["groups"].as_array().unwrap();
    assert_eq!(listed.len(), manifest["bugs"].as_object().unwrap().len());
    for g in listed {
        assert_eq!(
            g["count"],
            count_per_group[g["id"].as_str().unwrap()],
            "{g}"
        );
        // Both builds, in release order.
        assert_eq!(g["first_release"], "com.crashbox.triage 1.0 (1)");
        assert_eq!(g["last_release"], "com.crashbox.triage 1.1 (2)");
    }
    // Call paths are variants inside one group.
    let null_header = per_bug["null_header"].iter().next().unwrap();
    let g = t.group(null_header);
    assert_eq!(g["variants"].as_array().unwrap().len(), 3, "{g}");
    // Releases were created by the dSYM uploads and counted by the crashes.
    let releases = t.app.get("/api/v1/releases", Some(&t.read)).body;
    assert_eq!(
        releases["releases"].as_array().unwrap().len(),
        2,
        "{releases}"
    );
    t.audit_is_clean();
}

#[test]
fn a_metrickit_crash_moves_to_its_real_group_when_its_dsym_arrives() {
    // MetricKit names no image paths, so before its dSYM the app image cannot be told
    // from a system one: it is watched, not listed as missing.
    let t = Triage::new();
    let dir = crate::support::fixture("out/triage");
    let report = std::fs::read(
        dir.join("reports/objc_inconsistency/objc_inconsistency.tr_save_draft.v1.metrickit.json"),
    )
    .unwrap();
    let r = t.app.post("/api/v1/crashes", Some(&t.ingest), &report);
    assert_eq!(r.status, 201, "{:?}", r.body);
    let before = r.body["group_id"].as_str().unwrap().to_owned();
    assert_ne!(
        t.group(&before)["signature"],
        "NSInternalInconsistencyException | tr_commit_transaction"
    );
    let missing = t.app.get("/api/v1/dsyms?missing=true", Some(&t.read)).body;
    assert!(
        !missing.to_string().contains("CoreFoundation"),
        "system images are never listed: {missing}"
    );

    assert_eq!(
        t.app
            .post_dsyms("", &std::fs::read(dir.join("dSYMs-v1.zip")).unwrap())
            .status,
        201
    );
    let moved = wait_for_move(&t.app, &t.read, &before);
    assert_eq!(
        moved["signature"],
        "NSInternalInconsistencyException | tr_commit_transaction"
    );
    t.audit_is_clean();
}

#[test]
fn groups_belong_to_one_app_and_uploads_create_releases() {
    let t = Triage::new();
    let mine = t.crash(0xf00, "1.0", "1");
    // The same crash site in another app is another group.
    let mut other: Value =
        serde_json::from_slice(&report(0xf00, "1.0", "1", "17.1", "iPhone15,2", "d")).unwrap();
    other["app"]["bundle_id"] = json!("com.example.other");
    let r = t.app.post(
        "/api/v1/crashes",
        Some(&t.ingest),
        other.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201);
    let theirs = r.body["group_id"].as_str().unwrap();
    assert_ne!(theirs, mine);
    assert_eq!(t.group(theirs)["app"], "com.example.other");
    assert_eq!(t.group(&mine)["signature"], t.group(theirs)["signature"]);

    // A release is created on first sight, an upload for it included.
    let zip = std::fs::read(crate::support::fixture("out/dSYMs.zip")).unwrap();
    assert_eq!(
        t.app
            .post_dsyms("?release=com.example.triage%202.0%20(7)", &zip)
            .status,
        201
    );
    let r = t.app.get("/api/v1/releases/2.0%20(7)", Some(&t.read));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["crashes"], 0);
    assert_eq!(r.body["bundle_id"], APP);
}

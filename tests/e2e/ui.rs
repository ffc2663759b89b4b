//! The web UI's sessions over real HTTP (the pages themselves are driven in a real
//! browser by tests/ui/test_ui.py): the one cookie and its flags, sign-out and token
//! revocation ending a session on the server, CSRF on every form, and the session's
//! secret never reaching disk.

use std::time::Duration;

use crate::support::{spawn_app, spawn_app_with, TestApp};
use crashbox::auth::{Scope, TokenStore};

/// A client that shows redirects instead of following them.
fn no_redirects() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

struct Answer {
    status: u16,
    location: String,
    set_cookie: Vec<String>,
    body: String,
}

fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Answer {
    let url = format!("{}{path}", app.url);
    let agent = no_redirects();
    let result = if method == "GET" {
        let mut req = agent.get(&url);
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        req.call()
    } else {
        let mut req = agent
            .post(&url)
            .header("Content-Type", "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        req.send(form.unwrap_or_default())
    };
    let mut response = result.expect("transport error");
    let header = |name: &str| -> Vec<String> {
        response
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    };
    let location = header("location").pop().unwrap_or_default();
    let set_cookie = header("set-cookie");
    Answer {
        status: response.status().as_u16(),
        location,
        set_cookie,
        body: response.body_mut().read_to_string().unwrap_or_default(),
    }
}

/// Signs in with `token`; returns the `Cookie` header value and the Set-Cookie line.
fn sign_in(app: &TestApp, token: &str) -> (String, String) {
    let a = send(app, "POST", "/login", None, Some(&format!("token={token}")));
    assert_eq!(a.status, 303, "sign-in answers a redirect: {}", a.body);
    assert_eq!(
        a.set_cookie.len(),
        1,
        "exactly one cookie: {:?}",
        a.set_cookie
    );
    let line = a.set_cookie[0].clone();
    let pair = line.split(';').next().unwrap().trim().to_owned();
    (pair, line)
}

/// The CSRF token a signed-in page's forms carry.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..at + 32].to_owned()
}

#[test]
fn sign_in_sets_one_strict_http_only_cookie_and_sign_out_ends_the_session() {
    let app = spawn_app();
    let anonymous = send(&app, "GET", "/", None, None);
    assert_eq!(anonymous.status, 303);
    assert!(
        anonymous.location.starts_with("/login"),
        "{}",
        anonymous.location
    );

    let token = app.token(Scope::Triage);
    let (cookie, line) = sign_in(&app, &token);
    let lower = line.to_ascii_lowercase();
    assert!(
        lower.contains("httponly") && lower.contains("samesite=strict"),
        "{line}"
    );
    assert!(
        !lower.contains("secure"),
        "not Secure over plain http: {line}"
    );
    let page = send(&app, "GET", "/", Some(&cookie), None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Sign out"));

    // Sign-out without the page's CSRF token is refused and leaves the session alone.
    let refused = send(&app, "POST", "/logout", Some(&cookie), Some("csrf=0"));
    assert_eq!(refused.status, 403);
    assert_eq!(send(&app, "GET", "/", Some(&cookie), None).status, 200);

    let csrf = csrf_of(&page.body);
    let out = send(
        &app,
        "POST",
        "/logout",
        Some(&cookie),
        Some(&format!("csrf={csrf}")),
    );
    assert_eq!(out.status, 303);
    assert!(
        out.set_cookie[0].contains("Max-Age=0"),
        "{:?}",
        out.set_cookie
    );
    // The old cookie, replayed, opens nothing: the session ended on the server.
    let replay = send(&app, "GET", "/", Some(&cookie), None);
    assert_eq!(replay.status, 303, "a signed-out session still works");
}

#[test]
fn revoking_the_token_ends_its_sessions() {
    let app = spawn_app();
    let tokens = TokenStore::open(&app.data_dir()).unwrap();
    let new = tokens.create_named(Scope::Read, Some("rita")).unwrap();
    let (cookie, _) = sign_in(&app, &new.token);
    let page = send(&app, "GET", "/releases", Some(&cookie), None);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("rita"),
        "the page names who is signed in"
    );
    tokens.revoke(&new.info.id).unwrap();
    let after = send(&app, "GET", "/releases", Some(&cookie), None);
    assert_eq!(after.status, 303, "a revoked token's session still works");
}

#[test]
fn machine_tokens_and_unknown_tokens_open_no_session() {
    let app = spawn_app();
    for token in [
        app.token(Scope::Ingest),
        app.token(Scope::Upload),
        "cbx_nope".to_owned(),
    ] {
        let a = send(
            &app,
            "POST",
            "/login",
            None,
            Some(&format!("token={token}")),
        );
        assert_eq!(a.status, 401, "{}", a.body);
        assert!(a.set_cookie.is_empty(), "no cookie for a refused sign-in");
    }
}

#[test]
fn the_cookie_is_secure_when_the_public_url_is_https() {
    let app = spawn_app_with(|c| c.public_url = Some("https://crashes.example.com".into()));
    let (_, line) = sign_in(&app, &app.token(Scope::Read));
    assert!(line.contains("; Secure"), "{line}");
}

#[test]
fn group_forms_need_the_sessions_csrf_token_and_the_triage_scope() {
    let app = spawn_app();
    let report = std::fs::read(crate::support::fixture("out/reports/fixture_v1.ips")).unwrap();
    let crash = app.post("/api/v1/crashes", Some(&app.admin_token), &report);
    let group = crash.body["group_id"].as_str().unwrap().to_owned();
    let path = format!("/groups/{group}/state");
    let status = |app: &TestApp| {
        app.get(&format!("/api/v1/groups/{group}"), Some(&app.admin_token))
            .body["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let (reader, _) = sign_in(&app, &app.token(Scope::Read));
    let page = send(
        &app,
        "GET",
        &format!("/groups/{group}"),
        Some(&reader),
        None,
    );
    assert_eq!(page.status, 200);
    let form = format!("csrf={}&status=resolved", csrf_of(&page.body));
    assert_eq!(
        send(&app, "POST", &path, Some(&reader), Some(&form)).status,
        403
    );

    let (triager, _) = sign_in(&app, &app.token(Scope::Triage));
    // Another session's CSRF token does not fit this one.
    assert_eq!(
        send(&app, "POST", &path, Some(&triager), Some(&form)).status,
        403
    );
    assert_eq!(
        status(&app),
        "unresolved",
        "a refused form changed the group"
    );
    let page = send(
        &app,
        "GET",
        &format!("/groups/{group}"),
        Some(&triager),
        None,
    );
    let form = format!("csrf={}&status=resolved", csrf_of(&page.body));
    let done = send(&app, "POST", &path, Some(&triager), Some(&form));
    assert_eq!(done.status, 303);
    assert_eq!(status(&app), "resolved");
}

#[test]
fn a_session_secret_never_reaches_disk() {
    let app = spawn_app();
    let (cookie, _) = sign_in(&app, &app.token(Scope::Triage));
    let secret = cookie.split_once('=').unwrap().1.to_owned();
    assert_eq!(secret.len(), 64);
    let root = app.stop();
    let data = root.path().join("data");
    let mut seen = 0;
    for entry in walk(&data) {
        // The store's WAL and shm files go away as the last connection closes.
        let Ok(bytes) = std::fs::read(&entry) else {
            continue;
        };
        if entry.extension().is_some_and(|e| e == "db") {
            seen += 1;
        }
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the session secret is in {}",
            entry.display()
        );
    }
    assert!(seen > 0, "the store's database was searched");
    drop(root);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_json_api_ignores_the_session_cookie() {
    let app = spawn_app();
    let (cookie, _) = sign_in(&app, &app.token(Scope::Admin));
    let reply = app.request(
        "GET",
        "/api/v1/groups",
        &[("Cookie", cookie.as_str())],
        None,
    );
    assert_eq!(
        reply.status, 401,
        "an admin session's cookie opened the API"
    );
}

#[test]
fn another_site_cannot_sign_a_browser_in_and_signing_in_again_ends_the_old_session() {
    let app = spawn_app();
    let token = app.token(Scope::Triage);
    let agent = no_redirects();
    let host = app.url.trim_start_matches("http://").to_owned();
    for (name, value) in [
        ("Origin", "https://evil.example".to_owned()),
        ("Sec-Fetch-Site", "cross-site".to_owned()),
    ] {
        let mut response = agent
            .post(&format!("{}/login", app.url))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header(name, &value)
            .send(format!("token={token}"))
            .unwrap();
        assert_eq!(response.status().as_u16(), 403, "{name}: {value}");
        assert!(response.headers().get("set-cookie").is_none());
        let _ = response.body_mut().read_to_string();
    }
    // The sign-in page itself posts same-origin.
    let response = agent
        .post(&format!("{}/login", app.url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Origin", &format!("http://{host}"))
        .send(format!("token={token}"))
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);

    let (first, _) = sign_in(&app, &token);
    let again = send(
        &app,
        "POST",
        "/login",
        Some(&first),
        Some(&format!("token={token}")),
    );
    assert_eq!(again.status, 303);
    assert_eq!(
        send(&app, "GET", "/", Some(&first), None).status,
        303,
        "the replaced session still works"
    );
}

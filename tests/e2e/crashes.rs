//! Crash intake over HTTP: every format in, de-duplication, bad input, durability
//! across `kill -9`, and late dSYMs that complete stored crashes.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    admin_token, agent, corpus, fixture, reply, serve, spawn_app, spawn_app_with, zip_dir, TestApp,
};

fn post_crash(app: &TestApp, body: &[u8]) -> crate::support::Reply {
    app.post("/api/v1/crashes", Some(&app.admin_token.clone()), body)
}

fn get_json(app: &TestApp, path: &str) -> Value {
    let reply = app.get(path, Some(&app.admin_token));
    assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
    reply.body
}

fn crashed_functions(doc: &Value) -> Vec<String> {
    let threads = doc["threads"].as_array().unwrap();
    let crashed = threads.iter().find(|t| t["crashed"] == true).unwrap();
    crashed["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Polls `check` for up to 20 s: the background worker is asynchronous.
#[track_caller]
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_format_is_stored_once_and_symbolicated() {
    let app = spawn_app();
    assert_eq!(
        app.post_dsyms("", &zip_dir(&corpus("xcode-dsyms"))).status,
        201
    );
    // (report, crashes in it, first answer). The soloquest `.crash` is Apple's text
    // rendering of the `.ips` sent before it: the same incident, so a duplicate.
    let reports = [
        ("apple-ips/soloquest_ios26.ips", 1, 201),
        ("apple-ips/slack_shareext_ios17.ips", 1, 201),
        ("apple-crash/icdab_planets.crash", 1, 201),
        ("apple-crash/soloquest_ios26_translated.crash", 1, 200),
        ("metrickit/uncaught_exception_ios14.json", 1, 201),
        ("metrickit/real_report_ios14.json", 2, 201),
        ("sentry-events/crashprobe_call_abort.json", 1, 201),
        (
            "sentry-events/crashprobe_dereference_a_null_pointer.json",
            1,
            201,
        ),
        ("sentry-events/crashprobe_swift.json", 1, 201),
    ];
    for (name, count, status) in reports {
        let body = std::fs::read(corpus(name)).unwrap();
        let first = post_crash(&app, &body);
        assert_eq!(first.status, status, "{name}: {:?}", first.body);
        for key in ["id", "group_id", "signature"] {
            assert!(first.body[key].is_string(), "{name}: {:?}", first.body);
        }
        assert_eq!(
            first.body["crashes"].as_array().unwrap().len(),
            count,
            "{name}"
        );
        // A retried upload answers 200 with the same ids and stores nothing.
        let again = post_crash(&app, &body);
        assert_eq!(again.status, 200, "{name}: {:?}", again.body);
        assert_eq!(again.body["crashes"], {
            let mut crashes = first.body["crashes"].clone();
            // (already false for a first answer that was a duplicate)
            for c in crashes.as_array_mut().unwrap() {
                c["created"] = Value::Bool(false);
            }
            crashes
        });
        let id = first.body["id"].as_str().unwrap();
        let doc = get_json(&app, &format!("/api/v1/crashes/{id}"));
        assert_eq!(doc["id"], first.body["id"]);
        assert_eq!(doc["group_id"], first.body["group_id"]);
        assert!(
            doc["threads"].as_array().is_some_and(|t| !t.is_empty()),
            "{name}"
        );
    }

    // The .ips and its .crash rendering are the same incident: counted once.
    let ips = post_crash(
        &app,
        &std::fs::read(corpus("apple-ips/soloquest_ios26.ips")).unwrap(),
    );
    let crash = post_crash(
        &app,
        &std::fs::read(corpus("apple-crash/soloquest_ios26_translated.crash")).unwrap(),
    );
    assert_eq!(ips.body["id"], crash.body["id"]);

    // Symbolicated with the uploaded dSYMs, in JSON and as Apple text.
    let abort = post_crash(
        &app,
        &std::fs::read(corpus("sentry-events/crashprobe_call_abort.json")).unwrap(),
    );
    let id = abort.body["id"].as_str().unwrap();
    let doc = get_json(&app, &format!("/api/v1/crashes/{id}"));
    assert!(
        crashed_functions(&doc).contains(&"-[CRLCrashAbort crash]".to_owned()),
        "{:?}",
        crashed_functions(&doc)
    );
    let text = app.get(
        &format!("/api/v1/crashes/{id}/apple"),
        Some(&app.admin_token),
    );
    assert_eq!(text.status, 200);
    let text = text.body.as_str().unwrap().to_owned();
    assert!(text.contains("-[CRLCrashAbort crash]"), "{text}");
    assert!(text.contains("Binary Images:"), "{text}");
    assert_eq!(
        app.get(
            "/api/v1/crashes/00000000000000000000",
            Some(&app.admin_token)
        )
        .status,
        404
    );
}

#[test]
fn bad_reports_get_clear_errors_and_store_nothing() {
    let app = spawn_app_with(|config| config.max_crash_bytes = 64 * 1024);
    let mut out_of_range =
        std::fs::read_to_string(corpus("apple-ips/soloquest_ios26.ips")).unwrap();
    out_of_range = out_of_range.replacen("\"imageIndex\":5", "\"imageIndex\":5000", 1);
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        ("empty", Vec::new(), 400, "empty_report", ""),
        (
            "garbage",
            b"hello world".to_vec(),
            400,
            "unknown_format",
            "",
        ),
        (
            "truncated ips",
            b"{\"bug_type\":\"309\"}\n{\"threads\":[{\"frames\":[".to_vec(),
            400,
            "unparseable_report",
            "Apple .ips",
        ),
        (
            "image index out of range",
            out_of_range.into_bytes(),
            422,
            "invalid_report",
            "imageIndex 5000",
        ),
        (
            "invalid utf-8",
            b"Incident Identifier: \xff\xfe\nHardware Model: x\n".to_vec(),
            400,
            "invalid_utf8",
            "Apple .crash",
        ),
        (
            "too large",
            vec![b' '; 100 * 1024],
            413,
            "body_too_large",
            "",
        ),
        (
            "no frames",
            br#"{"crashbox":1,"threads":[]}"#.to_vec(),
            422,
            "invalid_report",
            "crashbox JSON",
        ),
    ];
    for (what, body, status, code, mentions) in cases {
        let reply = post_crash(&app, &body);
        assert_eq!(reply.status, status, "{what}: {:?}", reply.body);
        assert_eq!(
            reply.body["error"]["code"], code,
            "{what}: {:?}",
            reply.body
        );
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{what}: {message}");
    }
    // Nothing was stored: no group, no crash counted.
    let metrics = app.get("/metrics", None).body;
    assert!(
        !metrics.as_str().unwrap().contains("outcome=\"stored\""),
        "{metrics}"
    );
    // An ingest token may send crashes and nothing else.
    let ingest = app.token(crashbox::auth::Scope::Ingest);
    let body = std::fs::read(fixture("out/reports/fixture_v1.ips")).unwrap();
    let reply = app.post("/api/v1/crashes", Some(&ingest), &body);
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let id = reply.body["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/api/v1/crashes/{id}"), Some(&ingest))
            .status,
        403
    );
    assert_eq!(app.post("/api/v1/crashes", None, &body).status, 401);
}

#[test]
fn a_late_dsym_completes_stored_crashes_and_leaves_the_missing_list() {
    let app = spawn_app();
    let v1 = std::fs::read(fixture("out/reports/fixture_v1.ips")).unwrap();
    let v1_crash = std::fs::read(fixture("out/reports/fixture_v1.crash")).unwrap();
    let first = post_crash(&app, &v1);
    assert_eq!(first.status, 201, "{:?}", first.body);
    let id = first.body["id"].as_str().unwrap().to_owned();
    let before_group = first.body["group_id"].clone();
    let doc = get_json(&app, &format!("/api/v1/crashes/{id}"));
    let crashed = &doc["threads"][0]["frames"][0];
    assert_eq!(crashed["status"], "missing_debug_file", "{crashed}");

    // The missing list names the app and its framework, with counts and releases;
    // system libraries are not listed.
    let missing = get_json(&app, "/api/v1/dsyms?missing=true");
    let missing = missing["missing"].as_array().unwrap().clone();
    let mut names: Vec<&str> = missing
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["CrashboxFixture", "CrashboxKit"], "{missing:?}");
    for entry in &missing {
        assert_eq!(entry["crash_count"], 1, "{entry}");
        assert_eq!(
            entry["releases"][0], "com.crashbox.fixture 1.0 (1)",
            "{entry}"
        );
        assert!(entry["last_seen"].is_string());
    }
    // The same incident as text is a duplicate, not a second crash.
    assert_eq!(post_crash(&app, &v1_crash).status, 200);

    let upload = app.post_dsyms(
        "?release=com.crashbox.fixture%201.0%20(1)",
        &std::fs::read(fixture("out/dSYMs.zip")).unwrap(),
    );
    assert_eq!(upload.status, 201, "{:?}", upload.body);
    eventually("the missing list empties", || {
        get_json(&app, "/api/v1/dsyms?missing=true")["missing"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    let doc = get_json(&app, &format!("/api/v1/crashes/{id}"));
    assert_eq!(
        &crashed_functions(&doc)[..3],
        ["cb_read_field", "cb_checksum", "cb_process_record"]
    );
    // The signature now names functions, so the crash moved to another group.
    assert_ne!(doc["group_id"], before_group);
    assert!(
        doc["signature"].as_str().unwrap().contains("cb_read_field"),
        "{}",
        doc["signature"]
    );
}

#[test]
fn deleting_a_crash_removes_it_and_its_counts() {
    let app = spawn_app();
    let body = std::fs::read(fixture("out/reports/fixture_v2.ips")).unwrap();
    let id = post_crash(&app, &body).body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = app.token(crashbox::auth::Scope::Read);
    let path = format!("/api/v1/crashes/{id}");
    let delete = |token: &str| {
        agent()
            .delete(format!("{}{path}", app.url))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(delete(&read), 403);
    assert_eq!(delete(&app.admin_token), 204);
    assert_eq!(app.get(&path, Some(&app.admin_token)).status, 404);
    assert_eq!(delete(&app.admin_token), 404);
    let missing = get_json(&app, "/api/v1/dsyms?missing=true");
    assert!(
        missing["missing"].as_array().unwrap().is_empty(),
        "{missing}"
    );
    // Sent again after deletion, it is a new crash.
    assert_eq!(post_crash(&app, &body).status, 201);
}

#[test]
fn a_2xx_crash_survives_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let mut server = serve(root.path());
    let token = admin_token(&root.path().join("data"));
    let agent = agent();
    let send = |url: &str, name: &str| {
        let body = std::fs::read(fixture(&format!("out/reports/{name}"))).unwrap();
        reply(
            agent
                .post(format!("{url}/api/v1/crashes"))
                .header("Authorization", &format!("Bearer {token}"))
                .send(&body[..]),
        )
    };
    let mut ids = Vec::new();
    for name in ["fixture_v1.ips", "fixture_v2.ips"] {
        let answer = send(&server.url, name);
        assert_eq!(answer.status, 201);
        ids.push(answer.body["id"].as_str().unwrap().to_owned());
    }
    // SIGKILL right after the answers: no shutdown flush gets to run.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let restarted = serve(root.path());
    for id in &ids {
        let status = agent
            .get(format!("{}/api/v1/crashes/{id}", restarted.url))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 200, "{id} was lost");
    }
    // The identity index had no checkpoint to lean on: a retry is still found.
    let retry = send(&restarted.url, "fixture_v1.ips");
    assert_eq!(retry.status, 200, "a retry after kill -9");
    assert_eq!(retry.body["id"], ids[0]);
}

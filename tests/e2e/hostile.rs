//! Hostile input (issue 14): each test reproduces one finding of the probe over a real
//! socket and fails without its fix. Timeouts and limits are configured small so the
//! whole module stays fast; see docs/security.md for the defaults.

use std::process::Command;

use crashbox::auth::Scope;

use crate::support::{corpus, spawn_app, BIN};

fn bearer_get(app: &crate::support::TestApp, path: &str, token: &str) -> u16 {
    app.get(path, Some(token)).status
}

#[test]
fn upload_tokens_read_the_debug_file_list_but_never_crashes() {
    let app = spawn_app();
    let stored = app.post(
        "/api/v1/crashes",
        Some(&app.admin_token.clone()),
        &std::fs::read(corpus("apple-ips/soloquest_ios26.ips")).unwrap(),
    );
    assert_eq!(stored.status, 201, "{:?}", stored.body);
    let id = stored.body["id"].as_str().unwrap().to_owned();
    let upload = app.token(Scope::Upload);
    let read = app.token(Scope::Read);
    for path in [
        format!("/api/v1/crashes/{id}"),
        format!("/api/v1/crashes/{id}/apple"),
    ] {
        let reply = app.get(&path, Some(&upload));
        assert_eq!(reply.status, 403, "{path}: {:?}", reply.body);
        assert_eq!(reply.body["error"]["code"], "insufficient_scope");
        assert_eq!(bearer_get(&app, &path, &read), 200, "{path}");
    }
    // CI may still check what it uploaded.
    assert_eq!(bearer_get(&app, "/api/v1/dsyms", &upload), 200);
    assert_eq!(bearer_get(&app, "/api/v1/dsyms?missing=true", &upload), 200);
    assert_eq!(
        bearer_get(
            &app,
            "/api/v1/dsyms/54039061-a983-3323-a49d-837a894d667f",
            &upload
        ),
        404
    );
    assert_eq!(bearer_get(&app, "/api/v1/dsyms", &read), 200);
    // An ingest token reads nothing.
    let ingest = app.token(Scope::Ingest);
    assert_eq!(bearer_get(&app, "/api/v1/dsyms", &ingest), 403);
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_token_revoked_by_the_cli_answers_401_on_the_very_next_request() {
    let app = spawn_app();
    let data_dir = app.data_dir();
    let data_dir = data_dir.to_str().unwrap();
    let (ok, stdout, stderr) = cli(&[
        "token",
        "create",
        "--data-dir",
        data_dir,
        "--scope",
        "read",
        "--name",
        "grafana board",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let token = stdout.split_whitespace().last().unwrap().to_owned();

    let (ok, listing, stderr) = cli(&["token", "list", "--data-dir", data_dir]);
    assert!(ok, "{stderr}");
    let line = listing
        .lines()
        .find(|l| l.ends_with("grafana board"))
        .unwrap_or_else(|| panic!("named token not listed:\n{listing}"));
    assert!(line.contains("read"), "{line}");
    assert!(!listing.contains(&token), "list shows a secret:\n{listing}");
    let short_id = line.split_whitespace().next().unwrap().to_owned();
    assert_eq!(short_id.len(), 8, "{line}");

    // Warm the server's token cache, then revoke from another process.
    for _ in 0..3 {
        assert_eq!(bearer_get(&app, "/api/v1/dsyms", &token), 200);
    }
    let (ok, _, stderr) = cli(&["token", "revoke", "--data-dir", data_dir, &short_id]);
    assert!(ok, "{stderr}");
    let reply = app.get("/api/v1/dsyms", Some(&token));
    assert_eq!(reply.status, 401, "{:?}", reply.body);
    assert_eq!(reply.body["error"]["code"], "invalid_token");
    let (_, listing, _) = cli(&["token", "list", "--data-dir", data_dir]);
    assert!(!listing.contains("grafana board"), "{listing}");
    // Revoking it again names nothing and fails.
    let (ok, _, stderr) = cli(&["token", "revoke", "--data-dir", data_dir, "grafana board"]);
    assert!(!ok);
    assert!(stderr.contains("no token"), "{stderr}");
}

fn crashprobe_dwarf() -> Vec<u8> {
    std::fs::read(corpus(
        "xcode-dsyms/54039061-A983-3323-A49D-837A894D667F.dSYM/Contents/Resources/DWARF/CrashProbeiOS",
    ))
    .unwrap()
}

/// `POST /api/v1/dsyms` as multipart with `(name, file name, bytes)` fields.
fn post_multipart(
    app: &crate::support::TestApp,
    fields: &[(&str, Option<&str>, &[u8])],
) -> crate::support::Reply {
    let boundary = "crashboxboundary";
    let mut body = Vec::new();
    for (name, file_name, bytes) in fields {
        let file_name = file_name
            .map(|f| format!("; filename=\"{f}\""))
            .unwrap_or_default();
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{file_name}\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    crate::support::reply(
        crate::support::agent()
            .post(format!("{}/api/v1/dsyms", app.url))
            .header("Authorization", &format!("Bearer {}", app.admin_token))
            .header(
                "Content-Type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .send(&body[..]),
    )
}

/// Files left under the dsyms dir's `tmp/` (uploads in flight).
fn staged_files(app: &crate::support::TestApp) -> usize {
    walk_count(&app.dsyms_dir().join("tmp"))
}

fn walk_count(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            n += walk_count(&entry.path());
        } else {
            n += 1;
        }
    }
    n
}

#[test]
fn an_oversized_or_malformed_release_field_is_refused_and_stores_nothing() {
    let app = spawn_app();
    let dwarf = crashprobe_dwarf();
    // Over both caps, yet small enough that the client finishes sending before the
    // server answers early and closes.
    let huge = vec![b'a'; 100 << 10];
    // Before or after the file: the spooled file must go too.
    for fields in [
        vec![
            ("release", None, &huge[..]),
            ("file", Some("CrashProbeiOS"), &dwarf[..]),
        ],
        vec![
            ("file", Some("CrashProbeiOS"), &dwarf[..]),
            ("release", None, &huge[..]),
        ],
    ] {
        let reply = post_multipart(&app, &fields);
        assert_eq!(reply.status, 413, "{:?}", reply.body);
        assert_eq!(reply.body["error"]["code"], "field_too_large");
    }
    // Unknown fields cannot stream without bound either.
    let reply = post_multipart(
        &app,
        &[
            ("file", Some("CrashProbeiOS"), &dwarf[..]),
            ("junk", None, &huge[..]),
        ],
    );
    assert_eq!(reply.status, 413, "{:?}", reply.body);
    for bad in [
        &b"r2"[..],
        b"app 1.0 (1)\x00",
        b"app 1.0 (1)\nThread 0 Crashed:",
        b"a b c d (1)",
    ] {
        let reply = post_multipart(
            &app,
            &[
                ("release", None, bad),
                ("file", Some("CrashProbeiOS"), &dwarf[..]),
            ],
        );
        assert_eq!(reply.status, 400, "{bad:?}: {:?}", reply.body);
        assert_eq!(reply.body["error"]["code"], "invalid_release");
    }
    let reply = app.post_dsyms(&format!("?release={}%20(1)", "x".repeat(300)), &dwarf);
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert!(app.listed().is_empty());
    assert_eq!(staged_files(&app), 0);
    // A good release still works.
    let reply = post_multipart(
        &app,
        &[
            ("release", None, b"app 2.0 (7)"),
            ("file", Some("CrashProbeiOS"), &dwarf[..]),
        ],
    );
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(reply.body["debug_files"][0]["releases"][0], "app 2.0 (7)");
}

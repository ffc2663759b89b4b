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
    // Just over the caps, and last in the body (or before a tiny file), so that the
    // client has sent everything when the server answers early and closes.
    let long_release = vec![b'a'; 2 << 10];
    let junk = vec![b'a'; 70 << 10];
    for fields in [
        vec![
            ("release", None, &long_release[..]),
            ("file", Some("x"), &b"x"[..]),
        ],
        vec![
            ("file", Some("CrashProbeiOS"), &dwarf[..]),
            ("release", None, &long_release[..]),
        ],
        // Unknown fields cannot stream without bound either.
        vec![
            ("file", Some("CrashProbeiOS"), &dwarf[..]),
            ("junk", None, &junk[..]),
        ],
    ] {
        let reply = post_multipart(&app, &fields);
        assert_eq!(reply.status, 413, "{:?}", reply.body);
        assert_eq!(reply.body["error"]["code"], "field_too_large");
    }
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

fn post_crash(app: &crate::support::TestApp, body: &[u8]) -> crate::support::Reply {
    app.post("/api/v1/crashes", Some(&app.admin_token.clone()), body)
}

/// A MetricKit payload of `n` minimal crash diagnostics, each at its own address.
fn metrickit_payload(n: usize) -> String {
    let diagnostics: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"diagnosticMetaData":{{"osVersion":"iPhone OS 17.1 (21B74)","signal":11,"exceptionType":1}},"callStackTree":{{"callStackPerThread":true,"callStacks":[{{"threadAttributed":true,"callStackRootFrames":[{{"binaryUUID":"7C9A24C6-CB84-3053-8481-DA167DA8FB9C","binaryName":"App","address":{},"offsetIntoBinaryTextSegment":{},"subFrames":[]}}]}}]}}}}"#,
                0x1_0000_0000u64 + 16 * i as u64,
                16 * i
            )
        })
        .collect();
    format!(r#"{{"crashDiagnostics":[{}]}}"#, diagnostics.join(","))
}

#[test]
fn a_metrickit_payload_holds_at_most_64_crashes() {
    let app = spawn_app();
    // 65 diagnostics: refused whole, before any is parsed or stored.
    let reply = post_crash(&app, metrickit_payload(65).as_bytes());
    assert_eq!(reply.status, 413, "{:?}", reply.body);
    assert_eq!(reply.body["error"]["format"], "MetricKit");
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65 crash diagnostics"),
        "{:?}",
        reply.body
    );
    // The probe's payload: 10 MiB of minimal diagnostics.
    let mut big = metrickit_payload(60_000);
    big.truncate(10_000_000);
    let cut = big.rfind("},{").unwrap();
    big.truncate(cut + 1);
    big.push_str("]}");
    let started = std::time::Instant::now();
    let reply = post_crash(&app, big.as_bytes());
    assert_eq!(reply.status, 413, "{:?}", reply.body);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // 64 is fine, and the answer lists each.
    let reply = post_crash(&app, metrickit_payload(64).as_bytes());
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(reply.body["crashes"].as_array().unwrap().len(), 64);
}

/// An `.ips` whose body has the given threads and used images.
fn ips(body: &str) -> String {
    format!("{{\"bug_type\":\"309\"}}\n{body}")
}

#[test]
fn reports_with_no_frames_are_refused_with_422_in_every_format() {
    let app = spawn_app();
    let frameless: [(&str, String); 5] = [
        ("Apple .ips", ips(r#"{"a":1}"#)),
        (
            "Apple .ips",
            ips(r#"{"usedImages":[],"faultingThread":0,"threads":[{"frames":[]}]}"#),
        ),
        (
            "Apple .crash",
            "Incident Identifier: X\nHardware Model: iPhone14,2\nException Type: EXC_CRASH (SIGABRT)\n".to_owned(),
        ),
        (
            "MetricKit",
            r#"{"crashDiagnostics":[{"diagnosticMetaData":{"signal":11},"callStackTree":{"callStacks":[]}}]}"#.to_owned(),
        ),
        (
            "Sentry event",
            r#"{"event_id":"x","level":"fatal","exception":{"values":[{"type":"E"}]}}"#.to_owned(),
        ),
    ];
    for (format, body) in &frameless {
        let reply = post_crash(&app, body.as_bytes());
        assert_eq!(reply.status, 422, "{format}: {body}: {:?}", reply.body);
        assert_eq!(reply.body["error"]["format"], *format, "{:?}", reply.body);
    }
    // One frame is enough.
    let reply = post_crash(
        &app,
        ips(r#"{"usedImages":[{"base":4096,"name":"App"}],"faultingThread":0,"threads":[{"frames":[{"imageIndex":0,"imageOffset":16}]}]}"#).as_bytes(),
    );
    assert_eq!(reply.status, 201, "{:?}", reply.body);
}

#[test]
fn control_characters_never_reach_the_rendered_text_or_the_signature() {
    let app = spawn_app();
    let body = ips(
        r#"{"procName":"App\u0000\u001b[31m","modelCode":"iPhone\u0000","exception":{"type":"EXC_CRASH\u0000","signal":"SIGABRT"},"asi":{"libsystem_c.dylib":["abort() called\u0000\nThread 9 Crashed:"]},"usedImages":[{"base":4096,"size":4096,"name":"App\u0000x","uuid":"7c9a24c6-cb84-3053-8481-da167da8fb9c"}],"faultingThread":0,"threads":[{"name":"main\u0007","triggered":true,"frames":[{"imageIndex":0,"imageOffset":16,"symbol":"evil\u0000name\u0008"}]}]}"#,
    );
    let reply = post_crash(&app, body.as_bytes());
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let signature = reply.body["signature"].as_str().unwrap().to_owned();
    assert!(!signature.chars().any(char::is_control), "{signature:?}");
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let json = app.get(&format!("/api/v1/crashes/{id}"), Some(&app.admin_token));
    assert_eq!(json.status, 200);
    let text = json.body.to_string();
    assert!(
        !text.contains("\\u0000") && !text.contains("\\u001b"),
        "{text}"
    );
    assert!(
        !json.body["signature"]
            .as_str()
            .unwrap()
            .chars()
            .any(char::is_control),
        "{:?}",
        json.body["signature"]
    );
    let apple = app.get(
        &format!("/api/v1/crashes/{id}/apple"),
        Some(&app.admin_token),
    );
    assert_eq!(apple.status, 200);
    let apple = apple.body.as_str().unwrap();
    assert!(
        !apple
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "{apple:?}"
    );
    // A newline inside a field cannot forge a line of the report.
    assert!(!apple.lines().any(|l| l.starts_with("Thread 9")), "{apple}");
}

#[test]
fn images_and_frames_are_bounded_per_report() {
    let app = spawn_app();
    // 5000 used images: kept to 2048, and the frame's own image among them.
    let used_images = |n: u64| {
        let images: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"base":{},"size":4096,"name":"L{i}"}}"#,
                    0x1000 * (i + 1)
                )
            })
            .collect();
        ips(&format!(
            r#"{{"usedImages":[{}],"faultingThread":0,"threads":[{{"frames":[{{"imageIndex":{},"imageOffset":16}}]}}]}}"#,
            images.join(","),
            n - 1
        ))
    };
    let reply = post_crash(&app, used_images(5000).as_bytes());
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let doc = app.get(&format!("/api/v1/crashes/{id}"), Some(&app.admin_token));
    assert_eq!(doc.status, 200);
    let images = doc.body["images"].as_array().unwrap();
    assert_eq!(images.len(), 2048);
    assert!(
        images.iter().any(|i| i["name"] == "L4999"),
        "frame's image dropped"
    );
    assert_eq!(doc.body["threads"][0]["frames"][0]["image"], "L4999");
    // The probe's 100k: over the JSON value budget, refused before it is all held.
    let reply = post_crash(&app, used_images(100_000).as_bytes());
    assert_eq!(reply.status, 413, "{:?}", reply.body);

    // 600 threads of 100 frames (2 MB): the rendered answers stay small.
    let frames = vec![r#"{"imageIndex":0,"imageOffset":16}"#; 100].join(",");
    let thread = format!(r#"{{"frames":[{frames}]}}"#);
    let threads = vec![thread.as_str(); 600].join(",");
    let body = ips(&format!(
        r#"{{"usedImages":[{{"base":4096,"name":"App"}}],"faultingThread":550,"threads":[{threads}]}}"#
    ));
    let reply = post_crash(&app, body.as_bytes());
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let doc = app.get(&format!("/api/v1/crashes/{id}"), Some(&app.admin_token));
    let json_len = doc.body.to_string().len();
    let frames: usize = doc.body["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["frames"].as_array().unwrap().len())
        .sum();
    assert!(frames <= 16_384, "{frames} frames");
    assert!(json_len < 3 << 20, "JSON answer is {json_len} bytes");
    // The crashed thread keeps its frames.
    let crashed = doc.body["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["crashed"] == true)
        .unwrap();
    assert_eq!(crashed["frames"].as_array().unwrap().len(), 100);
    let apple = app.get(
        &format!("/api/v1/crashes/{id}/apple"),
        Some(&app.admin_token),
    );
    let apple_len = apple.body.as_str().unwrap().len();
    assert!(apple_len < 2 << 20, "Apple text is {apple_len} bytes");
}

#[test]
fn many_small_entries_cannot_add_up_to_a_zip_bomb() {
    let app = spawn_app();
    // The probe's archive, scaled down: Mach-O-looking 1 MiB entries of zeros, each
    // under the per-entry ratio check's size. 100 MiB from a ~100 KB upload.
    let mut entry = vec![0u8; 1 << 20];
    entry[..4].copy_from_slice(&[0xcf, 0xfa, 0xed, 0xfe]);
    let names: Vec<String> = (0..100)
        .map(|i| format!("x{i}.dSYM/Contents/Resources/DWARF/x"))
        .collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &entry[..])).collect();
    let zip = crate::support::zip_of(&entries);
    assert!(zip.len() < 200_000, "{}", zip.len());
    let started = std::time::Instant::now();
    let reply = app.post_dsyms("", &zip);
    assert_eq!(reply.status, 413, "{:?}", reply.body);
    assert_eq!(reply.body["error"]["code"], "zip_too_large");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(staged_files(&app), 0);
    assert!(app.listed().is_empty());
}

/// Peak resident memory of a process, from /proc (Linux).
#[cfg(target_os = "linux")]
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

#[cfg(target_os = "linux")]
#[test]
fn one_large_report_peaks_at_a_small_multiple_of_its_size() {
    // The real binary, alone in its process, so its peak RSS is this request's.
    let root = tempfile::tempdir().unwrap();
    let server = crate::support::serve(root.path());
    let token = crate::support::admin_token(&root.path().join("data"));
    // 300 threads of 1000 frames: 10.2 MB, as the probe's 317k-frame report.
    let frames = vec![r#"{"imageIndex":0,"imageOffset":16}"#; 1000].join(",");
    let thread = format!(r#"{{"frames":[{frames}]}}"#);
    let threads = vec![thread.as_str(); 300].join(",");
    let body = ips(&format!(
        r#"{{"usedImages":[{{"base":4096,"name":"App"}}],"faultingThread":0,"threads":[{threads}]}}"#
    ));
    let client = crate::support::agent();
    let healthz = crate::support::reply(client.get(format!("{}/healthz", server.url)).call());
    assert_eq!(healthz.status, 200);
    let before = peak_rss_bytes(server.child.id());
    let reply = crate::support::reply(
        client
            .post(format!("{}/api/v1/crashes", server.url))
            .header("Authorization", &format!("Bearer {token}"))
            .send(body.as_bytes()),
    );
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let grew = peak_rss_bytes(server.child.id()).saturating_sub(before);
    eprintln!(
        "a {} byte .ips raised peak RSS by {} bytes ({:.1}x)",
        body.len(),
        grew,
        grew as f64 / body.len() as f64
    );
    // Was 24x (243 MB) with every frame a serde_json::Value map.
    assert!(
        grew < 12 * body.len() as u64,
        "peak RSS grew {grew} bytes for a {} byte report",
        body.len()
    );

    // A Sentry event of 330 threads x 1000 minimal frames (9.9 MB) is parsed as a
    // Value: refused once it passes the value budget, before it is all held.
    let frames = vec![r#"{"instruction_addr":"0x1000"}"#; 1000].join(",");
    let threads: Vec<String> = (0..330)
        .map(|i| {
            format!(
                r#"{{"id":{i},"crashed":{},"stacktrace":{{"frames":[{frames}]}}}}"#,
                i == 0
            )
        })
        .collect();
    let event = format!(
        r#"{{"event_id":"x","level":"fatal","exception":{{"values":[{{"type":"E"}}]}},"threads":{{"values":[{}]}}}}"#,
        threads.join(",")
    );
    let before = peak_rss_bytes(server.child.id());
    let reply = crate::support::reply(
        client
            .post(format!("{}/api/v1/crashes", server.url))
            .header("Authorization", &format!("Bearer {token}"))
            .send(event.as_bytes()),
    );
    assert_eq!(reply.status, 413, "{:?}", reply.body);
    assert_eq!(reply.body["error"]["format"], "Sentry event");
    let grew = peak_rss_bytes(server.child.id()).saturating_sub(before);
    eprintln!(
        "a {} byte Sentry event raised peak RSS by {} bytes more",
        event.len(),
        grew
    );
    // Was 266 MB; the budget bounds the Values at about 250k x 400 bytes.
    assert!(grew < 12 * event.len() as u64, "peak RSS grew {grew} bytes");
}

#[test]
fn overlong_report_texts_are_cut_before_they_become_release_names() {
    let app = spawn_app();
    let long = "9".repeat(1 << 20);
    let body = ips(&format!(
        r#"{{"bundleInfo":{{"CFBundleIdentifier":"com.example.app","CFBundleShortVersionString":"1.0","CFBundleVersion":"{long}"}},"exception":{{"type":"EXC_CRASH","message":"{long}"}},"usedImages":[{{"base":4096,"name":"App"}}],"faultingThread":0,"threads":[{{"frames":[{{"imageIndex":0,"imageOffset":16}}]}}]}}"#
    ));
    let reply = post_crash(&app, body.as_bytes());
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let doc = app.get(&format!("/api/v1/crashes/{id}"), Some(&app.admin_token));
    assert_eq!(doc.status, 200);
    let release = doc.body["release"].as_str().unwrap_or_default();
    assert!(release.len() < 2048, "release of {} bytes", release.len());
    assert!(
        release.starts_with("com.example.app 1.0 (999"),
        "{release:.80}"
    );
    let whole = doc.body.to_string();
    assert!(
        whole.len() < 64 << 10,
        "crash JSON of {} bytes",
        whole.len()
    );
}

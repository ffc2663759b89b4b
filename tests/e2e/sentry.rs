//! Sentry compatibility, proven with the real clients: `sentry-cli` 3.8.2 and 2.58.6
//! (`debug-files upload`, chunked and legacy) and the Python `sentry-sdk` (envelopes),
//! all installed by `scripts/sentry-clients.sh` (which `scripts/test.sh` runs). The
//! protocol's edge cases are driven directly over HTTP.
//!
//! Missing clients fail the tests under CI (`CI=true`); locally the tests say how to
//! install them and pass without running.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crashbox::auth::Scope;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use crate::support::{
    corpus, dwarfdump_uuids, fixture, spawn_app, spawn_app_in, spawn_app_with, TestApp,
};

/// A real client's path: the env var `scripts/test.sh` sets, else where
/// `scripts/sentry-clients.sh` installs it.
fn client(env: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(default));
    if path.exists() {
        return Some(path);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{env}: {} is missing; `bash scripts/sentry-clients.sh` installs the real Sentry clients",
        path.display()
    );
    eprintln!(
        "SKIPPED: {} is missing; run `bash scripts/sentry-clients.sh` to install the real Sentry clients",
        path.display()
    );
    None
}

fn sentry_cli_3() -> Option<PathBuf> {
    client("CRASHBOX_SENTRY_CLI", "target/sentry-venv/bin/sentry-cli")
}

fn sentry_cli_2() -> Option<PathBuf> {
    client(
        "CRASHBOX_SENTRY_CLI_2",
        "target/sentry-cli-2/bin/sentry-cli",
    )
}

fn sentry_python() -> Option<PathBuf> {
    client("CRASHBOX_SENTRY_PYTHON", "target/sentry-venv/bin/python")
}

fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// `mib` MiB of zeros as concatenated gzip members of 1 MiB each (gunzip reads every
/// member): a bomb of about 1 KB per MiB, built in a moment.
fn gzip_zeros(mib: usize) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&vec![0u8; 1 << 20]).unwrap();
    enc.finish().unwrap().repeat(mib)
}

/// A small chunk size, so the corpus's 1.6 MB dSYM takes the multi-chunk path.
const CHUNK: u64 = 64 << 10;

/// Runs `sentry-cli debug-files upload --wait` against `app`; returns (success, output).
fn upload_with(cli: &Path, app: &TestApp, token: &str, paths: &[PathBuf]) -> (bool, String) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(cli)
        .args(["--url", &app.url, "--auth-token", token])
        .args([
            "debug-files",
            "upload",
            "--org",
            "o",
            "--project",
            "p",
            "--wait",
        ])
        .args(paths)
        .env("SENTRY_DISABLE_UPDATE_CHECK", "1")
        .env("HOME", home.path())
        .env_remove("SENTRY_AUTH_TOKEN")
        .env_remove("SENTRY_URL")
        .env_remove("SENTRY_ORG")
        .env_remove("SENTRY_PROJECT")
        .output()
        .expect("sentry-cli runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What the uploads below hold: the fixture app (binaries and dSYMs), the fat tool, and
/// the Xcode-built corpus dSYMs.
fn upload_paths() -> Vec<PathBuf> {
    vec![fixture("out/v1"), fixture("out/fat"), corpus("xcode-dsyms")]
}

/// The dSYM bundles alone: sentry-cli 2.x's legacy upload zips every file under its
/// object name, and refuses (client-side, "Duplicate filename") a binary beside its
/// dSYM or the two slices of a fat file.
fn legacy_upload_paths() -> Vec<PathBuf> {
    vec![
        fixture("out/v1/CrashboxFixture.app.dSYM"),
        fixture("out/v1/CrashboxKit.framework.dSYM"),
        corpus("xcode-dsyms"),
    ]
}

/// Every (debug id, arch) the upload paths hold, as llvm-dwarfdump reads them.
fn expected_pairs(with_fat: bool) -> Vec<(String, String)> {
    let mut files = vec![
        fixture("out/v1/CrashboxFixture.app.dSYM/Contents/Resources/DWARF/CrashboxFixture"),
        fixture("out/v1/CrashboxKit.framework.dSYM/Contents/Resources/DWARF/CrashboxKit"),
        corpus("xcode-dsyms/3CD3E3CC-281E-3AF3-84EB-CDE6D56F0559.dSYM/Contents/Resources/DWARF/CrashLibiOS"),
        corpus("xcode-dsyms/54039061-A983-3323-A49D-837A894D667F.dSYM/Contents/Resources/DWARF/CrashProbeiOS"),
    ];
    if with_fat {
        files.push(fixture("out/fat/crashbox-tool"));
    }
    let mut pairs: Vec<_> = files.iter().flat_map(|f| dwarfdump_uuids(f)).collect();
    pairs.sort();
    pairs
}

/// The crashed thread's function names of a stored crash.
fn crashed_functions(app: &TestApp, id: &str) -> Vec<String> {
    let doc = app
        .get(&format!("/api/v1/crashes/{id}"), Some(&app.admin_token))
        .body;
    let threads = doc["threads"].as_array().cloned().unwrap_or_default();
    let crashed = threads
        .iter()
        .find(|t| t["crashed"] == json!(true))
        .cloned()
        .unwrap_or(Value::Null);
    crashed["frames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["function"].as_str().map(str::to_owned))
        .collect()
}

/// After an upload: every debug id listed, crashes using them symbolicated, and a
/// second upload has nothing to do.
fn check_uploaded(app: &TestApp, cli: &Path, token: &str, paths: &[PathBuf], with_fat: bool) {
    let listed = app.listed();
    for pair in expected_pairs(with_fat) {
        assert!(listed.contains(&pair), "{pair:?} not listed in {listed:?}");
    }
    let reply = app.post(
        "/api/v1/crashes",
        Some(&app.admin_token),
        &std::fs::read(fixture("out/reports/fixture_v1.ips")).unwrap(),
    );
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let functions = crashed_functions(app, reply.body["id"].as_str().unwrap());
    assert_eq!(
        &functions[..3],
        ["cb_read_field", "cb_checksum", "cb_process_record"]
    );
    let reply = app.post(
        "/api/v1/crashes",
        Some(&app.admin_token),
        &std::fs::read(corpus(
            "sentry-events/crashprobe_dereference_a_null_pointer.json",
        ))
        .unwrap(),
    );
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let functions = crashed_functions(app, reply.body["id"].as_str().unwrap());
    assert!(
        functions
            .iter()
            .take(3)
            .any(|f| f == "-[CRLCrashNULL crash]"),
        "{functions:?}"
    );
    let (ok, output) = upload_with(cli, app, token, paths);
    assert!(ok, "{output}");
    assert!(output.contains("Nothing to upload"), "{output}");
}

fn chunked_upload(cli: &Path) {
    let app = spawn_app_with(|c| c.sentry.chunk_size = CHUNK);
    let token = app.token(Scope::Upload);
    let largest = corpus(
        "xcode-dsyms/3CD3E3CC-281E-3AF3-84EB-CDE6D56F0559.dSYM/Contents/Resources/DWARF/CrashLibiOS",
    );
    assert!(std::fs::metadata(&largest).unwrap().len() > 20 * CHUNK);
    let (ok, output) = upload_with(cli, &app, &token, &upload_paths());
    assert!(ok, "{output}");
    // The CLI prints one OK line per file, with the debug id the server answered.
    assert!(
        output.contains("OK 3cd3e3cc-281e-3af3-84eb-cde6d56f0559"),
        "{output}"
    );
    // The 1.6 MB dSYM alone is 26 chunks of 64 KiB.
    let chunks = app.metric(r#"crashbox_sentry_chunks_total{outcome="stored"}"#);
    assert!(chunks >= 26.0, "{chunks} chunks\n{output}");
    assert!(app.metric(r#"crashbox_sentry_assemblies_total{outcome="ok"}"#) >= 5.0);
    check_uploaded(&app, cli, &token, &upload_paths(), true);
}

#[test]
fn sentry_cli_3_uploads_in_chunks_and_assembles() {
    let Some(cli) = sentry_cli_3() else { return };
    chunked_upload(&cli);
}

#[test]
fn sentry_cli_2_uploads_in_chunks_and_assembles() {
    let Some(cli) = sentry_cli_2() else { return };
    chunked_upload(&cli);
}

#[test]
fn sentry_cli_2_takes_the_legacy_zip_upload_when_debug_files_are_not_accepted() {
    let Some(cli) = sentry_cli_2() else { return };
    let app = spawn_app_with(|c| c.sentry.accept_debug_files = false);
    let token = app.token(Scope::Upload);
    let (ok, output) = upload_with(&cli, &app, &token, &legacy_upload_paths());
    assert!(ok, "{output}");
    assert!(
        output.contains("Falling back to deprecated upload"),
        "{output}"
    );
    assert_eq!(
        app.metric(r#"crashbox_sentry_chunks_total{outcome="stored"}"#),
        0.0,
        "no chunk on the legacy path\n{output}"
    );
    check_uploaded(&app, &cli, &token, &legacy_upload_paths(), false);
}

/// A chunk-upload request: one multipart part per `(field, file name, bytes)`.
fn post_chunks(
    app: &TestApp,
    token: &str,
    parts: &[(&str, &str, Vec<u8>)],
) -> crate::support::Reply {
    let boundary = "crashbox-test-boundary";
    let mut body = Vec::new();
    for (field, name, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let auth = format!("Bearer {token}");
    let ctype = format!("multipart/form-data; boundary={boundary}");
    app.request(
        "POST",
        "/api/0/organizations/o/chunk-upload/",
        &[("Authorization", &auth), ("Content-Type", &ctype)],
        Some(body.as_slice()),
    )
}

fn assemble(app: &TestApp, token: &str, request: &Value) -> crate::support::Reply {
    let auth = format!("Bearer {token}");
    app.request(
        "POST",
        "/api/0/projects/o/p/files/difs/assemble/",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(request.to_string().as_bytes()),
    )
}

/// Splits `bytes` into chunks and uploads them gzipped; returns the assemble request.
fn upload_file(app: &TestApp, token: &str, name: &str, bytes: &[u8]) -> (String, Value) {
    let checksum = sha1_hex(bytes);
    let mut chunks = Vec::new();
    let mut parts = Vec::new();
    for chunk in bytes.chunks(CHUNK as usize) {
        let sha1 = sha1_hex(chunk);
        parts.push(("file_gzip", sha1.clone(), gzip(chunk)));
        chunks.push(sha1);
    }
    let parts: Vec<(&str, &str, Vec<u8>)> = parts
        .iter()
        .map(|(f, n, b)| (*f, n.as_str(), b.clone()))
        .collect();
    let reply = post_chunks(app, token, &parts);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let request = json!({ &checksum: {"name": name, "chunks": chunks} });
    (checksum, request)
}

/// Polls an assemble until `checksum` leaves `assembling`; returns its last answer.
fn poll(app: &TestApp, token: &str, request: &Value, checksum: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = assemble(app, token, request);
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let entry = reply.body[checksum].clone();
        assert!(entry["missingChunks"].is_array(), "{entry}");
        if entry["state"] != "assembling" || Instant::now() > deadline {
            return entry;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn corpus_dsym() -> Vec<u8> {
    std::fs::read(corpus(
        "xcode-dsyms/54039061-A983-3323-A49D-837A894D667F.dSYM/Contents/Resources/DWARF/CrashProbeiOS",
    ))
    .unwrap()
}

#[test]
fn bad_chunks_and_assembles_get_clear_answers() {
    let app = spawn_app_with(|c| {
        c.sentry.chunk_size = CHUNK;
        // The corpus dSYM (74,734 bytes) fits; two of its size do not.
        c.max_dsym_upload_bytes = 100_000;
    });
    let token = app.token(Scope::Upload);

    // The options: exactly application/json, chunk size a power of two.
    let auth = format!("Bearer {token}");
    let (reply, headers) = app.request_full(
        "GET",
        "/api/0/organizations/o/chunk-upload/",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(reply.status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(reply.body["chunkSize"], json!(CHUNK));
    assert_eq!(reply.body["hashAlgorithm"], "sha1");
    assert_eq!(reply.body["compression"], json!(["gzip"]));
    assert_eq!(reply.body["accept"], json!(["debug_files"]));
    // Ingest tokens (shipped in apps) may not upload debug files.
    let ingest = app.token(Scope::Ingest);
    let reply = post_chunks(
        &app,
        &ingest,
        &[("file", sha1_hex(b"x").as_str(), b"x".to_vec())],
    );
    assert_eq!(reply.status, 403);

    // A chunk whose SHA-1 is not its name.
    let reply = post_chunks(
        &app,
        &token,
        &[("file", sha1_hex(b"right").as_str(), b"wrong".to_vec())],
    );
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["error"]["code"], "chunk_checksum_mismatch");
    let reply = post_chunks(&app, &token, &[("file", "../../secret", b"x".to_vec())]);
    assert_eq!(reply.body["error"]["code"], "invalid_chunk_name");

    // A gzip bomb: 32 MiB of zeros in 32 KB of gzip; refused at one chunk's size.
    let bomb = gzip_zeros(32);
    assert!(bomb.len() < CHUNK as usize);
    let started = Instant::now();
    let reply = post_chunks(
        &app,
        &token,
        &[("file_gzip", sha1_hex(b"bomb").as_str(), bomb)],
    );
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    assert_eq!(reply.body["error"]["code"], "chunk_too_large");
    assert!(started.elapsed() < Duration::from_secs(5));

    // An assemble naming chunks never uploaded: not_found, listing them.
    let never = [sha1_hex(b"never 1"), sha1_hex(b"never 2")];
    let checksum = sha1_hex(b"never");
    let reply = assemble(
        &app,
        &token,
        &json!({ &checksum: {"name": "App", "chunks": never} }),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body[&checksum]["state"], "not_found");
    assert_eq!(reply.body[&checksum]["missingChunks"], json!(never));
    // Malformed requests are 400s.
    let reply = assemble(
        &app,
        &token,
        &json!({"not-a-sha1": {"name": "App", "chunks": []}}),
    );
    assert_eq!(reply.status, 400);
    let reply = assemble(
        &app,
        &token,
        &json!({ &checksum: {"name": "A\u{7}pp", "chunks": never} }),
    );
    assert_eq!(reply.body["error"]["code"], "invalid_name");

    // Chunks that are all there but add up to a file over the size limit.
    let dsym = corpus_dsym();
    let (_, _) = upload_file(&app, &token, "CrashProbeiOS", &dsym);
    let doubled: Vec<u8> = [dsym.as_slice(), dsym.as_slice()].concat();
    let (doubled_sum, request) = upload_file(&app, &token, "CrashProbeiOS", &doubled);
    let entry = poll(&app, &token, &request, &doubled_sum);
    assert_eq!(entry["state"], "error", "{entry}");
    assert!(
        entry["detail"].as_str().unwrap().contains("limit"),
        "{entry}"
    );

    // Chunks that assemble into bytes whose SHA-1 is not the file's checksum.
    let chunks: Vec<String> = dsym.chunks(CHUNK as usize).map(sha1_hex).collect();
    let lie = sha1_hex(b"something else");
    let entry = poll(
        &app,
        &token,
        &json!({ &lie: {"name": "CrashProbeiOS", "chunks": chunks} }),
        &lie,
    );
    assert_eq!(entry["state"], "error", "{entry}");
    assert!(
        entry["detail"].as_str().unwrap().contains("SHA-1"),
        "{entry}"
    );
    assert!(app.listed().is_empty(), "nothing stored");
}

#[test]
fn two_concurrent_assembles_of_one_file_assemble_it_once() {
    let app = spawn_app_with(|c| c.sentry.chunk_size = CHUNK);
    let token = app.token(Scope::Upload);
    let dsym = corpus_dsym();
    let (checksum, request) = upload_file(&app, &token, "CrashProbeiOS", &dsym);
    let answers: Vec<Value> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..2)
            .map(|_| s.spawn(|| assemble(&app, &token, &request).body))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for answer in &answers {
        let state = answer[&checksum]["state"].as_str().unwrap();
        assert!(state == "assembling" || state == "ok", "{answer}");
    }
    let entry = poll(&app, &token, &request, &checksum);
    assert_eq!(entry["state"], "ok", "{entry}");
    assert_eq!(
        entry["dif"]["debugId"],
        "54039061-a983-3323-a49d-837a894d667f"
    );
    assert_eq!(entry["dif"]["objectName"], "CrashProbeiOS");
    assert_eq!(entry["dif"]["cpuName"], "arm64");
    assert_eq!(entry["dif"]["sha1"], json!(checksum));
    assert_eq!(
        app.metric(r#"crashbox_sentry_assemblies_total{outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        app.metric(r#"crashbox_debug_files_total{status="stored"}"#),
        1.0
    );
    // The same file again: ok at once, nothing uploaded.
    let reply = assemble(&app, &token, &request);
    assert_eq!(reply.body[&checksum]["state"], "ok");
    assert_eq!(reply.body[&checksum]["missingChunks"], json!([]));
}

#[test]
fn an_assembly_interrupted_by_a_restart_resumes() {
    let app = spawn_app_with(|c| c.sentry.chunk_size = CHUNK);
    let token = app.token(Scope::Upload);
    let dsym = corpus_dsym();
    let (checksum, request) = upload_file(&app, &token, "CrashProbeiOS", &dsym);
    let root = app.stop();
    // The state a kill in the middle leaves: the row says `assembling`, its chunks are
    // on disk, nothing was ingested.
    {
        let store = crashbox::store::Store::open(&root.path().join("data")).unwrap();
        let chunks: Vec<String> = dsym.chunks(CHUNK as usize).map(sha1_hex).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let existing = rt
            .block_on(store.begin_sentry_assembly(crashbox::store::SentryFileRow {
                checksum: checksum.clone(),
                state: crashbox::store::SentryFileState::Assembling,
                name: "CrashProbeiOS".into(),
                debug_id: None,
                chunks,
                detail: None,
                dif: None,
            }))
            .unwrap();
        assert_eq!(existing, None);
        store.flush().unwrap();
    }
    let app = spawn_app_in(root, |c| c.sentry.chunk_size = CHUNK);
    // Resumed at start: the file is stored without anyone asking.
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.listed().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        app.listed(),
        vec![(
            "54039061-a983-3323-a49d-837a894d667f".to_owned(),
            "arm64".to_owned()
        )]
    );
    let entry = poll(&app, &token, &request, &checksum);
    assert_eq!(entry["state"], "ok", "{entry}");
}

#[test]
fn chunks_no_assemble_claims_expire() {
    let app = spawn_app_with(|c| {
        c.sentry.chunk_size = CHUNK;
        c.sentry.chunk_expiry = Duration::from_secs(1);
    });
    let token = app.token(Scope::Upload);
    let chunk = b"an orphan chunk".to_vec();
    let name = sha1_hex(&chunk);
    assert_eq!(
        post_chunks(&app, &token, &[("file", name.as_str(), chunk)]).status,
        200
    );
    let path = app.dsyms_dir().join("chunks").join(&name);
    assert!(path.exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    while path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!path.exists(), "the sweep deleted the expired chunk");
}

/// A crash event built from the fixture app's `.ips` ground truth
/// (`expected_frames.json`): its images and every thread's frames, as sentry-cocoa
/// writes them (frames outermost first, `instruction_addr` and `image_addr`).
fn fixture_event(event_id: &str) -> Value {
    let expected: Value = serde_json::from_slice(
        &std::fs::read(fixture("out/reports/expected_frames.json")).unwrap(),
    )
    .unwrap();
    let report = &expected["fixture_v1.ips"];
    let images: Vec<Value> = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            json!({
                "type": "macho",
                "debug_id": i["uuid"].as_str().unwrap().to_uppercase(),
                "image_addr": format!("{:#x}", i["base"].as_u64().unwrap()),
                "image_size": i["size"],
                "code_file": i["path"],
                "arch": i["arch"],
            })
        })
        .collect();
    let threads: Vec<Value> = report["threads"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(n, t)| {
            let mut frames: Vec<Value> = t["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    json!({
                        "instruction_addr": format!("{:#x}", f["address"].as_u64().unwrap()),
                        "image_addr": format!("{:#x}", f["image_base"].as_u64().unwrap()),
                        "package": f["image"],
                        "in_app": f["image"] != "libsystem_kernel.dylib",
                    })
                })
                .collect();
            frames.reverse();
            json!({"id": n, "crashed": t["crashed"], "current": t["crashed"], "main": n == 0,
                   "stacktrace": {"frames": frames}})
        })
        .collect();
    json!({
        "event_id": event_id,
        // Sentry SDKs always stamp an event; with its own timestamp the SDK keeps it,
        // so the event re-sent below is the same report (the dedup key leads with the
        // crash's day, schema v7).
        "timestamp": "2026-12-02T09:59:00Z",
        "level": "fatal",
        "platform": "cocoa",
        "release": "com.crashbox.fixture@1.0+1",
        "exception": {"values": [{
            "type": "EXC_BAD_ACCESS",
            "value": "KERN_INVALID_ADDRESS at 0x0 for jane.doe@example.com",
            "thread_id": 0,
            "mechanism": {"type": "mach", "handled": false, "meta": {
                "signal": {"number": 11, "name": "SIGSEGV"},
                "mach_exception": {"exception": 1, "code": 1, "subcode": 0, "name": "EXC_BAD_ACCESS"}}},
        }]},
        "threads": {"values": threads},
        "debug_meta": {"images": images},
        "contexts": {
            "app": {"app_identifier": "com.crashbox.fixture", "app_version": "1.0", "app_build": "1"},
            "os": {"name": "iOS", "version": "17.5", "build": "21F79"},
            "device": {"model": "iPhone15,2", "name": "Jane Doe's iPhone", "arch": "arm64"},
        },
    })
}

/// The (file, line) of every frame each thread of a stored crash should show:
/// expected_frames.json's locations (llvm-symbolizer's), inlined innermost first, one
/// empty entry for a frame without a location.
fn expected_threads() -> Vec<Vec<(Option<String>, Option<u64>)>> {
    let expected: Value = serde_json::from_slice(
        &std::fs::read(fixture("out/reports/expected_frames.json")).unwrap(),
    )
    .unwrap();
    expected["fixture_v1.ips"]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let mut out = Vec::new();
            for frame in t["frames"].as_array().unwrap() {
                let locations = frame["locations"].as_array().unwrap();
                if locations.is_empty() {
                    out.push((None, None));
                }
                for l in locations {
                    out.push((
                        l["file"].as_str().map(str::to_owned),
                        l["line"].as_u64().filter(|&n| n != 0),
                    ));
                }
            }
            out
        })
        .collect()
}

fn stored_threads(doc: &Value) -> Vec<Vec<(Option<String>, Option<u64>)>> {
    doc["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    if f["status"] != "symbolicated" {
                        return (None, None);
                    }
                    (f["file"].as_str().map(str::to_owned), f["line"].as_u64())
                })
                .collect()
        })
        .collect()
}

const SDK_SCRIPT: &str = r#"
import json, sys
import sentry_sdk
from sentry_sdk.envelope import Envelope, Item, PayloadRef

dsn, events_path, algo = sys.argv[1], sys.argv[2], sys.argv[3]
events = json.load(open(events_path))
sentry_sdk.init(
    dsn=dsn,
    default_integrations=False,
    send_default_pii=True,
    server_name="jane-doe-macbook.local",
    _experiments={"transport_compression_algo": algo},
)
sentry_sdk.set_user({"id": "jappleseed", "email": "jane.doe@example.com",
                     "ip_address": "203.0.113.77", "username": "jane"})
# A crash, through the SDK's event pipeline.
sentry_sdk.capture_event(events["crash"])
# A handled error: counted, not stored.
sentry_sdk.capture_event(events["handled"])
# What sentry-cocoa sends on the launch after a crash: the event with a session and a
# screenshot in one envelope, through the same transport.
client = sentry_sdk.get_client()
envelope = Envelope(headers={"event_id": events["second"]["event_id"]})
envelope.add_event(events["second"])
envelope.add_item(Item(payload=PayloadRef(json={"sid": "8d5a6c0e7e3a4e8e9f0a1b2c3d4e5f60",
    "did": "jane.doe@example.com", "status": "crashed", "init": True, "errors": 1,
    "started": "2026-12-02T10:00:00Z", "attrs": {"release": "com.crashbox.fixture@1.0+1"}}),
    type="session"))
envelope.add_item(Item(payload=PayloadRef(bytes=b"\x89PNG\r\n\x1a\n" + b"\n" * 1000),
    type="attachment", headers={"filename": "screenshot.png", "content_type": "image/png",
                                "attachment_type": "event.attachment"}))
client.transport.capture_envelope(envelope)
sentry_sdk.flush(timeout=30)
print("sent")
"#;

#[test]
fn sentry_sdk_envelopes_store_scrubbed_symbolicated_crashes() {
    let Some(python) = sentry_python() else {
        return;
    };
    let app = spawn_app();
    assert_eq!(
        app.post_dsyms("", &std::fs::read(fixture("out/dSYMs.zip")).unwrap())
            .status,
        201
    );
    let ingest = app.token(Scope::Ingest);
    let port = app.url.rsplit(':').next().unwrap();
    let dsn = format!("http://{ingest}@127.0.0.1:{port}/1");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("send.py");
    std::fs::write(&script, SDK_SCRIPT).unwrap();
    let mut sent = Vec::new();
    for (n, algo) in ["gzip", "br"].iter().enumerate() {
        let crash_id = format!("{:032x}", 0xc0ffee00 + n);
        let second_id = format!("{:032x}", 0xbeef00 + n);
        let mut second = fixture_event(&second_id);
        second["contexts"]["os"]["version"] = json!("18.0");
        let events = json!({
            "crash": fixture_event(&crash_id),
            "second": second,
            "handled": {"level": "error", "message": "a handled error",
                        "exception": {"values": [{"type": "E", "value": "v",
                                       "mechanism": {"type": "generic", "handled": true}}]}},
        });
        let events_path = dir.path().join(format!("events-{algo}.json"));
        std::fs::write(&events_path, events.to_string()).unwrap();
        let out = Command::new(&python)
            .arg(&script)
            .args([&dsn, events_path.to_str().unwrap(), algo])
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("sent"),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        sent.push(events["crash"].clone());
        sent.push(events["second"].clone());
    }
    // The SDK has flushed; every crash was answered only once durable.
    assert_eq!(
        app.metric(r#"crashbox_sentry_events_total{outcome="crash"}"#),
        4.0
    );
    assert_eq!(
        app.metric(r#"crashbox_sentry_events_total{outcome="not_crash"}"#),
        2.0
    );
    assert_eq!(
        app.metric(r#"crashbox_sentry_sessions_total{status="crashed"}"#),
        2.0
    );
    assert_eq!(app.metric("crashbox_sentry_session_starts_total"), 2.0);
    // The sessions count in their release (`com.crashbox.fixture@1.0+1`).
    let read = app.token(Scope::Read);
    let release = app.get(
        "/api/v1/releases/com.crashbox.fixture%201.0%20(1)",
        Some(&read),
    );
    assert_eq!(release.status, 200, "{:?}", release.body);
    assert_eq!(release.body["sessions"], json!({"total": 2, "crashed": 2}));
    assert_eq!(release.body["crash_free_sessions"], 0.0);
    assert_eq!(
        app.metric(r#"crashbox_sentry_items_dropped_total{type="attachment"}"#),
        2.0
    );
    assert_eq!(
        app.metric(r#"crashbox_crashes_total{outcome="stored"}"#),
        4.0
    );

    let want = expected_threads();
    let mut output = String::new();
    for event in &sent {
        // The same event again is a duplicate (de-duplicated by event_id), which
        // answers with the stored crash's id.
        let reply = app.post(
            "/api/v1/crashes",
            Some(&ingest),
            event.to_string().as_bytes(),
        );
        assert_eq!(reply.status, 200, "stored once already: {:?}", reply.body);
        let id = reply.body["id"].as_str().unwrap();
        let doc = app
            .get(&format!("/api/v1/crashes/{id}"), Some(&app.admin_token))
            .body;
        assert_eq!(stored_threads(&doc), want, "{doc:#}");
        assert_eq!(
            &crashed_functions(&app, id)[..3],
            ["cb_read_field", "cb_checksum", "cb_process_record"]
        );
        assert_eq!(doc["release"], "com.crashbox.fixture 1.0 (1)");
        output.push_str(&doc.to_string());
        output.push_str(
            &app.get(
                &format!("/api/v1/crashes/{id}/apple"),
                Some(&app.admin_token),
            )
            .body
            .to_string(),
        );
    }
    assert!(output.contains("cb_read_field"));
    for planted in [
        "jappleseed",
        "jane.doe@example.com",
        "203.0.113.77",
        "jane-doe-macbook",
        "Jane Doe's iPhone",
    ] {
        assert!(!output.contains(planted), "{planted} reached the API");
    }
}

/// An envelope holding `items` (type, payload), lengths given.
fn envelope(header: &Value, items: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = header.to_string().into_bytes();
    for (ty, payload) in items {
        out.push(b'\n');
        out.extend_from_slice(
            json!({"type": ty, "length": payload.len()})
                .to_string()
                .as_bytes(),
        );
        out.push(b'\n');
        out.extend_from_slice(payload);
    }
    out
}

fn post_envelope(
    app: &TestApp,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (crate::support::Reply, ureq::http::HeaderMap) {
    app.request_full("POST", "/api/1/envelope/", headers, Some(body))
}

#[test]
fn envelopes_take_every_encoding_and_every_key_form() {
    let app = spawn_app();
    let key = app.token(Scope::Ingest);
    let auth = format!("Sentry sentry_version=7,sentry_client=test/1,sentry_key={key}");
    let event = |n: u32| {
        let mut e = fixture_event(&format!("{n:032x}"));
        e["exception"]["values"][0]["value"] = json!(format!("crash {n}"));
        e.to_string().into_bytes()
    };
    let body = |n: u32| {
        envelope(
            &json!({"event_id": format!("{n:032x}")}),
            &[("event", &event(n)[..])],
        )
    };

    let zlib = |b: &[u8]| {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b).unwrap();
        enc.finish().unwrap()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("", body(1)),
        ("gzip", gzip(&body(2))),
        ("deflate", zlib(&body(3))),
        ("zstd", zstd::stream::encode_all(&body(4)[..], 3).unwrap()),
    ];
    for (encoding, bytes) in &cases {
        let mut headers = vec![
            ("X-Sentry-Auth", auth.as_str()),
            ("Content-Type", "application/x-sentry-envelope"),
        ];
        if !encoding.is_empty() {
            headers.push(("Content-Encoding", encoding));
        }
        let (reply, _) = post_envelope(&app, &headers, bytes);
        assert_eq!(reply.status, 200, "{encoding}: {:?}", reply.body);
        assert!(reply.body["id"].is_string(), "{encoding}");
    }
    assert_eq!(
        app.metric(r#"crashbox_crashes_total{outcome="stored"}"#),
        4.0
    );

    // The key in `Authorization: Sentry …`, in the query, in the envelope's DSN.
    let sentry_authorization = format!("Sentry sentry_key={key}");
    let (reply, _) = post_envelope(&app, &[("Authorization", &sentry_authorization)], &body(5));
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let reply = app.request(
        "POST",
        &format!("/api/1/envelope/?sentry_key={key}&sentry_version=7"),
        &[],
        Some(&body(6)[..]),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let port = app.url.rsplit(':').next().unwrap();
    let with_dsn = envelope(
        &json!({"event_id": format!("{:032x}", 7), "dsn": format!("http://{key}@127.0.0.1:{port}/1")}),
        &[("event", &event(7)[..])],
    );
    let (reply, _) = post_envelope(&app, &[], &with_dsn);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    // The `store` endpoint takes a plain event.
    let reply = app.request(
        "POST",
        "/api/1/store/",
        &[("X-Sentry-Auth", &auth), ("Content-Encoding", "gzip")],
        Some(&gzip(&event(8))[..]),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["id"], json!(format!("{:032x}", 8)));
    assert_eq!(
        app.metric(r#"crashbox_crashes_total{outcome="stored"}"#),
        8.0
    );
    // The same envelope again: 200, stored once.
    let (reply, _) = post_envelope(&app, &[("X-Sentry-Auth", &auth)], &body(1));
    assert_eq!(reply.status, 200);
    assert_eq!(
        app.metric(r#"crashbox_crashes_total{outcome="stored"}"#),
        8.0
    );
    assert_eq!(
        app.metric(r#"crashbox_crashes_total{outcome="duplicate"}"#),
        1.0
    );

    // No key, an unknown key, a key of the wrong scope, keys that disagree.
    let (reply, _) = post_envelope(&app, &[], &body(9));
    assert_eq!(reply.status, 401);
    let (reply, _) = post_envelope(
        &app,
        &[("X-Sentry-Auth", "Sentry sentry_key=cbx_nope")],
        &body(9),
    );
    assert_eq!(reply.status, 401);
    let upload = app.token(Scope::Upload);
    let (reply, _) = post_envelope(
        &app,
        &[("X-Sentry-Auth", &format!("Sentry sentry_key={upload}"))],
        &body(9),
    );
    assert_eq!(reply.status, 403);
    let other = app.token(Scope::Ingest);
    let reply = app.request(
        "POST",
        &format!("/api/1/envelope/?sentry_key={other}"),
        &[("X-Sentry-Auth", &auth)],
        Some(&body(9)[..]),
    );
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body["error"]["code"], "conflicting_keys");
    assert_eq!(
        app.metric(r#"crashbox_crashes_total{outcome="stored"}"#),
        8.0
    );
}

#[test]
fn envelopes_keep_crashes_drop_the_rest_and_refuse_bad_bodies() {
    let app = spawn_app_with(|c| c.sentry.max_envelope_decompressed_bytes = 16 << 20);
    let key = app.token(Scope::Ingest);
    let auth = format!("Sentry sentry_key={key}");
    let headers = [("X-Sentry-Auth", auth.as_str())];

    // A crash beside a large attachment and an unknown item: 200, the crash stored.
    let attachment = vec![b'\n'; 3 << 20];
    let crash = fixture_event(&format!("{:032x}", 1))
        .to_string()
        .into_bytes();
    let body = envelope(
        &json!({"event_id": format!("{:032x}", 1)}),
        &[
            ("attachment", &attachment[..]),
            ("profile_chunk", &b"{}"[..]),
            ("event", &crash[..]),
        ],
    );
    let (reply, _) = post_envelope(
        &app,
        &[headers[0], ("Content-Encoding", "gzip")],
        &gzip(&body),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        app.metric(r#"crashbox_crashes_total{outcome="stored"}"#),
        1.0
    );
    // An event without its own event_id takes the envelope's: the same event sent again
    // (stamped anew, so its bytes differ) is a duplicate.
    let mut bare = fixture_event("unused");
    bare.as_object_mut().unwrap().remove("event_id");
    bare["exception"]["values"][0]["value"] = json!("no id");
    for attempt in 0..2 {
        bare["timestamp"] = json!(1_700_000_000 + attempt);
        let bare_body = envelope(
            &json!({"event_id": format!("{:032x}", 2)}),
            &[("event", bare.to_string().as_bytes())],
        );
        let (reply, _) = post_envelope(&app, &headers, &bare_body);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body["id"], json!(format!("{:032x}", 2)));
    }
    assert_eq!(
        app.metric(r#"crashbox_crashes_total{outcome="stored"}"#),
        2.0
    );
    // Only attachments and sessions: 200 without an id; nothing stored.
    let body = envelope(
        &json!({}),
        &[
            ("session", &br#"{"status":"exited","init":false}"#[..]),
            ("attachment", &b"x"[..]),
        ],
    );
    let (reply, _) = post_envelope(&app, &headers, &body);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, json!({}));
    assert_eq!(
        app.metric(r#"crashbox_sentry_sessions_total{status="exited"}"#),
        1.0
    );
    // A handled error: 200, counted, not stored.
    let handled =
        br#"{"event_id":"0000000000000000000000000000000a","level":"error","message":"m"}"#;
    let (reply, _) = post_envelope(
        &app,
        &headers,
        &envelope(&json!({}), &[("event", &handled[..])]),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        app.metric(r#"crashbox_sentry_events_total{outcome="not_crash"}"#),
        1.0
    );
    assert_eq!(
        app.metric(r#"crashbox_crashes_total{outcome="stored"}"#),
        2.0
    );

    // Bad bodies: 4xx with the error shape, never a 5xx. The bomb: 64 MiB of zeros in
    // an attachment, over the 16 MiB this server allows an envelope to expand to.
    let mut bomb = gzip(b"{}\n{\"type\":\"attachment\",\"length\":67108864}\n");
    bomb.extend(gzip_zeros(64));
    let started = Instant::now();
    for (encoding, body, status, code) in [
        ("", b"not an envelope".to_vec(), 400, "invalid_envelope"),
        ("gzip", b"not gzip".to_vec(), 400, "invalid_compression"),
        ("compress", b"{}".to_vec(), 415, "unsupported_encoding"),
        ("gzip", bomb, 413, "envelope_too_large"),
        (
            "",
            envelope(&json!({}), &[("event", &b"{\"level\":\"fatal\"}"[..])]),
            422,
            "invalid_report",
        ),
        (
            "",
            envelope(&json!({}), &[("event", &b"[1,2]"[..])]),
            422,
            "invalid_report",
        ),
    ] {
        let mut h = vec![headers[0]];
        if !encoding.is_empty() {
            h.push(("Content-Encoding", encoding));
        }
        let (reply, _) = post_envelope(&app, &h, &body);
        assert_eq!(reply.status, status, "{code}: {:?}", reply.body);
        assert_eq!(reply.body["error"]["code"], code);
    }
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn envelopes_over_the_rate_get_429_with_sentry_headers() {
    let app = spawn_app_with(|c| {
        c.sentry.rate_per_token = 3;
        c.sentry.rate_per_address = 1000;
    });
    let key = app.token(Scope::Ingest);
    let auth = format!("Sentry sentry_key={key}");
    let body = envelope(&json!({}), &[("session", &br#"{"status":"ok"}"#[..])]);
    for _ in 0..3 {
        let (reply, _) = post_envelope(&app, &[("X-Sentry-Auth", &auth)], &body);
        assert_eq!(reply.status, 200);
    }
    let (reply, headers) = post_envelope(&app, &[("X-Sentry-Auth", &auth)], &body);
    assert_eq!(reply.status, 429);
    assert_eq!(reply.body["error"]["code"], "rate_limited");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    let limits = headers["x-sentry-rate-limits"].to_str().unwrap();
    assert!(limits.starts_with(&format!("{retry}::")), "{limits}");
    // Another token is not held back.
    let other = format!("Sentry sentry_key={}", app.token(Scope::Ingest));
    let (reply, _) = post_envelope(&app, &[("X-Sentry-Auth", &other)], &body);
    assert_eq!(reply.status, 200);

    // Per source address, whatever the token.
    let app = spawn_app_with(|c| c.sentry.rate_per_address = 2);
    let keys: Vec<String> = (0..3).map(|_| app.token(Scope::Ingest)).collect();
    let statuses: Vec<u16> = keys
        .iter()
        .map(|k| {
            let auth = format!("Sentry sentry_key={k}");
            post_envelope(&app, &[("X-Sentry-Auth", &auth)], &body)
                .0
                .status
        })
        .collect();
    assert_eq!(statuses, [200, 200, 429]);
    // The defaults let a launch-day burst from one app through.
    let app = spawn_app();
    let auth = format!("Sentry sentry_key={}", app.token(Scope::Ingest));
    for _ in 0..200 {
        let (reply, _) = post_envelope(&app, &[("X-Sentry-Auth", &auth)], &body);
        assert_eq!(reply.status, 200);
    }
}

#[test]
fn token_create_prints_the_dsn_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(crate::support::BIN)
        .args(["token", "create", "--scope", "ingest", "--data-dir"])
        .arg(dir.path())
        .args(["--public-url", "https://crash.example.com/"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let token = stdout.split_whitespace().last().unwrap();
    assert!(
        stderr.contains(&format!("https://{token}@crash.example.com/1")),
        "{stderr}"
    );
    // Other scopes print no DSN.
    let out = Command::new(crate::support::BIN)
        .args(["token", "create", "--scope", "upload", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("DSN"));
}

/// The real binary killed (-9) right after an assemble answered `assembling`: the
/// store holds the row, the restarted server resumes it and the file is stored.
#[test]
fn a_kill_9_during_an_assembly_is_resumed_by_the_next_start() {
    let root = tempfile::tempdir().unwrap();
    let server = crate::support::serve(root.path());
    let token = crashbox::auth::TokenStore::open(&root.path().join("data"))
        .unwrap()
        .create(Scope::Upload)
        .unwrap()
        .token;
    let agent = crate::support::agent();
    let auth = format!("Bearer {token}");
    // The largest corpus dSYM, so that its SymCache takes a while to build.
    let bytes = std::fs::read(corpus(
        "xcode-dsyms/3CD3E3CC-281E-3AF3-84EB-CDE6D56F0559.dSYM/Contents/Resources/DWARF/CrashLibiOS",
    ))
    .unwrap();
    let checksum = sha1_hex(&bytes);
    let boundary = "b0undary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file_gzip\"; filename=\"{checksum}\"\r\n\r\n"
    )
    .into_bytes();
    body.extend(gzip(&bytes));
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    let reply = agent
        .post(format!(
            "{}/api/0/organizations/o/chunk-upload/",
            server.url
        ))
        .header("Authorization", &auth)
        .header(
            "Content-Type",
            &format!("multipart/form-data; boundary={boundary}"),
        )
        .send(&body[..])
        .unwrap();
    assert_eq!(reply.status().as_u16(), 200);
    let request = json!({ &checksum: {"name": "CrashLibiOS", "chunks": [&checksum]} });
    let assemble = |url: &str| -> Value {
        let reply = agent
            .post(format!("{url}/api/0/projects/o/p/files/difs/assemble/"))
            .header("Authorization", &auth)
            .send(request.to_string().as_bytes())
            .unwrap();
        assert_eq!(reply.status().as_u16(), 200);
        let body: Value =
            serde_json::from_str(&reply.into_body().read_to_string().unwrap()).unwrap();
        body[&checksum].clone()
    };
    assert_eq!(assemble(&server.url)["state"], "assembling");
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    {
        let store = crashbox::store::Store::open(&root.path().join("data")).unwrap();
        let rows = store.sentry_files(std::slice::from_ref(&checksum)).unwrap();
        assert_eq!(rows.len(), 1, "the assemble state outlived the kill");
        if rows[0].state != crashbox::store::SentryFileState::Assembling {
            eprintln!("note: the assembly finished before the kill; the resume ran idle");
        }
    }
    let server = crate::support::serve(root.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    let entry = loop {
        let entry = assemble(&server.url);
        if entry["state"] != "assembling" || Instant::now() > deadline {
            break entry;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(entry["state"], "ok", "{entry}");
    assert_eq!(
        entry["dif"]["debugId"],
        "3cd3e3cc-281e-3af3-84eb-cde6d56f0559"
    );
}

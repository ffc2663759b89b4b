//! No identifier reaches disk, logs or API output. Every kind of identifier is planted
//! into reports of every format; each planted value must then be absent from the API's
//! answers, from the server's logs (at debug level), and from every byte under the
//! data dir, including the decompressed crash records in the database.

use serde_json::{json, Value};

use crate::support::{admin_token, agent, corpus, fixture, serve};

const CRASH_REPORTER_KEY: &str = "feedc0de00112233445566778899aabbccddeeff";
const INCIDENT: &str = "7E1D1E55-1DE5-4B1D-B1D5-C0FFEE000001";
const IDFV: &str = "ABCDEF01-2345-4678-9ABC-DEF012345678";
const BOOT_SESSION: &str = "B007B007-1111-4222-8333-944455556666";
const CONTAINER: &str = "C0FFEE00-1234-4321-ABCD-0123456789AB";
const USER: &str = "jappleseed";
const EMAIL: &str = "jane.doe@example.com";
const IPV4: &str = "203.0.113.77";
const IPV6: &str = "2001:db8::1234:5678";
const TOKEN: &str = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
const PASSWORD: &str = "hunter2pass";
const PHONE: &str = "+1 415 555 0132";
const CARD: &str = "4111 1111 1111 1111";
const SECRET_HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const SERVER_NAME: &str = "janes-macbook-pro.local";
const DEVICE_NAME: &str = "Jane Appleseed's iPhone";

fn needles() -> Vec<&'static str> {
    vec![
        CRASH_REPORTER_KEY,
        INCIDENT,
        IDFV,
        BOOT_SESSION,
        CONTAINER,
        USER,
        EMAIL,
        IPV4,
        IPV6,
        TOKEN,
        PASSWORD,
        PHONE,
        CARD,
        SECRET_HEX,
        SERVER_NAME,
        DEVICE_NAME,
    ]
}

/// Free text carrying every kind of identifier an app puts in a message.
fn dirty_text() -> String {
    format!(
        "user {EMAIL} from {IPV4} / {IPV6} sent Authorization: Bearer {TOKEN} to \
         https://admin:{PASSWORD}@internal.example.com/v1, call {PHONE}, card {CARD}, \
         key {SECRET_HEX}"
    )
}

fn container_path(app: &str) -> String {
    format!("/private/var/containers/Bundle/Application/{CONTAINER}/{app}.app/{app}")
}

fn planted_ips() -> Vec<u8> {
    let text = std::fs::read_to_string(fixture("out/reports/fixture_v1.ips")).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    let mut header: Value = serde_json::from_str(header).unwrap();
    let mut body: Value = serde_json::from_str(body).unwrap();
    header["incident_id"] = json!(INCIDENT);
    body["incident"] = json!(INCIDENT);
    body["crashReporterKey"] = json!(CRASH_REPORTER_KEY);
    body["bootSessionUUID"] = json!(BOOT_SESSION);
    body["storeInfo"] = json!({"deviceIdentifierForVendor": IDFV});
    body["procPath"] = json!(container_path("CrashboxFixture"));
    body["usedImages"][0]["path"] = json!(container_path("CrashboxFixture"));
    body["asi"] = json!({"CrashboxFixture": [dirty_text()]});
    body["threads"][0]["name"] = json!(format!("sync for {EMAIL}"));
    body["threads"][1]["queue"] = json!(format!("upload to {IPV4}"));
    format!("{header}\n{body}").into_bytes()
}

fn planted_crash() -> Vec<u8> {
    let text = std::fs::read_to_string(fixture("out/reports/fixture_v1.crash")).unwrap();
    let text = text
        .replace(
            "1B5F2A3C-7D4E-4F60-8A9B-C0D1E2F3A4B5",
            "9E1D1E55-1DE5-4B1D-B1D5-C0FFEE000002",
        )
        .replace(
            "3f2a9c1d7e4b8a6f0c5d2e1b9a8f7c6d5e4b3a21",
            CRASH_REPORTER_KEY,
        )
        .replace("5D0E3F6A-2B7C-4E19-9A41-6F3C2D8B7E10", CONTAINER)
        .replace(
            "Triggered by Thread:",
            &format!(
                "Application Specific Information:\n{}\n\nTriggered by Thread:",
                dirty_text()
            ),
        )
        .replace(
            "/usr/lib/system/libsystem_kernel.dylib",
            &format!("/Users/{USER}/Library/libsystem_kernel.dylib"),
        );
    // (The incident differs from the .ips', so both are stored.)
    text.into_bytes()
}

fn planted_metrickit() -> Vec<u8> {
    let mut payload: Value = serde_json::from_slice(
        &std::fs::read(corpus("metrickit/uncaught_exception_ios14.json")).unwrap(),
    )
    .unwrap();
    payload["crashDiagnostics"][0]["diagnosticMetaData"]["exceptionReason"] = json!({
        "composedMessage": dirty_text(),
        "exceptionName": "NSGenericException",
        "arguments": [EMAIL, IPV4],
    });
    serde_json::to_vec(&payload).unwrap()
}

fn planted_sentry() -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(
        &std::fs::read(corpus("sentry-events/crashprobe_call_abort.json")).unwrap(),
    )
    .unwrap();
    event["event_id"] = json!(INCIDENT.replace('-', "").to_lowercase());
    event["exception"]["values"][0]["value"] = json!(dirty_text());
    event["contexts"]["device"]["id"] = json!(IDFV);
    event["user"] = json!({"email": EMAIL, "ip_address": IPV4, "id": USER});
    event["debug_meta"]["images"][0]["name"] = json!(container_path("CrashProbeiOS"));
    serde_json::to_vec(&event).unwrap()
}

/// What a Sentry SDK adds about the host (user, IP, server name, device name,
/// breadcrumbs, tags), in an envelope beside a session and an attachment.
fn planted_envelope() -> (Value, Vec<u8>) {
    let mut event: Value = serde_json::from_slice(&planted_sentry()).unwrap();
    event["event_id"] = json!("0b1d1e551de54b1db1d5c0ffee000004");
    event["level"] = json!("fatal");
    event["server_name"] = json!(SERVER_NAME);
    event["user"] = json!({"id": USER, "email": EMAIL, "ip_address": IPV4, "username": USER});
    event["contexts"]["device"]["name"] = json!(DEVICE_NAME);
    event["contexts"]["device"]["id"] = json!(IDFV);
    event["request"] = json!({"env": {"REMOTE_ADDR": IPV6}, "headers": {"Authorization": format!("Bearer {TOKEN}")}});
    event["breadcrumbs"] =
        json!({"values": [{"message": dirty_text(), "data": {"phone": PHONE, "card": CARD}}]});
    event["tags"] = json!({"host": SERVER_NAME, "user": USER});
    event["extra"] =
        json!({"boot": BOOT_SESSION, "key": SECRET_HEX, "reporter": CRASH_REPORTER_KEY});
    let payload = event.to_string();
    let session = json!({"sid": INCIDENT, "did": EMAIL, "status": "crashed", "init": true,
                         "attrs": {"release": "com.crashbox.fixture@1.0+1", "ip_address": IPV4}})
    .to_string();
    let attachment = dirty_text();
    let mut body =
        json!({"event_id": event["event_id"], "sdk": {"name": "sentry.cocoa"}}).to_string();
    for (ty, item) in [
        ("event", &payload),
        ("session", &session),
        ("attachment", &attachment),
    ] {
        body.push('\n');
        body.push_str(&json!({"type": ty, "length": item.len()}).to_string());
        body.push('\n');
        body.push_str(item);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, body.as_bytes()).unwrap();
    (event, gz.finish().unwrap())
}

fn planted_crashbox() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "crashbox": 1,
        "incident_id": "0A1D1E55-1DE5-4B1D-B1D5-C0FFEE000003",
        "device_id": IDFV,
        "app": {"bundle_id": "com.crashbox.fixture", "name": "CrashboxFixture", "version": "1.0", "build": "1"},
        "exception": {"name": "NSInvalidArgumentException", "reason": dirty_text()},
        "threads": [{"crashed": true, "name": format!("{EMAIL} worker"), "frames": ["0x1041c4078", "0x1041c41ec"]}],
        "images": [{"name": "CrashboxFixture", "path": format!("/home/{USER}/build/CrashboxFixture"),
                    "uuid": "4c4c4411-5555-3144-a119-a08c5c39b7e8", "load_address": "0x1041c0000"}],
    }))
    .unwrap()
}

/// Every place `needle` shows in `haystack`, case-insensitively.
fn contains(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

#[test]
fn planted_identifiers_never_reach_api_logs_or_disk() {
    let root = tempfile::tempdir().unwrap();
    let server = serve(root.path());
    let token = admin_token(&root.path().join("data"));
    let agent = agent();
    let call = |method: &str, path: &str, body: Option<&[u8]>| -> (u16, String) {
        let url = format!("{}{path}", server.url);
        let auth = format!("Bearer {token}");
        let response = match (method, body) {
            ("POST", Some(body)) => agent.post(url).header("Authorization", &auth).send(body),
            _ => agent.get(url).header("Authorization", &auth).call(),
        }
        .unwrap();
        let status = response.status().as_u16();
        (status, response.into_body().read_to_string().unwrap())
    };
    // The dSYMs are there, so every path through symbolication runs.
    let (status, _) = call(
        "POST",
        "/api/v1/dsyms",
        Some(&std::fs::read(fixture("out/dSYMs.zip")).unwrap()),
    );
    assert_eq!(status, 201);

    let mut api_output = String::new();
    for (format, body) in [
        ("ips", planted_ips()),
        ("crash", planted_crash()),
        ("metrickit", planted_metrickit()),
        ("sentry", planted_sentry()),
        ("crashbox", planted_crashbox()),
    ] {
        // Each report really carries what it should be scrubbed of.
        let raw = String::from_utf8_lossy(&body).into_owned();
        assert!(contains(&raw, EMAIL) || contains(&raw, IDFV), "{format}");
        for _ in 0..2 {
            let (status, answer) = call("POST", "/api/v1/crashes", Some(&body));
            assert!(
                status == 201 || status == 200,
                "{format}: {status} {answer}"
            );
            api_output.push_str(&answer);
            let answer: Value = serde_json::from_str(&answer).unwrap();
            for crash in answer["crashes"].as_array().unwrap() {
                let id = crash["id"].as_str().unwrap();
                for path in [
                    format!("/api/v1/crashes/{id}"),
                    format!("/api/v1/crashes/{id}/apple"),
                ] {
                    let (status, text) = call("GET", &path, None);
                    assert_eq!(status, 200, "{path}");
                    api_output.push_str(&text);
                }
            }
        }
    }
    // A Sentry SDK envelope, keyed by an ingest token as its DSN.
    let ingest = crashbox::auth::TokenStore::open(&root.path().join("data"))
        .unwrap()
        .create(crashbox::auth::Scope::Ingest)
        .unwrap()
        .token;
    let (event, envelope) = planted_envelope();
    for _ in 0..2 {
        let response = agent
            .post(format!("{}/api/1/envelope/", server.url))
            .header(
                "X-Sentry-Auth",
                &format!("Sentry sentry_version=7,sentry_key={ingest}"),
            )
            .header("Content-Encoding", "gzip")
            .send(&envelope[..])
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        api_output.push_str(&response.into_body().read_to_string().unwrap());
    }
    // The same event again names the crash the envelope stored.
    let (status, answer) = call(
        "POST",
        "/api/v1/crashes",
        Some(event.to_string().as_bytes()),
    );
    assert_eq!(status, 200, "the envelope stored it: {answer}");
    let id = serde_json::from_str::<Value>(&answer).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        format!("/api/v1/crashes/{id}"),
        format!("/api/v1/crashes/{id}/apple"),
    ] {
        let (status, text) = call("GET", &path, None);
        assert_eq!(status, 200, "{path}");
        api_output.push_str(&text);
    }
    api_output.push_str(&call("GET", "/metrics", None).1);

    for path in ["/api/v1/dsyms?missing=true", "/api/v1/dsyms"] {
        api_output.push_str(&call("GET", path, None).1);
    }
    // Scrubbing must not have thrown away what triage needs.
    assert!(
        api_output.contains("cb_read_field"),
        "symbolication survived"
    );
    assert!(api_output.contains("<container>"), "paths keep their shape");

    let logs = server.logs.lock().unwrap().join("\n");
    drop(server);

    let mut leaks = Vec::new();
    for needle in needles() {
        if contains(&api_output, needle) {
            leaks.push(format!("API output has {needle}"));
        }
        if contains(&logs, needle) {
            leaks.push(format!("logs have {needle}"));
        }
    }
    // Every byte under the data dir (the database, its WAL, tokens, secret)...
    let mut stack = vec![root.path().join("data")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let raw = std::fs::read(&path).unwrap();
            let bytes = String::from_utf8_lossy(&raw).into_owned();
            for needle in needles() {
                if contains(&bytes, needle) {
                    leaks.push(format!("{} has {needle}", path.display()));
                }
            }
        }
    }
    // ...and every crash record, decompressed, with the columns beside it.
    let store = crashbox::store::Store::open(&root.path().join("data")).unwrap();
    let stored = store.records().unwrap();
    let records = stored.len();
    for crash in stored {
        let text = format!(
            "{} {:?} {:?} {:?} {}",
            String::from_utf8_lossy(&crash.record),
            crash.release,
            crash.device_hash,
            crash.filing,
            crash.received_at
        );
        for needle in needles() {
            if contains(&text, needle) {
                leaks.push(format!("crash {} has {needle}", crash.id));
            }
        }
    }
    assert!(records >= 6, "only {records} crash records decoded");
    assert!(leaks.is_empty(), "{leaks:#?}");
}

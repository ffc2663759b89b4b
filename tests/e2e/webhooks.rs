//! Webhooks over real HTTP, into a receiver this test runs on 127.0.0.1 (a std
//! `TcpListener` thread that records every request and answers as scripted): one
//! `group.new` per new group and none for duplicates, `group.regressed` from a newer
//! build only, one `group.spike`, a 503 retried into one delivery, signatures checked
//! as a receiver would, address checks, and kill -9 of the real binary with deliveries
//! pending.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::{admin_token, agent, reply, spawn_app_with, Reply, TestApp};
use crashbox::auth::{Scope, TokenStore};

const APP: &str = "com.example.hooks";

/// A crash of crash site `site` from `version (build)`; `incident` names the report
/// (the same incident twice is a retried upload).
fn report(site: u32, version: &str, build: &str, incident: &str) -> Vec<u8> {
    json!({
        "crashbox": 1,
        "app": {"bundle_id": APP, "name": "Hooks", "version": version, "build": build},
        "os": {"name": "iOS", "version": "17.1"},
        "device_model": "iPhone15,2",
        "device_id": "device-a",
        "exception": {"type": "EXC_BAD_ACCESS", "signal": "SIGSEGV"},
        "images": [{"name": "Hooks", "path": "/private/var/containers/Bundle/Application/X/Hooks.app/Hooks",
                    "uuid": "21111111-2222-3333-4444-555555555555",
                    "load_address": "0x100000000", "size": 1048576}],
        "threads": [{"crashed": true, "frames": [format!("0x{:x}", 0x1_0000_0000u64 + u64::from(site))]}],
        "incident_id": incident,
    })
    .to_string()
    .into_bytes()
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("hook-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// One request the receiver got, and the status it answered.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    raw: Vec<u8>,
    body: Value,
    answered: u16,
}

/// A tiny HTTP receiver: answers the scripted statuses first, then `fallback`.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    fallback: Arc<Mutex<u16>>,
}

impl Receiver {
    fn start(script: &[u16]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let fallback = Arc::new(Mutex::new(200));
        let (g, s, f) = (got.clone(), script.clone(), fallback.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (g, s, f) = (g.clone(), s.clone(), f.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(stream, &g, &s, &f);
                });
            }
        });
        Receiver { url, got, fallback }
    }

    fn set_fallback(&self, status: u16) {
        *self.fallback.lock().unwrap() = status;
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Requests answered 2xx.
    fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.answered == 200)
            .collect()
    }
}

fn serve_one(
    stream: std::net::TcpStream,
    got: &Mutex<Vec<Received>>,
    script: &Mutex<VecDeque<u16>>,
    fallback: &Mutex<u16>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut raw = vec![0; length];
    reader.read_exact(&mut raw)?;
    let status = script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(*fallback.lock().unwrap());
    got.lock().unwrap().push(Received {
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        headers,
        raw,
        answered: status,
    });
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    )?;
    stream.flush()
}

/// Waits until `done` holds (or fails after `limit`).
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the receiver verifies: `sha256=` + lowercase hex HMAC-SHA256 of the raw body.
fn signed_by(r: &Received, secret: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&r.raw);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    r.headers.get("x-crashbox-signature") == Some(&want)
}

struct Hooks {
    app: TestApp,
    ingest: String,
    triage: String,
}

impl Hooks {
    fn new(tweak: impl FnOnce(&mut crashbox::config::Config)) -> Hooks {
        let app = spawn_app_with(|c| {
            c.webhooks.max_backoff = Duration::from_millis(500);
            c.public_url = Some("https://crashbox.example".into());
            tweak(c);
        });
        let tokens = TokenStore::open(&app.data_dir()).unwrap();
        Hooks {
            ingest: tokens.create_named(Scope::Ingest, None).unwrap().token,
            triage: tokens.create_named(Scope::Triage, None).unwrap().token,
            app,
        }
    }

    fn subscribe(&self, url: &str, events: &[&str], secret: Option<&str>) -> String {
        let mut body = json!({"url": url, "events": events});
        if let Some(secret) = secret {
            body["secret"] = json!(secret);
        }
        let r = self.app.post(
            "/api/v1/webhooks",
            Some(&self.app.admin_token),
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert!(r.body.get("secret").is_none(), "{:?}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }

    /// Posts a crash; answers (status, group id).
    fn crash(&self, site: u32, version: &str, build: &str, incident: &str) -> (u16, String) {
        let r = self.app.post(
            "/api/v1/crashes",
            Some(&self.ingest),
            &report(site, version, build, incident),
        );
        assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
        (r.status, r.body["group_id"].as_str().unwrap().to_owned())
    }

    fn deliveries(&self, webhook: &str) -> Vec<Value> {
        let r = self.app.get(
            &format!("/api/v1/webhooks/{webhook}/deliveries"),
            Some(&self.app.admin_token),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["deliveries"].as_array().unwrap().clone()
    }
}

#[test]
fn each_new_group_fires_one_group_new_and_duplicates_fire_nothing() {
    let receiver = Receiver::start(&[]);
    let hooks = Hooks::new(|_| {});
    let secret = "s3cret-for-tests";
    let webhook = hooks.subscribe(&receiver.url, &["group.new"], Some(secret));

    let (status, a) = hooks.crash(1, "1.0", "1", "same-incident");
    assert_eq!(status, 201);
    // A retried upload: the same report again.
    let (status, again) = hooks.crash(1, "1.0", "1", "same-incident");
    assert_eq!((status, &again), (200, &a));
    // Another crash of the same group, and a second group.
    hooks.crash(1, "1.0", "1", &unique());
    let (_, b) = hooks.crash(2, "1.0", "1", &unique());
    assert_ne!(a, b);

    wait_for(Duration::from_secs(20), "two deliveries", || {
        receiver.delivered().len() >= 2
    });
    // Nothing else arrives.
    std::thread::sleep(Duration::from_millis(1500));
    let got = receiver.received();
    assert_eq!(got.len(), 2, "{got:#?}");
    let mut groups: Vec<&str> = got
        .iter()
        .map(|r| r.body["group"]["id"].as_str().unwrap())
        .collect();
    groups.sort();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(groups, want);
    for r in &got {
        assert_eq!(r.body["event"], "group.new");
        assert!(signed_by(r, secret), "bad signature: {:?}", r.headers);
        assert!(!signed_by(r, "another secret"));
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.body["delivery_id"].as_str().unwrap().len(), 32);
        assert_eq!(r.body["crash_id"].as_str().unwrap().len(), 32);
        let text = r.body["text"].as_str().unwrap();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("New crash"), "{text}");
        assert!(text.contains(APP), "{text}");
        assert!(text.contains("EXC_BAD_ACCESS"), "{text}");
        assert!(text.contains("1.0 (1)"), "{text}");
        let link = format!(
            "https://crashbox.example/groups/{}",
            r.body["group"]["id"].as_str().unwrap()
        );
        assert!(text.contains(&link), "{text}");
    }
    // The listing shows each delivery as delivered on the first attempt.
    let listed = hooks.deliveries(&webhook);
    assert_eq!(listed.len(), 2, "{listed:#?}");
    for d in &listed {
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["last_error"], Value::Null, "{d}");
    }
    // The list of webhooks never shows a secret.
    let list = hooks
        .app
        .get("/api/v1/webhooks", Some(&hooks.app.admin_token));
    assert_eq!(list.status, 200);
    assert_eq!(list.body["webhooks"][0]["id"], webhook.as_str());
    assert_eq!(list.body["webhooks"][0]["has_secret"], true);
    assert!(!list.body.to_string().contains(secret));
}

#[test]
fn a_resolved_group_regressed_by_a_newer_build_fires_once_and_an_older_build_never() {
    let receiver = Receiver::start(&[]);
    let hooks = Hooks::new(|_| {});
    hooks.subscribe(&receiver.url, &["group.regressed"], None);
    let (_, group) = hooks.crash(10, "1.0", "1", &unique());
    let r = hooks.app.patch(
        &format!("/api/v1/groups/{group}"),
        Some(&hooks.triage),
        br#"{"status":"resolved","resolved_in":"1.1 (2)"}"#,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    // An older build keeps crashing after the fix: nothing.
    hooks.crash(10, "1.0", "1", &unique());
    std::thread::sleep(Duration::from_millis(1000));
    assert!(receiver.received().is_empty(), "{:#?}", receiver.received());
    // The fixed build crashes: regressed, once, even with more crashes after it.
    hooks.crash(10, "1.1", "2", &unique());
    hooks.crash(10, "1.2", "3", &unique());
    wait_for(Duration::from_secs(20), "a regression", || {
        !receiver.delivered().is_empty()
    });
    std::thread::sleep(Duration::from_millis(1500));
    let got = receiver.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    let r = &got[0];
    assert_eq!(r.body["event"], "group.regressed");
    assert_eq!(r.body["group"]["id"], group.as_str());
    assert_eq!(r.body["group"]["status"], "regressed");
    assert!(!r.headers.contains_key("x-crashbox-signature"));
    let text = r.body["text"].as_str().unwrap();
    assert!(text.contains("Regressed"), "{text}");
    assert!(text.contains("1.1 (2)"), "{text}");
}

#[test]
fn a_spike_fires_once_per_window() {
    let receiver = Receiver::start(&[]);
    let hooks = Hooks::new(|c| {
        c.webhooks.spike_min_count = 5;
        c.webhooks.spike_factor = 3.0;
    });
    hooks.subscribe(&receiver.url, &["group.spike"], None);
    // A quiet group: below the count, nothing.
    for _ in 0..3 {
        hooks.crash(20, "1.0", "1", &unique());
    }
    std::thread::sleep(Duration::from_millis(800));
    assert!(receiver.received().is_empty());
    // Past it: one spike, however many more crashes follow within the window.
    let mut group = String::new();
    for _ in 0..12 {
        group = hooks.crash(20, "1.0", "1", &unique()).1;
    }
    wait_for(Duration::from_secs(20), "a spike", || {
        !receiver.delivered().is_empty()
    });
    std::thread::sleep(Duration::from_millis(1500));
    let got = receiver.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].body["event"], "group.spike");
    assert_eq!(got[0].body["group"]["id"], group.as_str());
    assert!(got[0].body["spike"]["last_hour"].as_i64().unwrap() >= 5);
    let text = got[0].body["text"].as_str().unwrap();
    assert!(text.contains("in the last hour"), "{text}");
}

#[test]
fn a_receiver_answering_503_first_still_gets_the_event_once() {
    let receiver = Receiver::start(&[503]);
    let hooks = Hooks::new(|_| {});
    let webhook = hooks.subscribe(&receiver.url, &["group.new", "group.regressed"], None);
    hooks.crash(30, "1.0", "1", &unique());
    wait_for(Duration::from_secs(20), "the delivery", || {
        !receiver.delivered().is_empty()
    });
    std::thread::sleep(Duration::from_millis(1500));
    let got = receiver.received();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].answered, 503);
    assert_eq!(got[1].answered, 200);
    // The same delivery, retried.
    assert_eq!(got[0].body["delivery_id"], got[1].body["delivery_id"]);
    let listed = hooks.deliveries(&webhook);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "delivered");
    assert_eq!(listed[0]["attempts"], 2);
}

#[test]
fn a_dead_receiver_is_given_up_and_visible() {
    let receiver = Receiver::start(&[]);
    receiver.set_fallback(503);
    let hooks = Hooks::new(|c| c.webhooks.retry_for = Duration::from_secs(2));
    let webhook = hooks.subscribe(&receiver.url, &["group.new"], None);
    hooks.crash(40, "1.0", "1", &unique());
    wait_for(Duration::from_secs(20), "the delivery to fail", || {
        hooks.deliveries(&webhook)[0]["status"] == "failed"
    });
    let listed = hooks.deliveries(&webhook);
    let attempts = listed[0]["attempts"].as_u64().unwrap();
    assert!(attempts >= 2, "{listed:#?}");
    assert_eq!(receiver.received().len() as u64, attempts);
    let error = listed[0]["last_error"].as_str().unwrap();
    assert!(error.contains("503"), "{error}");
    // A 4xx is not retried.
    let refusing = Receiver::start(&[]);
    refusing.set_fallback(404);
    let other = hooks.subscribe(&refusing.url, &["group.new"], None);
    hooks.crash(41, "1.0", "1", &unique());
    wait_for(Duration::from_secs(20), "a 404", || {
        hooks
            .deliveries(&other)
            .first()
            .is_some_and(|d| d["status"] == "failed")
    });
    assert_eq!(hooks.deliveries(&other)[0]["attempts"], 1);
}

#[test]
fn webhook_requests_are_checked_and_admin_only() {
    let hooks = Hooks::new(|_| {});
    let admin = hooks.app.admin_token.clone();
    let post = |token: &str, body: Value| -> Reply {
        hooks
            .app
            .post("/api/v1/webhooks", Some(token), body.to_string().as_bytes())
    };
    let ok = json!({"url": "http://127.0.0.1:9/x", "events": ["group.new"]});
    assert_eq!(post(&hooks.triage, ok.clone()).status, 403);
    assert_eq!(
        hooks
            .app
            .get("/api/v1/webhooks", Some(&hooks.triage))
            .status,
        403
    );
    for (url, events) in [
        ("ftp://example.com/x", json!(["group.new"])),
        (
            "http://169.254.169.254/latest/meta-data",
            json!(["group.new"]),
        ),
        ("http://[fe80::1]/x", json!(["group.new"])),
        ("http://[::ffff:169.254.169.254]/x", json!(["group.new"])),
        ("http://0.0.0.0:9/x", json!(["group.new"])),
        ("http://127.0.0.1:9/x", json!([])),
        ("http://127.0.0.1:9/x", json!(["group.deleted"])),
    ] {
        let r = post(&admin, json!({"url": url, "events": events}));
        assert_eq!(r.status, 400, "{url} {events}: {:?}", r.body);
    }
    let created = post(&admin, ok);
    assert_eq!(created.status, 201);
    let id = created.body["id"].as_str().unwrap();
    let delete = |token: &str, id: &str| {
        reply(
            agent()
                .delete(format!("{}/api/v1/webhooks/{id}", hooks.app.url))
                .header("Authorization", &format!("Bearer {token}"))
                .call(),
        )
        .status
    };
    assert_eq!(delete(&hooks.triage, id), 403);
    assert_eq!(delete(&admin, id), 204);
    assert_eq!(delete(&admin, id), 404);
    assert_eq!(
        hooks
            .app
            .get(&format!("/api/v1/webhooks/{id}/deliveries"), Some(&admin))
            .status,
        404
    );
    // Link-local is allowed with the flag.
    let open = Hooks::new(|c| c.webhooks.allow_link_local = true);
    let r = open.app.post(
        "/api/v1/webhooks",
        Some(&open.app.admin_token),
        json!({"url": "http://169.254.169.254/x", "events": ["group.new"]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
}

#[test]
fn kill_9_with_deliveries_pending_loses_and_duplicates_nothing() {
    use crate::support::serve_with;
    let receiver = Receiver::start(&[]);
    // Down: every attempt fails until the receiver comes back.
    receiver.set_fallback(503);
    let root = tempfile::tempdir().unwrap();
    let env = [
        ("CRASHBOX_WEBHOOK_MAX_BACKOFF", "1s"),
        ("CRASHBOX_WEBHOOK_RETRY_FOR", "10m"),
    ];
    let mut server = serve_with(root.path(), &env);
    let admin = admin_token(&root.path().join("data"));
    let http = agent();
    let answer = http
        .post(format!("{}/api/v1/webhooks", server.url))
        .header("Authorization", &format!("Bearer {admin}"))
        .send(json!({"url": receiver.url, "events": ["group.new"]}).to_string());
    assert_eq!(reply(answer).status, 201);
    let sites = 6u32;
    for site in 0..sites {
        let answer = http
            .post(format!("{}/api/v1/crashes", server.url))
            .header("Authorization", &format!("Bearer {admin}"))
            .send(&report(100 + site, "1.0", "1", &unique())[..]);
        assert_eq!(reply(answer).status, 201);
    }
    // Some attempts failed, so deliveries are pending with attempts behind them.
    wait_for(Duration::from_secs(20), "failed attempts", || {
        receiver.received().len() >= 3
    });
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    receiver.set_fallback(200);
    let server = serve_with(root.path(), &env);
    wait_for(Duration::from_secs(60), "every event", || {
        let mut ids: Vec<String> = receiver
            .delivered()
            .iter()
            .map(|r| r.body["delivery_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids.dedup();
        ids.len() >= sites as usize
    });
    std::thread::sleep(Duration::from_millis(2000));
    let delivered = receiver.delivered();
    // Every event arrived exactly once (the receiver answered none before the kill, so
    // no lost answer could excuse a repeat), one per group.
    let mut ids: Vec<&str> = delivered
        .iter()
        .map(|r| r.body["delivery_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let count = ids.len();
    ids.dedup();
    assert_eq!(count, ids.len(), "a delivery arrived twice: {delivered:#?}");
    assert_eq!(ids.len(), sites as usize);
    let mut groups: Vec<&str> = delivered
        .iter()
        .map(|r| r.body["group"]["id"].as_str().unwrap())
        .collect();
    groups.sort();
    groups.dedup();
    assert_eq!(groups.len(), sites as usize);
    drop(server);
}

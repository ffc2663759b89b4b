//! The SQLite store as a user meets it: the real binary, killed with SIGKILL under
//! load; `token create` and `backup` run as other processes while it writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::support::{admin_token, agent, reply, serve, BIN};

/// A crashbox JSON report; each `n` is a new incident on one of 7 devices in one of 3
/// releases, so every counter moves.
fn report(n: u64) -> Vec<u8> {
    format!(
        r#"{{"crashbox":1,"incident_id":"kill-{n}","device_id":"device-{device}",
        "app":{{"bundle_id":"com.crashbox.kill","name":"App","version":"1.{release}","build":"{release}"}},
        "exception":{{"type":"EXC_BAD_ACCESS"}},
        "images":[{{"name":"App","uuid":"54039061-a983-3323-a49d-837a894d667f","load_address":"0x1000","size":4096}}],
        "threads":[{{"crashed":true,"frames":["0x{frame:x}"]}}]}}"#,
        device = n % 7,
        release = n % 3,
        frame = 0x1010 + (n % 5) * 4,
    )
    .into_bytes()
}

/// Posts reports from `threads` threads to whatever URL `url` holds until `stop`, and
/// records the id of every crash answered 2xx.
fn senders(
    threads: u64,
    url: Arc<RwLock<String>>,
    token: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|t| {
            let (url, token, stop, acked) =
                (url.clone(), token.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .into();
                let mut n = t;
                while !stop.load(Ordering::SeqCst) {
                    let base = url.read().unwrap().clone();
                    let answer = agent
                        .post(format!("{base}/api/v1/crashes"))
                        .header("Authorization", &format!("Bearer {token}"))
                        .send(&report(n)[..]);
                    n += threads;
                    // A refused connection or a cut answer is what a kill looks like
                    // from a device: it keeps the report and retries later.
                    let Ok(mut answer) = answer else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    if answer.status().is_success() {
                        let body = answer.body_mut().read_to_string().unwrap_or_default();
                        if let Ok(body) = serde_json::from_str::<serde_json::Value>(&body) {
                            acked
                                .lock()
                                .unwrap()
                                .push(body["id"].as_str().unwrap().to_owned());
                        }
                    }
                }
            })
        })
        .collect()
}

fn sigterm(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// SIGKILL keeps the page cache, so this proves the order of our writes (nothing is
/// answered before its transaction commits, counters commit with their crashes), not
/// that fsync reaches the platter; `synchronous=FULL` is what covers a power cut.
#[test]
fn every_2xx_crash_survives_repeated_kill_9_under_load() {
    const KILLS: usize = 10;
    let root = tempfile::tempdir().unwrap();
    let mut server = serve(root.path());
    let token = admin_token(&root.path().join("data"));
    let url = Arc::new(RwLock::new(server.url.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let threads = senders(4, url.clone(), token.clone(), stop.clone(), acked.clone());
    let mut rng_state = 0x9e3779b97f4a7c15u64;
    for kill in 0..KILLS {
        let before = acked.lock().unwrap().len();
        // Kill at a varying moment, once some crashes were answered since the restart.
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let pause = Duration::from_millis(50 + rng_state % 250);
        let deadline = Instant::now() + Duration::from_secs(20);
        std::thread::sleep(pause);
        while acked.lock().unwrap().len() < before + 20 {
            assert!(
                Instant::now() < deadline,
                "no crash answered after restart {kill}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        server = serve(root.path());
        *url.write().unwrap() = server.url.clone();
    }
    stop.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= KILLS * 20,
        "{} crashes answered",
        acked.len()
    );
    let agent = agent();
    for id in &acked {
        let answer = reply(
            agent
                .get(format!("{}/api/v1/crashes/{id}", server.url))
                .header("Authorization", &format!("Bearer {token}"))
                .call(),
        );
        assert_eq!(answer.status, 200, "crash {id}, answered 2xx, was lost");
    }
    // Counters equal a recount from the crash rows, after every kill.
    sigterm(&server.child);
    server.child.wait().unwrap();
    let store = crashbox::store::Store::open(&root.path().join("data")).unwrap();
    assert_eq!(store.audit().unwrap(), vec![]);
    let stored = store.records().unwrap().len();
    assert!(
        stored >= acked.len(),
        "{stored} stored, {} answered",
        acked.len()
    );
}

#[test]
fn token_create_and_backup_run_beside_a_writing_server() {
    let root = tempfile::tempdir().unwrap();
    let server = serve(root.path());
    let data = root.path().join("data");
    let token = admin_token(&data);
    let url = Arc::new(RwLock::new(server.url.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let threads = senders(2, url, token, stop.clone(), acked.clone());
    while acked.lock().unwrap().len() < 50 {
        std::thread::sleep(Duration::from_millis(10));
    }

    // A token made by another process works at once against the running server.
    let out = std::process::Command::new(BIN)
        .args(["token", "create", "--scope", "read", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = String::from_utf8(out.stdout).unwrap();
    let read = read.split_whitespace().last().unwrap();
    let listed = reply(
        agent()
            .get(format!("{}/api/v1/dsyms", server.url))
            .header("Authorization", &format!("Bearer {read}"))
            .call(),
    );
    assert_eq!(listed.status, 200);

    // A backup taken mid-write is a consistent database.
    let copy = root.path().join("backup.db");
    let out = std::process::Command::new(BIN)
        .args(["backup", "--data-dir"])
        .arg(&data)
        .arg("--to")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answered_before = acked.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().unwrap();
    }

    // Restored as the README says: the file becomes the data dir's database.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&copy, restored.path().join(crashbox::store::DB_FILE)).unwrap();
    let store = crashbox::store::Store::open(restored.path()).unwrap();
    assert_eq!(store.audit().unwrap(), vec![]);
    let in_copy = store.records().unwrap().len();
    assert!(
        in_copy >= 50 && in_copy <= acked.lock().unwrap().len(),
        "{in_copy} crashes in the backup, {answered_before} answered before it"
    );
}

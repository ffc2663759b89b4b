//! The test harness: a real server on a random port over a temp data dir, and helpers
//! that talk to it over a real socket.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use crashbox::config::Config;
use serde_json::Value;

/// The shared corpus next to the repo (`../shared/corpus`).
#[track_caller]
pub fn corpus(rel: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpus")
        .join(rel);
    assert!(path.exists(), "corpus file missing: {}", path.display());
    path
}

/// A committed fixture under `fixtures/` (built by `fixtures/build.sh`).
#[track_caller]
pub fn fixture(rel: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel);
    assert!(
        path.exists(),
        "fixture missing: {} (run fixtures/build.sh)",
        path.display()
    );
    path
}

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub url: String,
    pub admin_token: String,
    pub root: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    agent: ureq::Agent,
}

/// An HTTP answer: status and body (JSON when it parses, else a string).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

pub fn spawn_app() -> TestApp {
    spawn_app_with(|_| {})
}

/// Starts a server whose config `tweak` may change (limits, mostly).
pub fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_in(tempfile::tempdir().unwrap(), tweak)
}

/// Starts a server over `root` (`data/`, `dsyms/`), which may hold an earlier
/// server's store: a restart.
pub fn spawn_app_in(root: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestApp {
    static LOGS: Once = Once::new();
    LOGS.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            crashbox::telemetry::init(crashbox::telemetry::LogFormat::Text);
        }
    });
    let mut config = Config {
        data_dir: root.path().join("data"),
        dsyms_dir: root.path().join("dsyms"),
        listen: "127.0.0.1:0".parse().unwrap(),
        conversion_workers: 2,
        ..Config::default()
    };
    tweak(&mut config);
    let app = crashbox::server::prepare(config.clone()).unwrap();
    let listener = std::net::TcpListener::bind(config.listen).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            crashbox::server::run(listener, app, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
    });
    let admin_token = admin_token(&config.data_dir);
    let agent = agent();
    TestApp {
        url: format!("http://{addr}"),
        admin_token,
        root,
        shutdown: Some(tx),
        thread: Some(thread),
        agent,
    }
}

impl TestApp {
    /// Stops the server (gracefully) and hands back its directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.shut_down();
        let root = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.root, root)
    }

    fn shut_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// A request with extra headers; the body is sent when given.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        self.request_full(method, path, headers, body).0
    }

    /// [`TestApp::request`], also handing back the answer's headers.
    pub fn request_full(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (Reply, ureq::http::HeaderMap) {
        let url = format!("{}{path}", self.url);
        let result = match (method, body) {
            ("GET", _) => {
                let mut req = self.agent.get(url);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                req.call()
            }
            (_, body) => {
                let mut req = self.agent.post(url);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                req.send(body.unwrap_or_default())
            }
        };
        let response = result.expect("transport error");
        let answer_headers = response.headers().clone();
        (reply(Ok(response)), answer_headers)
    }

    /// The value of one Prometheus sample from `/metrics`, e.g.
    /// `crashbox_sentry_events_total{outcome="crash"}`; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = self.get("/metrics", None).body;
        let text = text.as_str().unwrap_or_default();
        text.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn dsyms_dir(&self) -> PathBuf {
        self.root.path().join("dsyms")
    }

    /// A new token of `scope` made the way an operator makes one.
    pub fn token(&self, scope: crashbox::auth::Scope) -> String {
        crashbox::auth::TokenStore::open(&self.data_dir())
            .unwrap()
            .create(scope)
            .unwrap()
            .token
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.agent.get(format!("{}{path}", self.url));
        if let Some(token) = token {
            req = req.header("Authorization", &format!("Bearer {token}"));
        }
        reply(req.call())
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &[u8]) -> Reply {
        let mut req = self.agent.post(format!("{}{path}", self.url));
        if let Some(token) = token {
            req = req.header("Authorization", &format!("Bearer {token}"));
        }
        reply(req.send(body))
    }

    pub fn patch(&self, path: &str, token: Option<&str>, body: &[u8]) -> Reply {
        let mut req = self.agent.patch(format!("{}{path}", self.url));
        if let Some(token) = token {
            req = req.header("Authorization", &format!("Bearer {token}"));
        }
        reply(req.send(body))
    }

    /// `POST /api/v1/dsyms` with the admin token.
    pub fn post_dsyms(&self, query: &str, body: &[u8]) -> Reply {
        self.post(
            &format!("/api/v1/dsyms{query}"),
            Some(&self.admin_token.clone()),
            body,
        )
    }

    /// `GET /api/v1/dsyms` with the admin token: the listed (debug id, arch) pairs.
    pub fn listed(&self) -> Vec<(String, String)> {
        let reply = self.get("/api/v1/dsyms", Some(&self.admin_token));
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        listed_pairs(&reply.body)
    }

    /// Every file under the dsyms dir's `objects/`, to prove a rejected upload left no
    /// trace.
    pub fn stored_objects(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.dsyms_dir().join("objects")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.push(path);
                }
            }
        }
        out.sort();
        out
    }
}

/// A response as status and JSON (or the text, when it is not JSON).
pub fn reply(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let response = result.expect("transport error");
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, body }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Builds a zip in memory from `(name, bytes)` entries, deflated.
pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Zips a directory tree with its own name as the top folder, like `zip -r`.
pub fn zip_dir(dir: &Path) -> Vec<u8> {
    let mut entries = Vec::new();
    let top = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut stack = vec![(dir.to_owned(), top)];
    while let Some((path, name)) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            let child = format!("{name}/{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                stack.push((entry.path(), child));
            } else {
                entries.push((child, std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    zip_of(&refs)
}

/// The `(debug id, arch)` pairs `llvm-dwarfdump --uuid` reports for a file: the ground
/// truth the index must match.
pub fn dwarfdump_uuids(path: &Path) -> Vec<(String, String)> {
    let out = std::process::Command::new("llvm-dwarfdump")
        .arg("--uuid")
        .arg(path)
        .output()
        .expect("llvm-dwarfdump is installed (scripts/test.sh installs it)");
    assert!(out.status.success());
    let mut pairs: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "UUID: 54039061-A983-3323-A49D-837A894D667F (arm64) path"
            let rest = line.strip_prefix("UUID: ")?;
            let (uuid, rest) = rest.split_once(' ')?;
            let arch = rest.strip_prefix('(')?.split_once(')')?.0;
            Some((uuid.to_ascii_lowercase(), arch.to_owned()))
        })
        .collect();
    pairs.sort();
    pairs
}

/// The admin token `serve` made on first start in `data_dir`.
pub fn admin_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// An HTTP client that hands back 4xx/5xx answers instead of failing on them.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// The sorted (debug id, arch) pairs of a `GET /api/v1/dsyms` answer.
pub fn listed_pairs(listing: &Value) -> Vec<(String, String)> {
    let mut out: Vec<_> = listing["debug_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["debug_id"].as_str().unwrap().to_owned(),
                f["arch"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The real `crashbox` binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_crashbox");

/// A `crashbox serve` child process, killed on drop. Its log lines are kept.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub url: String,
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real binary on a free port over `root/data` and `root/dsyms`.
pub fn serve(root: &Path) -> ServeProcess {
    serve_with(root, &[])
}

/// [`serve`] with extra environment variables (`CRASHBOX_*` settings).
pub fn serve_with(root: &Path, env: &[(&str, &str)]) -> ServeProcess {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CRASHBOX_DATA_DIR", root.join("data"))
        .env("CRASHBOX_DSYMS_DIR", root.join("dsyms"))
        .env("RUST_LOG", "crashbox=debug,info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(pos) = line.find("listening on http://") {
                let url = line[pos + "listening on ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned();
                let _ = tx.send(url);
            }
            sink.lock().unwrap().push(line);
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server did not report its address");
    ServeProcess { child, url, logs }
}

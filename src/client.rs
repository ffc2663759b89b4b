//! The HTTP client behind `crashbox upload-dsyms` and `send-crash`. Blocking,
//! because a CLI has nothing else to do while it waits.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("request to {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("the server answered {status}: {message}")]
    Rejected {
        status: u16,
        message: String,
        body: Value,
    },
}

/// A crashbox server and the token to talk to it.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// One answer: the status and the JSON body.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Client {
    pub fn new(base_url: &str, token: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(3600)))
            .build()
            .into();
        Client {
            base: base_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            agent,
        }
    }

    /// Uploads one path: a file is sent as it is (zip, Mach-O, ELF, Breakpad); a
    /// directory (a `.dSYM` bundle, an `.xcarchive`, a folder of them) is zipped first,
    /// into a temporary file, never into memory.
    pub fn upload_debug_files(
        &self,
        path: &Path,
        release: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let io_err = |source| ClientError::Io {
            path: path.to_owned(),
            source,
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (file, _tmp) = if path.is_dir() {
            let tmp = tempfile::NamedTempFile::new().map_err(io_err)?;
            zip_dir(path, tmp.as_file()).map_err(io_err)?;
            (tmp.reopen().map_err(io_err)?, Some(tmp))
        } else {
            (File::open(path).map_err(io_err)?, None)
        };
        let mut url = format!("{}/api/v1/dsyms?name={}", self.base, encode(&name));
        if let Some(release) = release {
            url.push_str(&format!("&release={}", encode(release)));
        }
        self.send(&url, file)
    }

    /// Sends one crash report file as it is; the server detects its format.
    pub fn send_crash(&self, path: &Path) -> Result<Answer, ClientError> {
        let file = File::open(path).map_err(|source| ClientError::Io {
            path: path.to_owned(),
            source,
        })?;
        self.send(&format!("{}/api/v1/crashes", self.base), file)
    }

    /// `GET {path}` (a path with its query, from `/api/v1/…`), as JSON.
    pub fn get_json(&self, path: &str) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .call();
        Self::answer(&url, response)
    }

    /// `POST` or `PATCH` a JSON body to `path`.
    pub fn send_json(&self, method: &str, path: &str, body: &Value) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "PATCH" => self.agent.patch(&url),
            _ => self.agent.post(&url),
        };
        let response = request
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes());
        Self::answer(&url, response)
    }

    fn send(&self, url: &str, body: File) -> Result<Answer, ClientError> {
        let response = self
            .agent
            .post(url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/octet-stream")
            .send(body);
        Self::answer(url, response)
    }

    fn answer(
        url: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer, ClientError> {
        let response = response.map_err(|e| ClientError::Transport {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let message = body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no error message")
                .to_owned();
            return Err(ClientError::Rejected {
                status,
                message,
                body,
            });
        }
        Ok(Answer { status, body })
    }
}

/// Percent-encodes a query value or a path segment (the web UI's links use it too).
pub use crate::util::percent_encode as encode;

/// Zips `dir` into `out`, keeping the directory's own name as the top-level folder so
/// that `Foo.dSYM/Contents/Resources/DWARF/Foo` keeps its meaning. Symlinks are skipped.
fn zip_dir(dir: &Path, out: &File) -> io::Result<()> {
    let top = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "upload".to_owned());
    let mut zip = zip::ZipWriter::new(io::BufWriter::new(out));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(true);
    let mut stack = vec![(dir.to_owned(), top)];
    while let Some((path, name)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&path)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let kind = entry.file_type()?;
            let child = format!("{name}/{}", entry.file_name().to_string_lossy());
            if kind.is_dir() {
                stack.push((entry.path(), child));
            } else if kind.is_file() {
                zip.start_file(child, options).map_err(io::Error::other)?;
                io::copy(&mut File::open(entry.path())?, &mut zip)?;
            }
        }
    }
    zip.finish().map_err(io::Error::other)?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode("com.example.app 1.2.0 (42)"),
            "com.example.app%201.2.0%20%2842%29"
        );
    }
}

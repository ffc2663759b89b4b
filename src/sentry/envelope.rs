//! The Sentry envelope: `HeaderJSON\n`, then items `ItemHeaderJSON\nPayload\n`.
//!
//! An item's `length` counts its payload bytes; without it the payload runs to the next
//! newline. The final newline is optional. The body is read as a stream through its
//! decompressor: event and session payloads are kept (each bounded), every other item
//! (attachments: screenshots, view hierarchies) is read past without being held, so a
//! large attachment costs no memory and the crash beside it is still kept. The whole
//! decompressed stream is capped, so a compression bomb stops at the cap.

use std::io::{self, BufRead, BufReader, Read};

use serde::Deserialize;

/// Longest envelope or item header line.
const MAX_HEADER_BYTES: usize = 64 << 10;

/// Largest session or session-aggregate payload: a session is a few hundred bytes.
pub const MAX_SESSION_BYTES: usize = 64 << 10;

/// How a body is compressed (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    /// HTTP's `deflate`: zlib-wrapped.
    Deflate,
    Brotli,
    Zstd,
}

impl Encoding {
    /// The encoding a `Content-Encoding` value names.
    pub fn from_header(value: Option<&str>) -> Result<Self, EnvelopeError> {
        let value = value.unwrap_or("").trim().to_ascii_lowercase();
        Ok(match value.as_str() {
            "" | "identity" => Encoding::Identity,
            "gzip" | "x-gzip" => Encoding::Gzip,
            "deflate" => Encoding::Deflate,
            "br" => Encoding::Brotli,
            "zstd" => Encoding::Zstd,
            other => {
                return Err(EnvelopeError::Encoding(format!(
                    "unsupported Content-Encoding `{}` (gzip, deflate, br, zstd or none)",
                    other.chars().take(32).collect::<String>()
                )))
            }
        })
    }
}

/// Bounds on what one envelope may make the server do.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Decompressed bytes read from one body, items skipped included.
    pub max_decompressed: u64,
    /// Largest event payload (the crash report limit).
    pub max_event: usize,
}

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("{0}")]
    Encoding(String),
    #[error("the body does not decompress: {0}")]
    Decompress(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("malformed envelope: {0}")]
    Malformed(String),
}

impl EnvelopeError {
    /// A stable machine-readable name, for API answers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            EnvelopeError::Encoding(_) => "unsupported_encoding",
            EnvelopeError::Decompress(_) => "invalid_compression",
            EnvelopeError::TooLarge(_) => "envelope_too_large",
            EnvelopeError::Malformed(_) => "invalid_envelope",
        }
    }
}

/// Item types, as metric labels: a fixed set, whatever clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Event,
    Session,
    Sessions,
    Attachment,
    ClientReport,
    Transaction,
    Other,
}

impl ItemKind {
    fn of(ty: &str) -> Self {
        match ty {
            "event" => ItemKind::Event,
            "session" => ItemKind::Session,
            "sessions" => ItemKind::Sessions,
            "attachment" => ItemKind::Attachment,
            "client_report" => ItemKind::ClientReport,
            "transaction" => ItemKind::Transaction,
            _ => ItemKind::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Event => "event",
            ItemKind::Session => "session",
            ItemKind::Sessions => "sessions",
            ItemKind::Attachment => "attachment",
            ItemKind::ClientReport => "client_report",
            ItemKind::Transaction => "transaction",
            ItemKind::Other => "other",
        }
    }

    /// Largest payload kept for this kind; `None` for kinds that are skipped.
    fn keep_limit(self, limits: &Limits) -> Option<usize> {
        match self {
            ItemKind::Event => Some(limits.max_event),
            ItemKind::Session | ItemKind::Sessions => Some(MAX_SESSION_BYTES),
            _ => None,
        }
    }
}

/// The parts of an envelope crashbox uses.
#[derive(Debug, Default)]
pub struct Envelope {
    /// The header's `event_id`, if any.
    pub event_id: Option<String>,
    /// The public key of the header's `dsn`, if any.
    pub dsn_key: Option<String>,
    /// Event payloads (JSON), in order.
    pub events: Vec<Vec<u8>>,
    /// Session (`session`) and aggregate (`sessions`) payloads.
    pub sessions: Vec<(ItemKind, Vec<u8>)>,
    /// Items read past without keeping them.
    pub skipped: Vec<ItemKind>,
}

#[derive(Deserialize)]
struct EnvelopeHeader {
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    dsn: Option<String>,
}

#[derive(Deserialize)]
struct ItemHeader {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    length: Option<u64>,
}

/// Counts decompressed bytes and fails past the cap; notes whether the decompressor
/// itself failed (so a body that is no gzip is told from an envelope cut short).
struct Capped<R> {
    inner: R,
    left: u64,
    exceeded: bool,
    failed: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte past the cap is enough to know it was passed.
        let room = usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(err) => {
                self.failed = true;
                return Err(err);
            }
        };
        if n as u64 > self.left {
            self.exceeded = true;
            return Err(io::Error::other("decompressed size limit"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

type Reader<'a> = BufReader<Capped<Box<dyn Read + 'a>>>;

fn decoder<'a>(body: &'a [u8], encoding: Encoding, cap: u64) -> Result<Reader<'a>, EnvelopeError> {
    let inner: Box<dyn Read + 'a> = match encoding {
        Encoding::Identity => Box::new(body),
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(body)),
        Encoding::Brotli => Box::new(brotli_decompressor::Decompressor::new(body, 4096)),
        Encoding::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|e| EnvelopeError::Decompress(e.to_string()))?,
        ),
    };
    Ok(BufReader::with_capacity(
        64 << 10,
        Capped {
            inner,
            left: cap,
            exceeded: false,
            failed: false,
        },
    ))
}

/// Maps a read error: past the cap, too large; anything else is the compression.
fn read_error(err: io::Error, reader: &Reader<'_>, cap: u64) -> EnvelopeError {
    if reader.get_ref().exceeded {
        EnvelopeError::TooLarge(format!(
            "the envelope decompresses to more than {cap} bytes"
        ))
    } else if reader.get_ref().failed {
        EnvelopeError::Decompress(err.to_string())
    } else if err.kind() == io::ErrorKind::UnexpectedEof {
        EnvelopeError::Malformed("an item is cut short".into())
    } else {
        EnvelopeError::Decompress(err.to_string())
    }
}

/// Reads up to the next `\n` (not included) or the end. `None` at the end with nothing
/// read. With `keep` false the bytes are dropped as they are read; with `keep`, more
/// than `max` bytes is an error.
fn read_line(reader: &mut impl BufRead, max: usize, keep: bool) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut seen = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(seen.then_some(line));
        }
        seen = true;
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (at, true),
            None => (available.len(), false),
        };
        if keep {
            if line.len() + take > max {
                return Err(io::Error::new(io::ErrorKind::InvalidData, LINE_TOO_LONG));
            }
            line.extend_from_slice(&available[..take]);
        }
        reader.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Some(line));
        }
    }
}

const LINE_TOO_LONG: &str = "line too long";

fn is_line_too_long(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::InvalidData && err.to_string() == LINE_TOO_LONG
}

/// Reads an envelope from `body`.
pub fn read(body: &[u8], encoding: Encoding, limits: &Limits) -> Result<Envelope, EnvelopeError> {
    let cap = limits.max_decompressed;
    let mut reader = decoder(body, encoding, cap)?;
    let header = match read_line(&mut reader, MAX_HEADER_BYTES, true) {
        Ok(Some(line)) => line,
        Ok(None) => return Err(EnvelopeError::Malformed("the body is empty".into())),
        Err(err) if is_line_too_long(&err) => {
            return Err(EnvelopeError::Malformed(
                "the envelope header is too long".into(),
            ))
        }
        Err(err) => return Err(read_error(err, &reader, cap)),
    };
    let header: EnvelopeHeader = serde_json::from_slice(&header)
        .map_err(|e| EnvelopeError::Malformed(format!("the envelope header: {e}")))?;
    let mut envelope = Envelope {
        event_id: header.event_id,
        dsn_key: header.dsn.as_deref().and_then(dsn_key),
        ..Envelope::default()
    };
    loop {
        let line = match read_line(&mut reader, MAX_HEADER_BYTES, true) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(err) if is_line_too_long(&err) => {
                return Err(EnvelopeError::Malformed(
                    "an item header is too long".into(),
                ))
            }
            Err(err) => return Err(read_error(err, &reader, cap)),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            // A trailing newline after the last payload, or a blank line between items.
            continue;
        }
        let item: ItemHeader = serde_json::from_slice(&line)
            .map_err(|e| EnvelopeError::Malformed(format!("an item header: {e}")))?;
        let kind = ItemKind::of(&item.ty);
        let keep = kind.keep_limit(limits);
        let payload = match (item.length, keep) {
            (Some(length), Some(max)) => {
                if length > max as u64 {
                    return Err(EnvelopeError::TooLarge(format!(
                        "a `{}` item of {length} bytes, over the limit of {max}",
                        kind.as_str()
                    )));
                }
                let mut payload = vec![0u8; length as usize];
                reader
                    .read_exact(&mut payload)
                    .map_err(|e| read_error(e, &reader, cap))?;
                skip_newline(&mut reader).map_err(|e| read_error(e, &reader, cap))?;
                Some(payload)
            }
            (Some(length), None) => {
                let copied = {
                    let mut item = (&mut reader).take(length);
                    io::copy(&mut item, &mut io::sink())
                };
                let copied = copied.map_err(|e| read_error(e, &reader, cap))?;
                if copied < length {
                    return Err(EnvelopeError::Malformed("an item is cut short".into()));
                }
                skip_newline(&mut reader).map_err(|e| read_error(e, &reader, cap))?;
                None
            }
            (None, keep) => {
                let line = match read_line(&mut reader, keep.unwrap_or(0), keep.is_some()) {
                    Ok(line) => line.unwrap_or_default(),
                    Err(err) if is_line_too_long(&err) => {
                        return Err(EnvelopeError::TooLarge(format!(
                            "a `{}` item over the limit of {} bytes",
                            kind.as_str(),
                            keep.unwrap_or(0)
                        )))
                    }
                    Err(err) => return Err(read_error(err, &reader, cap)),
                };
                keep.map(|_| line)
            }
        };
        match (kind, payload) {
            (ItemKind::Event, Some(payload)) => envelope.events.push(payload),
            (ItemKind::Session | ItemKind::Sessions, Some(payload)) => {
                envelope.sessions.push((kind, payload))
            }
            (kind, _) => envelope.skipped.push(kind),
        }
    }
    Ok(envelope)
}

/// Decompresses a plain body (the `store` endpoint's event JSON), at most `max` bytes.
pub fn decompress(body: &[u8], encoding: Encoding, max: u64) -> Result<Vec<u8>, EnvelopeError> {
    let mut reader = decoder(body, encoding, max)?;
    let mut out = Vec::new();
    match reader.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(err) => Err(read_error(err, &reader, max)),
    }
}

/// Consumes the newline that may follow a payload.
fn skip_newline(reader: &mut impl BufRead) -> io::Result<()> {
    if reader.fill_buf()?.first() == Some(&b'\n') {
        reader.consume(1);
    }
    Ok(())
}

/// The public key of a DSN, `scheme://KEY[:secret]@host/…`.
pub fn dsn_key(dsn: &str) -> Option<String> {
    let rest = dsn.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let key = userinfo.split(':').next()?;
    (!key.is_empty()).then(|| key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIMITS: Limits = Limits {
        max_decompressed: 1 << 20,
        max_event: 1024,
    };

    fn check(body: &[u8], events: &[&str], sessions: usize, skipped: &[ItemKind]) {
        let envelope = read(body, Encoding::Identity, &LIMITS).unwrap();
        let got: Vec<String> = envelope
            .events
            .iter()
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect();
        assert_eq!(got, events, "{}", String::from_utf8_lossy(body));
        assert_eq!(envelope.sessions.len(), sessions);
        assert_eq!(envelope.skipped, skipped);
    }

    #[test]
    fn framing_with_and_without_lengths() {
        use ItemKind::*;
        // Lengths, no final newline (cocoa), a binary attachment holding newlines.
        check(
            b"{\"event_id\":\"e\"}\n{\"type\":\"event\",\"length\":7}\n{\"a\":1}\n{\"type\":\"attachment\",\"length\":5}\n\n\n\n\n\n{\"type\":\"session\",\"length\":2}\n{}",
            &["{\"a\":1}"],
            1,
            &[Attachment],
        );
        // No lengths: payloads run to the newline; a final newline; unknown types.
        check(
            b"{}\n{\"type\":\"event\"}\n{\"b\":2}\n{\"type\":\"profile_chunk\"}\n{\"x\":1}\n",
            &["{\"b\":2}"],
            0,
            &[Other],
        );
        // An empty payload at the very end.
        check(b"{}\n{\"type\":\"client_report\"}", &[], 0, &[ClientReport]);
    }

    #[test]
    fn bad_envelopes_are_refused() {
        for (body, code) in [
            (&b""[..], "invalid_envelope"),
            (b"not json\n", "invalid_envelope"),
            (
                b"{}\n{\"type\":\"event\",\"length\":100}\n{}",
                "invalid_envelope",
            ),
            (
                b"{}\n{\"type\":\"attachment\",\"length\":100}\nabc",
                "invalid_envelope",
            ),
            (b"{}\n{\"length\":1}\nx", "invalid_envelope"),
            (
                b"{}\n{\"type\":\"event\",\"length\":2000}\n",
                "envelope_too_large",
            ),
        ] {
            let err = read(body, Encoding::Identity, &LIMITS).unwrap_err();
            assert_eq!(err.code(), code, "{}: {err}", String::from_utf8_lossy(body));
        }
        let long_event = format!("{{}}\n{{\"type\":\"event\"}}\n{}", "x".repeat(2000));
        let err = read(long_event.as_bytes(), Encoding::Identity, &LIMITS).unwrap_err();
        assert_eq!(err.code(), "envelope_too_large");
    }

    #[test]
    fn compressed_bodies_decode_and_bombs_stop_at_the_cap() {
        let body = b"{}\n{\"type\":\"event\",\"length\":2}\n{}";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body).unwrap();
        let gz = gz.finish().unwrap();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(body).unwrap();
        let zlib = zlib.finish().unwrap();
        let zst = zstd::stream::encode_all(&body[..], 1).unwrap();
        for (bytes, encoding) in [
            (gz, Encoding::Gzip),
            (zlib, Encoding::Deflate),
            (zst, Encoding::Zstd),
        ] {
            let envelope = read(&bytes, encoding, &LIMITS).unwrap();
            assert_eq!(envelope.events, vec![b"{}".to_vec()], "{encoding:?}");
        }
        // 4 MiB of zeros in an attachment, over the 1 MiB cap: skipped items count
        // towards the cap too.
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        bomb.write_all(b"{}\n{\"type\":\"attachment\",\"length\":4194304}\n")
            .unwrap();
        bomb.write_all(&vec![0u8; 4 << 20]).unwrap();
        let bomb = bomb.finish().unwrap();
        assert!(bomb.len() < 100_000);
        let err = read(&bomb, Encoding::Gzip, &LIMITS).unwrap_err();
        assert_eq!(err.code(), "envelope_too_large");
        assert_eq!(
            read(b"\x1f\x8bnot gzip", Encoding::Gzip, &LIMITS)
                .unwrap_err()
                .code(),
            "invalid_compression"
        );
        assert!(Encoding::from_header(Some("compress")).is_err());
    }

    #[test]
    fn dsn_keys() {
        assert_eq!(
            dsn_key("http://cbx_abc@127.0.0.1:8080/1").as_deref(),
            Some("cbx_abc")
        );
        assert_eq!(
            dsn_key("https://pk:sk@host/prefix/1").as_deref(),
            Some("pk")
        );
        assert_eq!(dsn_key("https://host/1"), None);
    }
}

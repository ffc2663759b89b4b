//! Webhooks (docs/webhooks.md): subscriptions for the API, and the delivery worker.
//!
//! Events are decided and queued by the store, in the transaction of the crashes that
//! cause them (`store::webhooks`). This module sends them: a dispatcher thread reads
//! due outbox rows on the read pool, hands them to a fixed pool of sender threads (the
//! bound on concurrent deliveries), and each sender POSTs one delivery with a timeout
//! per attempt, then reports the outcome through a writer job. Intake never waits for
//! any of it: a dead receiver only grows the outbox.
//!
//! Addresses are checked where they are used: a custom resolver ([`GuardedResolver`])
//! resolves the host and refuses link-local and metadata addresses before ureq
//! connects to exactly the addresses it returned, so DNS cannot swap in a forbidden
//! address between a check and the connect.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::config::WebhookConfig;
use crate::store::{
    AttemptOutcome, Delivery, DueDelivery, Store, Webhook, EVENTS, EVENT_NEW, EVENT_REGRESSED,
    EVENT_SPIKE,
};
use crate::triage::TriageError;

/// Longest webhook URL accepted.
const MAX_URL: usize = 2048;
/// Longest secret accepted.
const MAX_SECRET: usize = 256;
/// Deliveries a listing shows.
const DELIVERIES_LISTED: usize = 200;
/// How often the dispatcher looks for due deliveries when nothing wakes it.
const POLL: Duration = Duration::from_millis(200);
/// Delivered and failed rows are kept this long for `GET …/deliveries`.
const KEEP_FINISHED: Duration = Duration::from_secs(30 * 24 * 3600);
/// The first retry waits about this long; each further one twice as long as the last.
const FIRST_BACKOFF_MS: u64 = 1_000;
/// Bytes of a receiver's answer read (and kept in `last_error`).
const ANSWER_BYTES: u64 = 512;

/// `POST /api/v1/webhooks`' body.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    pub url: String,
    pub events: Vec<String>,
    #[serde(default)]
    pub secret: Option<String>,
}

/// A webhook as the API shows it: never its secret.
pub fn webhook_json(w: &Webhook) -> Value {
    json!({
        "id": w.id,
        "url": w.url,
        "events": w.events,
        "has_secret": w.has_secret,
        "created_at": w.created_at,
    })
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "delivery_id": d.delivery_id,
        "event": d.event,
        "group_id": d.group_id,
        "crash_id": d.crash_id,
        "created_at": d.created_at,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at,
        "last_attempt_at": d.last_attempt_at,
        "last_error": d.last_error,
    })
}

/// Checks a URL: `http` or `https`, a host, no user info, not too long; a host that is
/// an IP literal must be an address deliveries may reach. Hostnames are checked on
/// every connect instead (they may resolve elsewhere later).
pub fn check_url(url: &str, allow_link_local: bool) -> Result<(), String> {
    if url.len() > MAX_URL {
        return Err(format!("url: longer than {MAX_URL} bytes"));
    }
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("url: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("url: only http and https URLs are accepted".into()),
    }
    let Some(authority) = uri.authority() else {
        return Err("url: no host".into());
    };
    if authority.as_str().contains('@') {
        return Err("url: user info is not accepted".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err("url: no host".into());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        if let Some(why) = refused(ip, allow_link_local) {
            return Err(format!("url: {why}"));
        }
    }
    Ok(())
}

/// Why deliveries may not go to `ip`, if they may not. Loopback and private ranges are
/// allowed (a self-hosted server's receivers are usually internal); link-local and
/// cloud metadata addresses only with `allow_link_local`; unspecified, multicast and
/// broadcast never (docs/webhooks.md, "Which addresses").
pub fn refused(ip: IpAddr, allow_link_local: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4, allow_link_local),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4, allow_link_local);
            }
            if v6.is_unspecified() {
                return Some("the unspecified address is refused");
            }
            if v6.is_multicast() {
                return Some("multicast addresses are refused");
            }
            // fd00:ec2::254: the AWS instance metadata service over IPv6.
            let metadata = v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254);
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            if (metadata || link_local) && !allow_link_local {
                return Some("link-local and cloud metadata addresses are refused");
            }
            None
        }
    }
}

fn refused_v4(ip: Ipv4Addr, allow_link_local: bool) -> Option<&'static str> {
    if ip.is_unspecified() || ip.octets()[0] == 0 {
        return Some("the unspecified address is refused");
    }
    if ip.is_broadcast() || ip.is_multicast() {
        return Some("broadcast and multicast addresses are refused");
    }
    // 169.254.0.0/16 holds 169.254.169.254, the metadata service of AWS, GCP, Azure
    // and others; 100.100.100.200 is Alibaba Cloud's.
    let metadata = ip == Ipv4Addr::new(100, 100, 100, 200);
    if (ip.is_link_local() || metadata) && !allow_link_local {
        return Some("link-local and cloud metadata addresses are refused");
    }
    None
}

fn parse_events(events: &[String]) -> Result<Vec<String>, String> {
    if events.is_empty() {
        return Err(format!(
            "events: name at least one of {}",
            EVENTS.join(", ")
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for event in events {
        if !EVENTS.contains(&event.as_str()) {
            return Err(format!(
                "events: unknown event `{}`; known: {}",
                event.escape_debug(),
                EVENTS.join(", ")
            ));
        }
        if !out.contains(event) {
            out.push(event.clone());
        }
    }
    Ok(out)
}

/// `POST /api/v1/webhooks`.
pub fn create(
    store: &Store,
    request: WebhookRequest,
    config: &WebhookConfig,
    now_ms: i64,
) -> Result<Value, TriageError> {
    check_url(&request.url, config.allow_link_local).map_err(TriageError::Invalid)?;
    let events = parse_events(&request.events).map_err(TriageError::Invalid)?;
    let secret = match request.secret {
        Some(secret) if secret.is_empty() => None,
        Some(secret) if secret.len() > MAX_SECRET => {
            return Err(TriageError::Invalid(format!(
                "secret: longer than {MAX_SECRET} bytes"
            )))
        }
        other => other,
    };
    let id = crate::util::random_hex(8);
    let webhook = store.create_webhook(id, request.url, events, secret, now_ms)?;
    Ok(webhook_json(&webhook))
}

/// `GET /api/v1/webhooks`.
pub fn list(store: &Store) -> Result<Value, TriageError> {
    let hooks: Vec<Value> = store.webhooks()?.iter().map(webhook_json).collect();
    Ok(json!({ "webhooks": hooks }))
}

/// `DELETE /api/v1/webhooks/{id}`.
pub fn delete(store: &Store, id: &str) -> Result<(), TriageError> {
    if store.delete_webhook(id.to_owned())? {
        Ok(())
    } else {
        Err(TriageError::NotFound(format!("no webhook {id}")))
    }
}

/// `GET /api/v1/webhooks/{id}/deliveries`.
pub fn deliveries(store: &Store, id: &str) -> Result<Value, TriageError> {
    let Some(rows) = store.webhook_deliveries(id, DELIVERIES_LISTED)? else {
        return Err(TriageError::NotFound(format!("no webhook {id}")));
    };
    let rows: Vec<Value> = rows.iter().map(delivery_json).collect();
    Ok(json!({ "deliveries": rows }))
}

/// `sha256=<lowercase hex HMAC-SHA256 of body keyed with secret>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The one-line summary (Slack shows `text`): what happened, the title (exception and
/// crash site), where, the release, the count, and a link when a public URL is set.
pub fn summary(
    event: &str,
    group: Option<&crate::store::Group>,
    release: Option<&str>,
    detail: Option<&Value>,
    link_base: Option<&str>,
) -> String {
    let what = match event {
        EVENT_NEW => "New crash",
        EVENT_REGRESSED => "Regressed",
        EVENT_SPIKE => "Crash spike",
        other => other,
    };
    let mut line = format!("[crashbox] {what}");
    let Some(g) = group else {
        return line;
    };
    if !g.app.is_empty() {
        line.push_str(&format!(" in {}", g.app));
    }
    let title = if g.title.is_empty() {
        &g.signature
    } else {
        &g.title
    };
    line.push_str(&format!(": {title}"));
    if let Some(culprit) = &g.culprit {
        line.push_str(&format!(" at {culprit}"));
    }
    if let Some(release) = release.or(g.last_release.as_deref()) {
        line.push_str(&format!(" · release {release}"));
    }
    match detail {
        Some(d) if event == EVENT_SPIKE => line.push_str(&format!(
            " · {} crashes in the last hour (24 h average {}/h)",
            d["last_hour"], d["hourly_average"]
        )),
        _ => {}
    }
    let plural = if g.count == 1 { "" } else { "es" };
    line.push_str(&format!(" · {} crash{plural} in all", g.count));
    if let Some(base) = link_base {
        line.push_str(&format!(" · {base}/groups/{}", g.id));
    }
    // One line, whatever a title held.
    line.replace(['\n', '\r'], " ")
}

/// Resolves like ureq's default resolver, then drops every address deliveries may not
/// reach; ureq connects only to what this returns.
#[derive(Debug)]
pub struct GuardedResolver {
    allow_link_local: bool,
}

/// The marker of a connection refused by [`GuardedResolver`], so it is not retried.
const REFUSED: &str = "crashbox refused the address";

impl ureq::unversioned::resolver::Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        use ureq::unversioned::resolver::DefaultResolver;
        let resolved = DefaultResolver::default().resolve(uri, config, timeout)?;
        let mut kept = self.empty();
        let mut why = None;
        for addr in resolved.iter() {
            match refused(addr.ip(), self.allow_link_local) {
                None => kept.push(*addr),
                Some(reason) => why = Some(reason),
            }
        }
        if kept.is_empty() {
            return Err(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{REFUSED}: {}", why.unwrap_or("no address")),
            )));
        }
        Ok(kept)
    }
}

/// The HTTP client deliveries use: no proxy (the address check must see the receiver's
/// address), no redirects, 4xx/5xx as answers, the per-attempt timeout.
fn agent(config: &WebhookConfig) -> ureq::Agent {
    let ureq_config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(config.timeout))
        .user_agent(format!("crashbox-webhooks/{}", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::with_parts(
        ureq_config,
        ureq::unversioned::transport::DefaultConnector::default(),
        GuardedResolver {
            allow_link_local: config.allow_link_local,
        },
    )
}

/// What one attempt's answer means.
#[derive(Debug, PartialEq)]
enum Sent {
    Ok,
    /// Worth another attempt: a network error, a timeout, 5xx, 408, 429.
    Transient(String),
    /// Another attempt would fare no better: other 4xx, a redirect, a refused address.
    Permanent(String),
}

fn post(agent: &ureq::Agent, url: &str, body: &[u8], signature: Option<&str>) -> Sent {
    let mut request = agent.post(url).header("Content-Type", "application/json");
    if let Some(signature) = signature {
        request = request.header("X-Crashbox-Signature", signature);
    }
    match request.send(body) {
        Ok(mut answer) => {
            let status = answer.status().as_u16();
            let text = {
                use std::io::Read;
                let mut text = String::new();
                let _ = answer
                    .body_mut()
                    .as_reader()
                    .take(ANSWER_BYTES)
                    .read_to_string(&mut text);
                text.chars().filter(|c| !c.is_control()).collect::<String>()
            };
            let error = format!("HTTP {status}: {text}");
            match status {
                200..=299 => Sent::Ok,
                408 | 429 | 500..=599 => Sent::Transient(error),
                300..=399 => Sent::Permanent(format!("{error} (redirects are not followed)")),
                _ => Sent::Permanent(error),
            }
        }
        Err(err) => {
            let text = err.to_string();
            if text.contains(REFUSED) {
                Sent::Permanent(text)
            } else {
                Sent::Transient(text)
            }
        }
    }
}

/// An error as logs may show it: a receiver's answer text stays out (it is kept only
/// in the delivery's `last_error`).
fn loggable(error: &str) -> &str {
    match error.find("HTTP ") {
        Some(at) => error[at..].split(':').next().unwrap_or(error),
        None => error,
    }
}

/// The wait before attempt `attempts + 1`: 1 s doubling per attempt up to `max`, with
/// jitter (half to all of it), so receivers coming back are not hit all at once.
fn backoff(attempts: u32, max: Duration) -> Duration {
    let exp = FIRST_BACKOFF_MS.saturating_mul(1u64 << attempts.min(30));
    let capped = exp.min(u64::try_from(max.as_millis()).unwrap_or(u64::MAX));
    let jittered = capped / 2 + rand::random::<u64>() % (capped / 2 + 1);
    Duration::from_millis(jittered.max(1))
}

fn now_ms() -> i64 {
    crate::store::unix_ms(time::OffsetDateTime::now_utc())
}

/// Builds a delivery's body (the group as it is now) and sends it once.
fn attempt(
    store: &Store,
    agent: &ureq::Agent,
    delivery: &DueDelivery,
    link_base: Option<&str>,
) -> Sent {
    let now = now_ms();
    let group = match store.current_group(&delivery.group_id, now) {
        Ok(group) => group,
        Err(err) => return Sent::Transient(format!("reading the group: {err}")),
    };
    let detail: Option<Value> = delivery
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok());
    let text = summary(
        &delivery.event,
        group.as_ref(),
        delivery.release.as_deref(),
        detail.as_ref(),
        link_base,
    );
    let mut body = json!({
        "event": delivery.event,
        "delivery_id": delivery.delivery_id,
        "group": group.as_ref().map(crate::triage::group_json),
        "text": text,
    });
    if let Some(map) = body.as_object_mut() {
        if let Some(crash_id) = &delivery.crash_id {
            map.insert("crash_id".into(), json!(crash_id));
        }
        if let Some(release) = &delivery.release {
            map.insert("release".into(), json!(release));
        }
        if let Some(detail) = detail {
            map.insert("spike".into(), detail);
        }
    }
    let body = body.to_string().into_bytes();
    let signature = delivery.secret.as_deref().map(|s| signature(s, &body));
    post(agent, &delivery.url, &body, signature.as_deref())
}

/// What to record after an attempt.
fn outcome(sent: Sent, delivery: &DueDelivery, config: &WebhookConfig, now: i64) -> AttemptOutcome {
    let error = match sent {
        Sent::Ok => return AttemptOutcome::Delivered,
        Sent::Permanent(error) => return AttemptOutcome::Failed { error },
        Sent::Transient(error) => error,
    };
    let deadline = delivery
        .created_ms
        .saturating_add(i64::try_from(config.retry_for.as_millis()).unwrap_or(i64::MAX));
    if now >= deadline {
        return AttemptOutcome::Failed {
            error: format!("gave up after {} attempts: {error}", delivery.attempts + 1),
        };
    }
    let wait = backoff(delivery.attempts, config.max_backoff);
    let at_ms = now
        .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
        .min(deadline);
    AttemptOutcome::Retry { at_ms, error }
}

/// Starts the dispatcher and `config.concurrency` senders. They stop once `wakeups`'
/// sender is dropped (with the last `App`).
pub fn spawn_worker(
    store: Store,
    config: WebhookConfig,
    link_base: Option<String>,
    wakeups: mpsc::Receiver<()>,
) {
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (jobs, queue) = mpsc::channel::<DueDelivery>();
    let queue = Arc::new(Mutex::new(queue));
    let agent = agent(&config);
    let concurrency = config.concurrency.max(1);
    for n in 0..concurrency {
        let (store, queue, in_flight, agent, link_base) = (
            store.clone(),
            queue.clone(),
            in_flight.clone(),
            agent.clone(),
            link_base.clone(),
        );
        let sender = move || loop {
            let next = match queue.lock() {
                Ok(queue) => queue.recv(),
                Err(_) => return,
            };
            let Ok(delivery) = next else {
                return;
            };
            let sent = attempt(&store, &agent, &delivery, link_base.as_deref());
            let now = now_ms();
            let outcome = outcome(sent, &delivery, &config, now);
            match &outcome {
                AttemptOutcome::Delivered => tracing::debug!(
                    webhook = %delivery.webhook_id, delivery = %delivery.delivery_id,
                    event = %delivery.event, "webhook delivered"
                ),
                AttemptOutcome::Retry { error, .. } => tracing::info!(
                    webhook = %delivery.webhook_id, delivery = %delivery.delivery_id,
                    error = %loggable(error), "webhook delivery failed; retried later"
                ),
                AttemptOutcome::Failed { error } => tracing::warn!(
                    webhook = %delivery.webhook_id, delivery = %delivery.delivery_id,
                    error = %loggable(error), "webhook delivery given up"
                ),
            }
            // Out of the in-flight set only once recorded, so it is not sent twice.
            if let Err(err) = store.finish_delivery(delivery.delivery_id.clone(), outcome, now) {
                tracing::error!(error = %err, "cannot record a webhook delivery");
            }
            if let Ok(mut set) = in_flight.lock() {
                set.remove(&delivery.delivery_id);
            }
        };
        if let Err(err) = std::thread::Builder::new()
            .name(format!("crashbox-webhook-{n}"))
            .spawn(sender)
        {
            tracing::error!(error = %err, "cannot start a webhook sender");
        }
    }
    let dispatcher = move || {
        let mut last_prune: Option<std::time::Instant> = None;
        loop {
            let busy = in_flight.lock().map(|s| s.len()).unwrap_or(concurrency);
            if busy < concurrency {
                match store.due_deliveries(now_ms(), concurrency + busy) {
                    Ok(due) => {
                        for delivery in due {
                            let mut set = match in_flight.lock() {
                                Ok(set) => set,
                                Err(_) => return,
                            };
                            if set.len() >= concurrency {
                                break;
                            }
                            if set.insert(delivery.delivery_id.clone()) {
                                drop(set);
                                if jobs.send(delivery).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Err(err) => tracing::error!(error = %err, "cannot read due webhook deliveries"),
                }
            }
            if last_prune.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
                last_prune = Some(std::time::Instant::now());
                let cutoff =
                    now_ms() - i64::try_from(KEEP_FINISHED.as_millis()).unwrap_or(i64::MAX);
                if let Err(err) = store.prune_deliveries(cutoff) {
                    tracing::error!(error = %err, "cannot prune webhook deliveries");
                }
            }
            match wakeups.recv_timeout(POLL) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                // The senders stop when `jobs` is dropped with this thread.
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    };
    if let Err(err) = std::thread::Builder::new()
        .name("crashbox-webhooks".into())
        .spawn(dispatcher)
    {
        tracing::error!(error = %err, "cannot start the webhook dispatcher");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_deliveries_may_reach() {
        let ok = |s: &str| refused(s.parse().unwrap(), false).is_none();
        for allowed in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "8.8.8.8",
            "::1",
            "fd12::1",
            "2001:db8::1",
        ] {
            assert!(ok(allowed), "{allowed}");
        }
        for refused_ip in [
            "169.254.169.254",
            "169.254.1.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "100.100.100.200",
            "::",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(!ok(refused_ip), "{refused_ip}");
        }
        assert!(refused("169.254.169.254".parse().unwrap(), true).is_none());
        assert!(refused("fe80::1".parse().unwrap(), true).is_none());
        assert!(refused("0.0.0.0".parse().unwrap(), true).is_some());
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("http://127.0.0.1:9/hook", false).is_ok());
        assert!(check_url("https://hooks.slack.com/services/T/B/X", false).is_ok());
        assert!(check_url("ftp://example.com/", false).is_err());
        assert!(check_url("file:///etc/passwd", false).is_err());
        assert!(check_url("http://169.254.169.254/latest/meta-data", false).is_err());
        assert!(check_url("http://[fe80::1]/", false).is_err());
        assert!(check_url("http://user:pw@example.com/", false).is_err());
        assert!(check_url("example.com/hook", false).is_err());
    }

    #[test]
    fn refused_addresses_are_refused_at_connect_time_and_not_retried() {
        // The resolver, not the URL check: the URL is handed to the client directly.
        let config = WebhookConfig {
            timeout: Duration::from_secs(2),
            ..WebhookConfig::default()
        };
        let agent = agent(&config);
        for url in [
            "http://169.254.169.254:1/latest",
            "http://[fe80::1]:1/",
            "http://[::ffff:169.254.169.254]:1/",
            "http://0.0.0.0:1/",
        ] {
            match post(&agent, url, b"{}", None) {
                Sent::Permanent(why) => assert!(why.contains(REFUSED), "{url}: {why}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        // An allowed address that refuses the connection is a transient failure.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        assert!(matches!(
            post(&agent, &url, b"{}", None),
            Sent::Transient(_)
        ));
    }

    #[test]
    fn signature_is_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let max = Duration::from_secs(60);
        for attempts in 0..40 {
            let wait = backoff(attempts, max);
            let full = Duration::from_millis(FIRST_BACKOFF_MS << attempts.min(30)).min(max);
            assert!(wait <= full && wait >= full / 2, "{attempts}: {wait:?}");
        }
    }

    #[test]
    fn transient_failures_retry_until_the_deadline() {
        let config = WebhookConfig {
            retry_for: Duration::from_secs(60),
            ..WebhookConfig::default()
        };
        let delivery = DueDelivery {
            delivery_id: "d".into(),
            webhook_id: "w".into(),
            url: "http://127.0.0.1:1/".into(),
            secret: None,
            event: EVENT_NEW.into(),
            group_id: "g".into(),
            crash_id: None,
            release: None,
            detail: None,
            created_ms: 1_000_000,
            attempts: 3,
        };
        match outcome(Sent::Transient("503".into()), &delivery, &config, 1_010_000) {
            AttemptOutcome::Retry { at_ms, .. } => assert!(at_ms > 1_010_000 && at_ms <= 1_060_000),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            outcome(Sent::Transient("503".into()), &delivery, &config, 1_060_000),
            AttemptOutcome::Failed { .. }
        ));
        assert!(matches!(
            outcome(Sent::Permanent("404".into()), &delivery, &config, 1_010_000),
            AttemptOutcome::Failed { .. }
        ));
        assert_eq!(
            outcome(Sent::Ok, &delivery, &config, 1_010_000),
            AttemptOutcome::Delivered
        );
    }
}

//! Crash intake at a fixed rate over HTTP (`benches/triage.sh`): POSTs the load test's
//! `.ips` template (`benches/load/gen_report.py`, a fresh incident id per request, so
//! each is a new crash) to `/api/v1/crashes` at RATE reports/s in total, from THREADS
//! threads with one keep-alive connection each, for SECONDS. Each thread sends on a
//! fixed schedule and a latency counts from when its request was due, so a slow answer
//! does not lower the offered load (no coordinated omission). wrk2 is not available
//! here; wrk's `delay()` waits after each answer, which is not a fixed rate.
//!
//! Prints the rate kept, p50/p99/max latency and the answers that were not 2xx.
//!
//! `cargo run --release --example intake_pace -- URL TOKEN REPORT RATE SECONDS [THREADS]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(6..=7).contains(&args.len()) {
        eprintln!("usage: intake_pace URL TOKEN REPORT RATE SECONDS [THREADS]");
        std::process::exit(2);
    }
    let url = format!("{}/api/v1/crashes", args[1].trim_end_matches('/'));
    let token = args[2].clone();
    let template = std::fs::read_to_string(&args[3]).expect("report");
    let rate: f64 = args[4].parse().expect("RATE");
    let seconds: f64 = args[5].parse().expect("SECONDS");
    let threads: u32 = args.get(6).map_or(32, |t| t.parse().expect("THREADS"));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(seconds);
    let interval = Duration::from_secs_f64(threads as f64 / rate);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (url, token, template, failed) =
                (url.clone(), token.clone(), template.clone(), failed.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(60)))
                    .build()
                    .into();
                let mut millis = Vec::new();
                let mut due = started + interval * t / threads;
                let mut n = 0u64;
                while due < end {
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    n += 1;
                    let id = format!("{:08X}-0000-4000-8000-{n:012X}", 0x7A00_0000 + t);
                    let body = template.replace("INCIDENT_PLACEHOLDER", &id);
                    let answer = agent
                        .post(&url)
                        .header("Authorization", &format!("Bearer {token}"))
                        .header("Content-Type", "application/octet-stream")
                        .send(body.as_bytes());
                    match answer {
                        Ok(mut r) if r.status().is_success() => {
                            let _ = r.body_mut().read_to_vec();
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    millis.push(due.elapsed().as_secs_f64() * 1000.0);
                    due += interval;
                }
                millis
            })
        })
        .collect();
    let mut millis: Vec<f64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let secs = started.elapsed().as_secs_f64();
    millis.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| {
        if millis.is_empty() {
            f64::NAN
        } else {
            millis[((millis.len() - 1) as f64 * q).round() as usize]
        }
    };
    println!(
        "paced intake: asked {rate:.0}/s, sent {} in {secs:.1} s = {:.0}/s; latency from due time p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; not 2xx: {}",
        millis.len(),
        millis.len() as f64 / secs,
        p(0.5),
        p(0.99),
        p(1.0),
        failed.load(Ordering::Relaxed)
    );
}

//! Slow and idle clients (issue 14, item 5): header-read and idle keep-alive timeouts,
//! the minimum body rate and the connection cap, each configured to a second or two
//! so the tests stay fast. Every socket talks to 127.0.0.1 and is closed on return.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crashbox::config::ConnectionLimits;

use crate::support::{agent, spawn_app_with, TestApp};

fn short(limits: ConnectionLimits) -> impl FnOnce(&mut crashbox::config::Config) {
    move |config| config.connections = limits
}

fn limits() -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        min_body_rate: 1000,
        body_grace: Duration::from_secs(1),
        max_connections: 1024,
    }
}

fn connect(app: &TestApp) -> TcpStream {
    let stream = TcpStream::connect(app.url.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    stream
}

/// Reads until the server closes `stream` or `max` passes; returns what was read and
/// whether it was closed.
fn read_until_closed(stream: &mut TcpStream, max: Duration) -> (Vec<u8>, bool) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < max {
        match stream.read(&mut buf) {
            Ok(0) => return (answer, true),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (answer, true),
        }
    }
    (answer, false)
}

fn status_of(answer: &[u8]) -> Option<u16> {
    String::from_utf8_lossy(answer)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
}

#[test]
fn slowloris_headers_are_cut_off_at_the_header_read_timeout() {
    let app = spawn_app_with(short(limits()));
    let mut streams: Vec<(TcpStream, Option<Duration>)> = (0..20)
        .map(|_| {
            let mut s = connect(&app);
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .unwrap();
            (s, None)
        })
        .collect();
    let started = Instant::now();
    // One header byte every 200 ms, as the probe did once a second.
    while started.elapsed() < Duration::from_secs(5) && streams.iter().any(|(_, c)| c.is_none()) {
        for (stream, closed) in streams.iter_mut().filter(|(_, c)| c.is_none()) {
            let _ = stream.write_all(b"X");
            let mut buf = [0u8; 512];
            stream.set_nonblocking(true).unwrap();
            match stream.read(&mut buf) {
                Ok(_) => *closed = Some(started.elapsed()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *closed = Some(started.elapsed()),
            }
            stream.set_nonblocking(false).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for (_, closed) in &streams {
        let closed = closed.expect("a slowloris connection outlived 5 s");
        assert!(closed >= Duration::from_millis(700), "{closed:?}");
        assert!(closed < Duration::from_secs(4), "{closed:?}");
    }
}

#[test]
fn idle_connections_are_closed_fresh_or_kept_alive() {
    // A connection that never sends a byte: the header timer.
    let app = spawn_app_with(short(limits()));
    let mut silent = connect(&app);
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(4));
    assert!(closed, "a silent connection stayed open 4 s");
    assert!(started.elapsed() >= Duration::from_millis(700));
    drop(app);

    // Kept alive after an answer, with a long header timeout: the idle timeout.
    let app = spawn_app_with(short(ConnectionLimits {
        header_read_timeout: Duration::from_secs(30),
        ..limits()
    }));
    let mut stream = connect(&app);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(4));
    assert_eq!(status_of(&answer), Some(200), "{answer:?}");
    assert!(closed, "an idle kept-alive connection stayed open 4 s");
    assert!(started.elapsed() >= Duration::from_millis(700));
}

/// Sends `head` and `body`, then waits for the answer without sending the rest.
fn stalled_request(app: &TestApp, head: &str, body: &[u8]) -> (Option<u16>, String, Duration) {
    let mut stream = connect(app);
    write!(
        stream,
        "{head}Host: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
        app.admin_token
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let started = Instant::now();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(6));
    let text = String::from_utf8_lossy(&answer).into_owned();
    (status_of(&answer), text, started.elapsed())
}

#[test]
fn stalled_and_trickled_bodies_get_408_and_leave_no_temp_file() {
    let app = spawn_app_with(short(limits()));
    // A crash body that stops after 10 of 100,000 bytes.
    let (status, text, took) = stalled_request(
        &app,
        "POST /api/v1/crashes HTTP/1.1\r\nContent-Length: 100000\r\n",
        b"{\"bug_type",
    );
    assert_eq!(status, Some(408), "{text}");
    assert!(text.contains("body_too_slow"), "{text}");
    assert!(took < Duration::from_secs(4), "{took:?}");

    // The probe's 2 GiB Content-Length with 4 bytes sent, held with its temp file open.
    let (status, text, took) = stalled_request(
        &app,
        "POST /api/v1/dsyms HTTP/1.1\r\nContent-Length: 2147483647\r\n",
        b"PK\x03\x04",
    );
    assert_eq!(status, Some(408), "{text}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    let leftovers: Vec<_> = std::fs::read_dir(app.dsyms_dir().join("tmp"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A chunked body trickled a byte at a time.
    let mut stream = connect(&app);
    write!(
        stream,
        "POST /api/v1/crashes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.admin_token
    )
    .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    while started.elapsed() < Duration::from_secs(6) && status_of(&answer).is_none() {
        let _ = stream.write_all(b"1\r\n{\r\n");
        let (more, closed) = read_until_closed(&mut stream, Duration::from_millis(300));
        answer.extend(more);
        if closed {
            break;
        }
    }
    assert_eq!(
        status_of(&answer),
        Some(408),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn connections_past_the_cap_wait_for_a_free_slot() {
    let app = spawn_app_with(short(ConnectionLimits {
        max_connections: 4,
        ..limits()
    }));
    // Four silent connections hold every slot until the header timeout frees them.
    let holders: Vec<TcpStream> = (0..4).map(|_| connect(&app)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let reply = crate::support::reply(agent().get(format!("{}/healthz", app.url)).call());
    let waited = started.elapsed();
    assert_eq!(reply.status, 200);
    assert!(
        waited >= Duration::from_millis(500),
        "served at once: {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    drop(holders);
}

#[test]
fn normal_requests_stay_fast_under_500_slow_connections() {
    // A long header timeout so the slow connections stay for the whole measurement.
    let app = spawn_app_with(short(ConnectionLimits {
        header_read_timeout: Duration::from_secs(30),
        ..ConnectionLimits::default()
    }));
    // 500 as the probe, unless the file descriptor limit cannot hold both ends of
    // them beside the other tests running in this process.
    let count = fd_limit().map_or(500, |limit| 500.min(limit.saturating_sub(400) / 2));
    if count < 500 {
        eprintln!("only {count} slow connections: the open file limit is low");
    }
    let slow: Vec<TcpStream> = (0..count)
        .map(|_| {
            let mut s = connect(&app);
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let client = agent();
    let mut times = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let reply = crate::support::reply(client.get(format!("{}/healthz", app.url)).call());
        times.push(started.elapsed());
        assert_eq!(reply.status, 200);
    }
    times.sort();
    eprintln!(
        "healthz under {count} slow connections: median {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    assert!(times[times.len() - 1] < Duration::from_secs(1), "{times:?}");
    drop(slow);
}

/// The soft limit on open files of this process, where the platform says.
fn fd_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

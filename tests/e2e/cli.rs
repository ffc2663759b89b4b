//! The README's tour, run the way a user runs it: the real binary, a real server
//! process, `token create` while it runs, and `upload-dsyms`.

use std::process::Command;

use crate::support::{corpus, dwarfdump_uuids, fixture, listed_pairs, serve, BIN};

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `GET /api/v1/dsyms{query}` as sorted (debug id, arch) pairs.
fn list(url: &str, token: &str, query: &str) -> Vec<(String, String)> {
    let listing = ureq::get(format!("{url}/api/v1/dsyms{query}"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    listed_pairs(&serde_json::from_str(&listing).unwrap())
}

#[test]
fn readme_tour_token_create_upload_dsyms_and_list() {
    let root = tempfile::tempdir().unwrap();
    let server = serve(root.path());
    let data_dir = root.path().join("data");

    // `token create` works while the server holds the store open.
    let (ok, stdout, stderr) = run(&[
        "token",
        "create",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--scope",
        "upload",
    ]);
    assert!(ok, "{stderr}");
    let token = stdout.split_whitespace().last().unwrap().to_owned();

    // A `.dSYM` bundle directory is zipped on the fly by the client.
    let bundle = corpus("xcode-dsyms/54039061-A983-3323-A49D-837A894D667F.dSYM");
    let (ok, stdout, stderr) = run(&[
        "upload-dsyms",
        "--url",
        &server.url,
        "--token",
        &token,
        "--release",
        "io.crashprobe 1.0 (1)",
        bundle.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("stored"), "{stdout}");
    assert!(
        stdout.contains("54039061-a983-3323-a49d-837a894d667f"),
        "{stdout}"
    );

    // The whole folder again: one new, one already present.
    let (ok, stdout, stderr) = run(&[
        "upload-dsyms",
        "--url",
        &server.url,
        "--token",
        &token,
        "--json",
        corpus("xcode-dsyms").to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let mut statuses: Vec<_> = answer["debug_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["status"].as_str().unwrap().to_owned())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["already_present", "stored"]);

    // The fixtures' Xcode-style dSYMs.zip and zipped .xcarchive, each for its release.
    for (release, zip) in [
        ("com.crashbox.fixture 1.0 (1)", "dSYMs.zip"),
        (
            "com.crashbox.fixture 1.1 (2)",
            "CrashboxFixture.xcarchive.zip",
        ),
    ] {
        let path = fixture(&format!("out/{zip}"));
        let (ok, stdout, stderr) = run(&[
            "upload-dsyms",
            "--url",
            &server.url,
            "--token",
            &token,
            "--release",
            release,
            path.to_str().unwrap(),
        ]);
        assert!(ok, "{zip}: {stderr}");
        assert!(stdout.contains("stored"), "{zip}: {stdout}");
    }

    // The list matches what llvm-dwarfdump reads from the same files.
    let mut want = dwarfdump_uuids(&corpus("xcode-dsyms/54039061-A983-3323-A49D-837A894D667F.dSYM/Contents/Resources/DWARF/CrashProbeiOS"));
    want.extend(dwarfdump_uuids(&corpus("xcode-dsyms/3CD3E3CC-281E-3AF3-84EB-CDE6D56F0559.dSYM/Contents/Resources/DWARF/CrashLibiOS")));
    let mut v1 = Vec::new();
    for (build, list) in [("v1", &mut v1), ("v2", &mut want)] {
        for dwarf in [
            "CrashboxFixture.app.dSYM/Contents/Resources/DWARF/CrashboxFixture",
            "CrashboxKit.framework.dSYM/Contents/Resources/DWARF/CrashboxKit",
        ] {
            list.extend(dwarfdump_uuids(&fixture(&format!("out/{build}/{dwarf}"))));
        }
    }
    want.extend(v1.iter().cloned());
    want.sort();
    v1.sort();
    assert_eq!(list(&server.url, &token, ""), want);
    assert_eq!(
        list(
            &server.url,
            &token,
            "?release=com.crashbox.fixture%201.0%20(1)"
        ),
        v1
    );

    // A bad upload exits non-zero with the server's message.
    let junk = root.path().join("junk.bin");
    std::fs::write(&junk, b"definitely not a debug file").unwrap();
    let (ok, _, stderr) = run(&[
        "upload-dsyms",
        "--url",
        &server.url,
        "--token",
        &token,
        junk.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("400"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_server_cleanly_and_data_survives_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut server = serve(root.path());
    let admin = std::fs::read_to_string(root.path().join("data/admin-token")).unwrap();
    let bundle = corpus("xcode-dsyms/3CD3E3CC-281E-3AF3-84EB-CDE6D56F0559.dSYM");
    let (ok, _, stderr) = run(&[
        "upload-dsyms",
        "--url",
        &server.url,
        "--token",
        admin.trim(),
        bundle.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");

    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    let restarted = serve(root.path());
    let listing = ureq::get(format!(
        "{}/api/v1/dsyms/3cd3e3cc-281e-3af3-84eb-cde6d56f0559",
        restarted.url
    ))
    .header("Authorization", &format!("Bearer {}", admin.trim()))
    .call()
    .unwrap();
    assert_eq!(listing.status().as_u16(), 200);
}

#[test]
fn symbolicate_offline_prints_apple_text_and_json() {
    let report = fixture("out/reports/fixture_v1.ips");
    let dsyms = fixture("out/dSYMs.zip");
    let cache = tempfile::tempdir().unwrap();
    let args = |format: &'static str| {
        vec![
            "symbolicate".to_owned(),
            "--cache-dir".to_owned(),
            cache.path().display().to_string(),
            "--dsyms".to_owned(),
            dsyms.display().to_string(),
            "--format".to_owned(),
            format.to_owned(),
            report.display().to_string(),
        ]
    };
    let run_owned = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs)
    };
    let (ok, apple, stderr) = run_owned(args("apple"));
    assert!(ok, "{stderr}");
    assert!(apple.contains("Incident Identifier:"), "{apple}");
    assert!(apple.contains("Thread 0 Crashed:"), "{apple}");
    assert!(
        apple.contains(
            "-[CBChallengeViewController loadChallenge:] (CBChallengeViewController.mm:41)"
        ),
        "{apple}"
    );
    assert!(apple.contains("Binary Images:"), "{apple}");

    // The second run reads the SymCache cache and prints the same.
    let (ok, json, stderr) = run_owned(args("json"));
    assert!(ok, "{stderr}");
    let crash: serde_json::Value = serde_json::from_str(&json).unwrap();
    let frames = crash["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["crashed"] == true)
        .unwrap()["frames"]
        .as_array()
        .unwrap();
    assert_eq!(frames[0]["function"], "cb_read_field");
    assert_eq!(frames[0]["inlined"], true);
    assert_eq!(frames[0]["status"], "symbolicated");
    let (ok, again, _) = run_owned(args("json"));
    assert!(ok);
    assert_eq!(again, json);
}

#[test]
fn symbolicate_resolves_call_stack_symbols_by_image_name() {
    // The simplest in-app reporter: an NSException's name and reason plus
    // callStackSymbols, with no image list and no UUIDs.
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("exception.json");
    let load = 0x1041c0000u64;
    let lines = [
        "0   CoreFoundation                      0x000000018fe5e5e0 __exceptionPreprocess + 164"
            .to_owned(),
        format!(
            "1   CrashboxFixture                     0x{:016x} CrashboxFixture + {}",
            0x1041c411cu64,
            0x1041c411c - load
        ),
        format!(
            "2   CrashboxFixture                     0x{:016x} CrashboxFixture + {}",
            0x1041c40bcu64,
            0x1041c40bc - load
        ),
    ];
    let doc = serde_json::json!({
        "crashbox": 1,
        "app": {"bundle_id": "com.crashbox.fixture", "name": "CrashboxFixture", "version": "1.0", "build": "1"},
        "device_model": "iPhone15,2",
        "exception": {"name": "NSInvalidArgumentException", "reason": "boom"},
        "call_stack_symbols": lines,
    });
    std::fs::write(&report, doc.to_string()).unwrap();
    let dsyms = fixture("out/dSYMs.zip");
    let (ok, text, stderr) = run(&[
        "symbolicate",
        "--no-cache",
        "--dsyms",
        dsyms.to_str().unwrap(),
        "--format",
        "apple",
        report.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        text.contains("-[CBChallengeViewController loadChallenge:]"),
        "{text}"
    );
    assert!(
        text.contains("+[CBChallengeViewController presentChallengeLevel:]"),
        "{text}"
    );
    assert!(text.contains("__exceptionPreprocess"), "{text}");
}

#[test]
fn symbolicate_exits_non_zero_for_unreadable_reports() {
    let dir = tempfile::tempdir().unwrap();
    let dsyms = fixture("out/dSYMs.zip");
    for (name, body, want) in [
        (
            "truncated.ips",
            &b"{\"bug_type\":\"309\"}\n{\"threads\": ["[..],
            "Apple .ips: the JSON is truncated",
        ),
        (
            "binary.crash",
            &b"Incident Identifier: \xff\xfe\n"[..],
            "invalid UTF-8",
        ),
        ("empty.json", &b""[..], "empty"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let (ok, stdout, stderr) = run(&[
            "symbolicate",
            "--no-cache",
            "--dsyms",
            dsyms.to_str().unwrap(),
            path.to_str().unwrap(),
        ]);
        assert!(!ok, "{name}: {stdout}");
        assert!(
            stderr.contains(name) && stderr.contains(want),
            "{name}: {stderr}"
        );
    }
    let report = fixture("out/reports/fixture_v1.ips");
    let (ok, _, stderr) = run(&[
        "symbolicate",
        "--dsyms",
        "/no/such/dir",
        report.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("/no/such/dir"), "{stderr}");
}

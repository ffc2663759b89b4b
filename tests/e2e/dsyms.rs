//! Debug-file uploads over HTTP: what gets indexed, and what gets refused.

use crashbox::auth::Scope;

use crate::support::{
    corpus, dwarfdump_uuids, fixture, spawn_app, spawn_app_with, zip_dir, zip_of,
};

const CRASHPROBE: &str = "54039061-a983-3323-a49d-837a894d667f";
const CRASHLIB: &str = "3cd3e3cc-281e-3af3-84eb-cde6d56f0559";

fn crashprobe_dwarf() -> Vec<u8> {
    std::fs::read(corpus(
        "xcode-dsyms/54039061-A983-3323-A49D-837A894D667F.dSYM/Contents/Resources/DWARF/CrashProbeiOS",
    ))
    .unwrap()
}

#[test]
fn xcode_dsyms_zip_is_indexed_as_llvm_dwarfdump_reports() {
    let app = spawn_app();
    let dir = corpus("xcode-dsyms");
    let reply = app.post_dsyms("?release=io.crashprobe%201.0%20(1)", &zip_dir(&dir));
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let files = reply.body["debug_files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for file in files {
        assert_eq!(file["status"], "stored");
        assert_eq!(file["kind"], "dsym");
        assert_eq!(file["has_debug_info"], true);
        assert_eq!(file["has_symbols"], true);
        assert_eq!(file["releases"][0], "io.crashprobe 1.0 (1)");
    }
    // Info.plists are listed as skipped, with a reason.
    assert!(reply.body["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["reason"] == "not a debug file"));

    let mut want = Vec::new();
    for bundle in std::fs::read_dir(&dir).unwrap() {
        let dwarf = bundle.unwrap().path().join("Contents/Resources/DWARF");
        for object in std::fs::read_dir(dwarf).unwrap() {
            want.extend(dwarfdump_uuids(&object.unwrap().path()));
        }
    }
    want.sort();
    assert_eq!(app.listed(), want);

    let one = app.get(
        &format!("/api/v1/dsyms/{}", CRASHPROBE.to_uppercase()),
        Some(&app.admin_token),
    );
    assert_eq!(one.status, 200, "{:?}", one.body);
    assert_eq!(one.body["debug_files"][0]["name"], "CrashProbeiOS");
    let by_release = app.get(
        "/api/v1/dsyms?release=io.crashprobe%201.0%20(1)",
        Some(&app.admin_token),
    );
    assert_eq!(by_release.body["debug_files"].as_array().unwrap().len(), 2);
    let by_name = app.get("/api/v1/dsyms?name=crashlib", Some(&app.admin_token));
    let names: Vec<_> = by_name.body["debug_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["debug_id"].clone())
        .collect();
    assert_eq!(names, vec![serde_json::json!(CRASHLIB)]);
    assert_eq!(
        app.get("/api/v1/dsyms?release=other", Some(&app.admin_token))
            .body["debug_files"],
        serde_json::json!([])
    );
}

#[test]
fn the_same_debug_file_twice_stores_nothing_new() {
    let app = spawn_app();
    let first = app.post_dsyms("?name=CrashProbeiOS", &crashprobe_dwarf());
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(first.body["debug_files"][0]["status"], "stored");
    let objects = app.stored_objects();
    let modified: Vec<_> = objects
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();

    let again = app.post_dsyms("?name=CrashProbeiOS&release=r2%20(2)", &crashprobe_dwarf());
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["debug_files"][0]["status"], "already_present");
    assert_eq!(app.stored_objects(), objects);
    let modified_after: Vec<_> = objects
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    assert_eq!(modified, modified_after);
    // The new release is remembered without rewriting the file.
    assert_eq!(
        again.body["debug_files"][0]["releases"],
        serde_json::json!(["r2 (2)"])
    );
    assert_eq!(
        app.listed(),
        vec![(CRASHPROBE.to_owned(), "arm64".to_owned())]
    );
}

#[test]
fn a_binary_and_its_dsym_in_one_upload_keep_the_dsym() {
    let app = spawn_app();
    let dwarf = crashprobe_dwarf();
    let zip = zip_of(&[
        // The binary comes first, as `Products/` sorts before `dSYMs/` in an archive.
        (
            "X.xcarchive/Products/Applications/CrashProbe.app/CrashProbeiOS",
            &stripped_copy(&dwarf),
        ),
        (
            "X.xcarchive/dSYMs/CrashProbeiOS.app.dSYM/Contents/Resources/DWARF/CrashProbeiOS",
            &dwarf,
        ),
    ]);
    let reply = app.post_dsyms("", &zip);
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let files = reply.body["debug_files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["kind"], "dsym");
    assert!(files[0]["path"].as_str().unwrap().contains("dSYMs/"));
}

/// The same Mach-O with its DWARF sections renamed, so it reads as a binary with a
/// symbol table only: what an archive's `Products/` holds.
fn stripped_copy(dwarf: &[u8]) -> Vec<u8> {
    let mut out = dwarf.to_vec();
    let needle = b"__debug_";
    let mut i = 0;
    while let Some(pos) = out[i..].windows(needle.len()).position(|w| w == needle) {
        out[i + pos..i + pos + needle.len()].copy_from_slice(b"__nodbg_");
        i += pos + needle.len();
    }
    out
}

#[test]
fn tokens_are_checked_and_scoped() {
    let app = spawn_app();
    let body = crashprobe_dwarf();
    assert_eq!(app.post("/api/v1/dsyms", None, &body).status, 401);
    assert_eq!(
        app.post("/api/v1/dsyms", Some("cbx_wrong"), &body).status,
        401
    );
    let ingest = app.token(Scope::Ingest);
    let reply = app.post("/api/v1/dsyms", Some(&ingest), &body);
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body["error"]["code"], "insufficient_scope");
    assert_eq!(app.get("/api/v1/dsyms", Some(&ingest)).status, 403);
    let read = app.token(Scope::Read);
    assert_eq!(app.post("/api/v1/dsyms", Some(&read), &body).status, 403);
    assert_eq!(app.get("/api/v1/dsyms", Some(&read)).status, 200);
    let upload = app.token(Scope::Upload);
    assert_eq!(app.post("/api/v1/dsyms", Some(&upload), &body).status, 201);
    assert_eq!(app.get("/api/v1/dsyms", Some(&upload)).status, 200);
    assert!(app.stored_objects().len() == 2);
}

/// Sends `body` and checks it is refused with `status` and `code`, and that the store
/// is unchanged.
#[track_caller]
fn assert_refused(app: &crate::support::TestApp, body: &[u8], status: u16, code: &str) {
    let before = (app.listed(), app.stored_objects());
    let reply = app.post_dsyms("", body);
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.body["error"]["code"], code, "{:?}", reply.body);
    assert!(!reply.body["error"]["message"].as_str().unwrap().is_empty());
    assert_eq!((app.listed(), app.stored_objects()), before);
    let leftovers: Vec<_> = std::fs::read_dir(app.dsyms_dir().join("tmp"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn bad_uploads_are_refused_and_change_nothing() {
    let app = spawn_app();
    let dwarf = crashprobe_dwarf();
    assert_refused(&app, b"", 400, "empty_body");
    assert_refused(
        &app,
        b"hello, this is not a debug file at all",
        400,
        "unsupported_format",
    );
    assert_refused(
        &app,
        &zip_of(&[("ok/CrashProbeiOS", &dwarf), ("../evil", b"x")]),
        400,
        "unsafe_zip_path",
    );
    assert_refused(
        &app,
        &zip_of(&[("a/../../evil", &dwarf)]),
        400,
        "unsafe_zip_path",
    );
    assert_refused(
        &app,
        &zip_of(&[("/etc/evil", &dwarf)]),
        400,
        "unsafe_zip_path",
    );
    assert_refused(&app, &symlink_zip(), 400, "zip_symlink");
    assert_refused(
        &app,
        b"PK\x03\x04 but then nothing a zip needs",
        400,
        "invalid_zip",
    );
    // A truncated Mach-O alone is unusable.
    assert_refused(&app, &dwarf[..3000], 422, "malformed_debug_file");
    // Only junk inside a zip.
    assert_refused(
        &app,
        &zip_of(&[("readme.txt", b"hello")]),
        422,
        "no_debug_files",
    );
    // A Mach-O header followed by garbage.
    let mut garbage = dwarf[..32].to_vec();
    garbage.extend(std::iter::repeat_n(0xA5u8, 4000));
    assert_refused(&app, &garbage, 422, "malformed_debug_file");
    assert!(app.listed().is_empty());
}

#[test]
fn a_truncated_object_in_a_good_zip_is_an_error_and_the_rest_is_indexed() {
    let app = spawn_app();
    let dwarf = crashprobe_dwarf();
    let zip = zip_of(&[
        ("Good.dSYM/Contents/Resources/DWARF/CrashProbeiOS", &dwarf),
        ("Bad.dSYM/Contents/Resources/DWARF/Bad", &dwarf[..3000]),
    ]);
    let reply = app.post_dsyms("", &zip);
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(reply.body["debug_files"].as_array().unwrap().len(), 1);
    let errors = reply.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["path"], "Bad.dSYM/Contents/Resources/DWARF/Bad");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("Mach-O"),
        "{errors:?}"
    );
    assert_eq!(
        app.listed(),
        vec![(CRASHPROBE.to_owned(), "arm64".to_owned())]
    );
}

#[test]
fn zip_bombs_and_oversized_bodies_get_413() {
    let app = spawn_app_with(|config| {
        config.max_dsym_upload_bytes = 1 << 20;
        config.ingest_limits.max_uncompressed_bytes = 4 << 20;
    });
    // 2 MiB of zeros deflates about a thousandfold.
    let zeros = vec![0u8; 2 << 20];
    assert_refused(&app, &zip_of(&[("bomb.bin", &zeros)]), 413, "zip_too_large");
    // Many entries whose sum is over the total limit, each well compressible but under
    // the ratio check's size.
    let chunk = vec![7u8; 900 << 10];
    let entries: Vec<(String, &[u8])> = (0..6)
        .map(|i| (format!("f{i}"), chunk.as_slice()))
        .collect();
    let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    assert_refused(&app, &zip_of(&refs), 413, "zip_too_large");
    // A body that announces 2 GB is refused before it is read.
    let status = raw_upload(&app, "Content-Length: 2000000000\r\n", &[]);
    assert_eq!(status, 413);
    // A chunked body with no length is cut off once it passes the limit.
    let chunk = vec![b'x'; 64 << 10];
    let status = raw_upload(&app, "Transfer-Encoding: chunked\r\n", &chunk);
    assert_eq!(status, 413);
    assert!(app.listed().is_empty());
    assert!(app.stored_objects().is_empty());
}

/// Starts an upload on a raw socket with `headers`, then keeps sending `chunk` as HTTP
/// chunks until the server answers; returns the status. A real client sending a huge
/// body behaves like this, and a server must answer it without reading it all.
fn raw_upload(app: &crate::support::TestApp, headers: &str, chunk: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let addr = app.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(50)))
        .unwrap();
    write!(
        stream,
        "POST /api/v1/dsyms HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n{headers}\r\n",
        app.admin_token
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..2000 {
        if !chunk.is_empty() {
            let _ = write!(stream, "{:x}\r\n", chunk.len());
            let _ = stream.write_all(chunk);
            let _ = stream.write_all(b"\r\n");
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => continue,
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"))
}

/// A zip whose only entry is a symbolic link, built by hand because it is what a
/// hostile client would send.
fn symlink_zip() -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.add_symlink(
        "link",
        "/etc/passwd",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.start_file("x", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"x").unwrap();
    zip.finish().unwrap().into_inner()
}

#[test]
fn multipart_uploads_take_the_file_field_and_release() {
    let app = spawn_app();
    let dwarf = crashprobe_dwarf();
    let boundary = "crashboxboundary";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"release\"\r\n\r\napp 2.0 (7)\r\n").as_bytes());
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"CrashProbeiOS\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(&dwarf);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let reply = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .post(format!("{}/api/v1/dsyms", app.url))
        .header("Authorization", &format!("Bearer {}", app.admin_token))
        .header(
            "Content-Type",
            &format!("multipart/form-data; boundary={boundary}"),
        )
        .send(&body[..])
        .unwrap();
    assert_eq!(reply.status().as_u16(), 201);
    let body: serde_json::Value =
        serde_json::from_str(&reply.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(body["debug_files"][0]["name"], "CrashProbeiOS");
    assert_eq!(
        body["debug_files"][0]["releases"],
        serde_json::json!(["app 2.0 (7)"])
    );
}

#[test]
fn breakpad_symbol_files_are_indexed() {
    let app = spawn_app();
    let sym = "MODULE mac arm64 6F3A9C2B11D94E0C8A5B7D3E2F1A0B9C0 Widget\n\
               FILE 0 /src/widget/main.c\n\
               FUNC 1000 40 0 widget_main\n\
               1000 20 12 0\n\
               1020 20 13 0\n\
               PUBLIC 2000 0 widget_helper\n";
    let reply = app.post_dsyms("?name=Widget.sym", sym.as_bytes());
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let file = &reply.body["debug_files"][0];
    assert_eq!(file["kind"], "breakpad");
    assert_eq!(file["arch"], "arm64");
    assert_eq!(file["debug_id"], "6f3a9c2b-11d9-4e0c-8a5b-7d3e2f1a0b9c");
    assert_eq!(file["has_debug_info"], true);
    assert_eq!(file["name"], "Widget.sym");
}

#[test]
fn a_fat_mach_o_indexes_every_slice() {
    let app = spawn_app();
    let dsym = fixture("out/fat/crashbox-tool.dSYM/Contents/Resources/DWARF/crashbox-tool");
    let reply = app.post_dsyms("?name=crashbox-tool", &std::fs::read(&dsym).unwrap());
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(app.listed(), dwarfdump_uuids(&dsym));
    let archs: Vec<_> = app.listed().into_iter().map(|(_, arch)| arch).collect();
    assert_eq!(archs.len(), 2);
    assert!(archs.contains(&"arm64".to_owned()) && archs.contains(&"x86_64".to_owned()));
    for file in reply.body["debug_files"].as_array().unwrap() {
        assert_eq!(file["has_debug_info"], true, "{file}");
    }

    // The fat executable itself, stripped of DWARF, is already present with less: the
    // dSYM stays and the answer says so.
    let binary = fixture("out/fat/crashbox-tool");
    let reply = app.post_dsyms("?name=crashbox-tool", &std::fs::read(binary).unwrap());
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    for file in reply.body["debug_files"].as_array().unwrap() {
        assert_eq!(file["status"], "already_present", "{file}");
    }
}

#[test]
fn an_elf_with_dwarf_is_indexed_by_its_build_id() {
    let app = spawn_app();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("out/expected.json")).unwrap()).unwrap();
    let elf = fixture("out/elf/libcrashbox_elf.so");
    let reply = app.post_dsyms("?name=libcrashbox_elf.so", &std::fs::read(elf).unwrap());
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let file = &reply.body["debug_files"][0];
    assert_eq!(file["kind"], "elf", "{file}");
    assert_eq!(file["debug_id"], expected["elf"]["debug_id"], "{file}");
    assert_eq!(file["arch"], "x86_64");
    assert_eq!(file["has_debug_info"], true);
}

#[test]
fn the_same_new_debug_file_uploaded_at_once_is_stored_once_without_errors() {
    // sentry-cli assembles a fat binary's slice and the same slice on its own at once;
    // both stage the same (debug id, arch) and commit it (CI saw "Directory not empty").
    for _ in 0..6 {
        let app = spawn_app_with(|c| c.conversion_workers = 4);
        let body = crashprobe_dwarf();
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let uploads: Vec<_> = (0..4)
                .map(|_| s.spawn(|| app.post_dsyms("?name=CrashProbeiOS", &body).status))
                .collect();
            uploads.into_iter().map(|u| u.join().unwrap()).collect()
        });
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 201),
            "{statuses:?}"
        );
        assert_eq!(
            app.listed(),
            vec![(CRASHPROBE.to_owned(), "arm64".to_owned())]
        );
    }
}

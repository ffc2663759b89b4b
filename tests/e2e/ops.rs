use crate::support::spawn_app;

#[test]
fn health_readiness_and_metrics_answer_without_a_token() {
    let app = spawn_app();
    assert_eq!(app.get("/healthz", None).status, 200);
    let ready = app.get("/readyz", None);
    assert_eq!(ready.status, 200, "{:?}", ready.body);
    app.get("/api/v1/dsyms", None);
    let metrics = app.get("/metrics", None);
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains("crashbox_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/api/v1/dsyms\""), "{text}");
}

#[test]
fn unknown_routes_answer_json_404() {
    let app = spawn_app();
    let reply = app.get("/nope", None);
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body["error"]["code"], "not_found");
}

#[test]
fn the_first_start_creates_a_private_admin_token_once() {
    let app = spawn_app();
    let path = app.data_dir().join("admin-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let reply = app.get("/api/v1/dsyms", Some(&app.admin_token));
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

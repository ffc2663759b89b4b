//! What a token check costs: a known token (hash, cache hit, one `stat` of its file),
//! an unknown one seen before (negative cache) and one never seen (a failed open).
//! `cargo run --release --example token_check_cost`; docs/security.md quotes it.

fn main() {
    use crashbox::auth::{Scope, TokenStore};
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path()).unwrap();
    let token = store.create(Scope::Ingest).unwrap().token;
    for (what, t) in [
        ("known (cached, stat)", token.as_str()),
        ("unknown (negative cache)", "cbx_nope"),
    ] {
        store.check(t);
        let n = 200_000;
        let started = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(store.check(t));
        }
        println!("{what}: {:?} per check", started.elapsed() / n);
    }
    let started = std::time::Instant::now();
    let n = 20_000;
    for i in 0..n {
        std::hint::black_box(store.check(&format!("cbx_fresh{i}")));
    }
    println!(
        "never seen (failed open): {:?} per check",
        started.elapsed() / n
    );
}

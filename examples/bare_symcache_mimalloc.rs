//! Diagnostic twin of `bare_symcache`: the same bare conversion with mimalloc as the
//! global allocator, as the `crashbox` binary has it (src/main.rs). Comparing the two
//! splits the server's extra anonymous memory into the allocator's share and the rest.
//!
//! ```sh
//! cargo run --release --example bare_symcache_mimalloc -- FILE [OUT.symcache]
//! ```

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "bare_symcache.rs"]
mod bare;

fn main() -> std::process::ExitCode {
    bare::main()
}

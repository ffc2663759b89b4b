//! Binding, serving and stopping. `main` and the tests call the same [`run`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::app::{App, StartError};
use crate::auth::Scope;
use crate::config::Config;
use crate::util;

/// Opens the app for `config`, creating the first admin token when the data dir has
/// none. The token is printed once on stdout and saved to `DATA_DIR/admin-token`
/// (mode 0600), so a newcomer is never locked out.
pub fn prepare(config: Config) -> Result<App, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DsymsDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let app = App::open(config)?;
    if app.tokens().is_empty()? {
        let token = app.tokens().create(Scope::Admin)?;
        let path = app.data_dir().join("admin-token");
        if let Err(err) =
            util::write_atomic(&path, format!("{}\n", token.token).as_bytes(), Some(0o600))
        {
            tracing::warn!(error = %err, "could not save the first admin token");
        }
        println!(
            "crashbox: created the first admin token (also saved to {}):\n{}",
            path.display(),
            token.token
        );
    }
    Ok(app)
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests
/// and flushes the store.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "crashbox listening on http://{addr}");
    let router = crate::http::router(app.clone());
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("shutting down: flushing the store");
    app.shutdown().map_err(io::Error::other)?;
    Ok(())
}

/// Binds `config.listen` and serves until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen: SocketAddr = config.listen;
    let app = tokio::task::spawn_blocking(move || prepare(config)).await??;
    let listener = TcpListener::bind(listen).await?;
    run(listener, app, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

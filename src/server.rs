//! Binding, serving and stopping. `main` and the tests call the same [`run`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::{App, StartError};
use crate::auth::Scope;
use crate::config::Config;
use crate::http::limits::IdleTimeout;
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
///
/// Our own accept loop rather than `axum::serve`, which exposes none of hyper's
/// builder options: hyper's `header_read_timeout` needs a timer set on the builder.
/// The loop adds what `ConnectionLimits` asks: a cap on connections served at once (a
/// semaphore taken before `accept`, so the excess waits in the kernel's backlog rather
/// than in our memory), the header timeout, and the idle keep-alive timeout
/// (`http::limits::IdleTimeout`). Graceful shutdown is hyper-util's.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "crashbox listening on http://{addr}");
    app.start_sentry_background();
    let limits = app.config().connections;
    let router = crate::http::router(app.clone());
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors or a connection reset before accept:
                    // wait a little rather than spin, as axum::serve does.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
        let service = WithPeer {
            service: TowerToHyperService::new(router.clone()),
            peer,
        };
        // No upgrades: crashbox serves no WebSocket or CONNECT route.
        let connection = builder.serve_connection(io, service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Timeouts and resets end connections here; they are the client's doing.
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection closed");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    tracing::info!("shutting down: flushing the store");
    app.shutdown().await.map_err(io::Error::other)?;
    Ok(())
}

/// The router, with each request told its connection's peer address
/// (`axum::extract::ConnectInfo`): the per-address rate limit of the SDK routes reads it.
#[derive(Clone)]
struct WithPeer {
    service: TowerToHyperService<axum::Router>,
    peer: SocketAddr,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for WithPeer {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = TowerToHyperServiceFuture<axum::Router, hyper::Request<hyper::body::Incoming>>;

    fn call(&self, mut request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        hyper::service::Service::call(&self.service, request)
    }
}

/// Binds `config.listen` and serves until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen: SocketAddr = config.listen;
    // Where DSNs and links point; a wrong one shows here rather than in an app's logs.
    tracing::info!(public_url = %config.public_url(), "public URL (Sentry DSNs point here)");
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

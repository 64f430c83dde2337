//! `sourceflow-inspect`: a web inspector for any sourceflow database.
//!
//! ```text
//! sourceflow-inspect --db app.db
//! sourceflow-inspect --database-url postgres://user@host/app [--schema name]
//!     [--port 7878] [--bind 127.0.0.1] [--token T] [--allow-actions]
//! ```
//!
//! Serves on loopback by default and prints the URL to open. Listening on any other address
//! needs `--token`; the pages then require it (the printed URL carries it once, the browser
//! keeps it in a cookie).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::Parser;
use sourceflow::store::Store;
use sourceflow_inspect::{check_bind, check_token, Inspector};
use sourceflow_sqlx::{PostgresStore, SqliteStore};

/// A web inspector for any sourceflow store: streams, correlation traces, the global log,
/// views' lag and the outbox.
#[derive(Debug, Parser)]
#[command(name = "sourceflow-inspect", version)]
struct Cli {
    /// The SQLite database file to inspect (it must exist). It is opened as the application
    /// opens it: migrations this version knows and the file lacks are applied.
    #[arg(
        long,
        conflicts_with = "database_url",
        required_unless_present = "database_url"
    )]
    db: Option<PathBuf>,
    /// The Postgres database to inspect (migrations this version knows are applied, as the
    /// application's store does).
    #[arg(long)]
    database_url: Option<String>,
    /// The Postgres schema holding the sourceflow tables (default: the connection's).
    #[arg(long, requires = "database_url")]
    schema: Option<String>,
    /// The port to listen on (0: any free port).
    #[arg(long, default_value_t = 7878)]
    port: u16,
    /// The address to listen on; anything but loopback needs --token.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Require this token on every request (at least 16 characters).
    #[arg(long)]
    token: Option<String>,
    /// Offer the actions that change the store (needs --token; most need library mode).
    #[arg(long, requires = "token")]
    allow_actions: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let addr = SocketAddr::new(cli.bind, cli.port);
    // Refused before anything is opened or bound.
    check_bind(&addr, cli.token.as_deref())?;
    if let Some(token) = &cli.token {
        check_token(token)?;
    }
    let store = open(&cli).await?;
    let mut inspector = Inspector::new(store);
    inspector = match &cli.token {
        Some(token) if cli.allow_actions => inspector.actions(token.clone()),
        Some(token) => inspector.token(token.clone()),
        // Loopback without a token: only requests that name this machine.
        None => inspector.loopback_only(),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let host = match local.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let mut url = format!("http://{host}:{}/", local.port());
    if let Some(token) = &cli.token {
        url.push_str(&format!("?token={token}"));
    }
    println!("sourceflow-inspect listening on {url}");
    axum::serve(listener, inspector.router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn open(cli: &Cli) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = &cli.db {
        if !path.is_file() {
            bail!("no database file at {}", path.display());
        }
        let store = SqliteStore::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        return Ok(Arc::new(store));
    }
    let Some(url) = &cli.database_url else {
        bail!("pass --db FILE or --database-url URL");
    };
    let store = match &cli.schema {
        Some(schema) => PostgresStore::connect_with_schema(url, schema).await,
        None => PostgresStore::connect(url).await,
    }
    .context("cannot connect to Postgres")?;
    Ok(Arc::new(store))
}

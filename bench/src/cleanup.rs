//! What a run leaves outside its process while it runs (Postgres schemas, JetStream streams,
//! the directory of SQLite files), and its removal when the run is interrupted.
//!
//! A workload removes what it made when it ends, whatever its outcome. An interrupted run
//! (Ctrl-C, `kill`) never reaches that code, so every workload also [registers](register)
//! what it makes for as long as it exists; on SIGINT or SIGTERM the binary stops the
//! workloads, [removes](remove_all) whatever is still registered and exits with status 130.
//! Only `SIGKILL` (or a crash) leaves anything behind: the names carry the process id, so a
//! leftover says which run it came from.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use sourceflow_nats::Topology;

/// One thing a run made outside its process.
#[derive(Clone, Debug)]
pub enum Leftover {
    /// A schema in the Postgres at `url`.
    Schema {
        /// The server.
        url: String,
        /// The schema's name.
        name: String,
    },
    /// The JetStream streams of a topology on the NATS server at `url`.
    Streams {
        /// The server.
        url: String,
        /// The topology whose streams go.
        topology: Topology,
    },
    /// A directory (the run's SQLite files).
    Dir(PathBuf),
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leftover::Schema { name, .. } => write!(f, "Postgres schema {name}"),
            Leftover::Streams { topology, .. } => {
                write!(f, "JetStream streams of {}", topology.prefix())
            }
            Leftover::Dir(path) => write!(f, "directory {}", path.display()),
        }
    }
}

/// What is registered now, each under its registration's number.
static REGISTERED: Mutex<Vec<(u64, Leftover)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(0);
/// Set when the run is interrupted: registrations then stay while the workloads are dropped.
static STOPPING: AtomicBool = AtomicBool::new(false);

fn registered() -> MutexGuard<'static, Vec<(u64, Leftover)>> {
    REGISTERED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A registration: while it lives, an interrupted run removes its leftover. Dropped (the
/// workload removed the thing itself, or is about to), it no longer does, unless the run is
/// being interrupted: the workloads are dropped half way then, their registrations with them.
#[must_use = "the leftover is forgotten when the registration is dropped"]
#[derive(Debug)]
pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        if STOPPING.load(Ordering::Acquire) {
            return;
        }
        registered().retain(|(id, _)| *id != self.0);
    }
}

/// Registers `leftover` until the returned registration is dropped.
pub fn register(leftover: Leftover) -> Registration {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    registered().push((id, leftover));
    Registration(id)
}

/// Registers each schema of `names` on the Postgres at `url`.
pub fn schemas<'a>(url: &str, names: impl IntoIterator<Item = &'a String>) -> Vec<Registration> {
    names
        .into_iter()
        .map(|name| {
            register(Leftover::Schema {
                url: url.to_owned(),
                name: name.clone(),
            })
        })
        .collect()
}

/// True once the run is being interrupted: its workloads' background tasks fail as what
/// they use is removed, which is no news then.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Acquire)
}

/// What is registered now (oldest first).
pub fn pending() -> Vec<Leftover> {
    registered().iter().map(|(_, l)| l.clone()).collect()
}

/// Removes everything registered, newest first, reporting each on stderr; returns how many
/// could not be removed. For an interrupted run, after its workloads stopped.
pub async fn remove_all() -> usize {
    let leftovers: Vec<Leftover> = registered().drain(..).rev().map(|(_, l)| l).collect();
    let mut failed = 0;
    for leftover in leftovers {
        match remove(&leftover).await {
            Ok(()) => eprintln!("[sourceflow-bench] removed the {leftover}"),
            Err(e) => {
                failed += 1;
                eprintln!("[sourceflow-bench] cannot remove the {leftover}: {e:#}");
            }
        }
    }
    failed
}

async fn remove(leftover: &Leftover) -> anyhow::Result<()> {
    match leftover {
        Leftover::Schema { url, name } => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await?;
            let dropped = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(&pool)
                .await;
            pool.close().await;
            dropped?;
        }
        Leftover::Streams { url, topology } => {
            let jetstream = async_nats::jetstream::new(async_nats::connect(url).await?);
            topology.delete_streams(&jetstream).await?;
        }
        Leftover::Dir(path) => match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        },
    }
    Ok(())
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM), from then on keeping every
/// registration until [`remove_all`].
pub async fn interrupted() {
    wait_for_signal().await;
    STOPPING.store(true, Ordering::Release);
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registration lasts as long as its handle, and the rest stay registered.
    #[test]
    fn a_dropped_registration_is_forgotten() {
        let a = register(Leftover::Dir("/nonexistent/a".into()));
        let b = register(Leftover::Dir("/nonexistent/b".into()));
        let dirs = || {
            pending()
                .into_iter()
                .filter_map(|l| match l {
                    Leftover::Dir(p) if p.starts_with("/nonexistent") => Some(p),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            dirs(),
            [PathBuf::from("/nonexistent/a"), "/nonexistent/b".into()]
        );
        drop(a);
        assert_eq!(dirs(), [PathBuf::from("/nonexistent/b")]);
        drop(b);
        assert!(dirs().is_empty());
    }
}

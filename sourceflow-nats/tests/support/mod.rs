//! What the NATS tests share: the servers they need, and a fresh Postgres schema and stream
//! prefix per test, removed by `finish`.

#![allow(dead_code)] // Each test file uses a different subset.

use std::sync::Arc;

use async_nats::jetstream;
use sourceflow::store::Store;
use sourceflow_nats::Topology;

/// The servers' URLs.
pub struct Env {
    pub nats: String,
    pub pg: String,
}

/// The servers of the NATS tests; a test built for them and run without them fails here.
pub fn env(test: &str) -> Env {
    match (
        std::env::var("SOURCEFLOW_NATS_URL"),
        std::env::var("SOURCEFLOW_PG_URL"),
    ) {
        (Ok(nats), Ok(pg)) => Env { nats, pg },
        _ => panic!(
            "{test}: built with SOURCEFLOW_NATS_URL and SOURCEFLOW_PG_URL set, run without them; \
             set both (or rebuild without them to have it reported as ignored)"
        ),
    }
}

/// A test's topology (its own stream prefix) and store (its own schema).
pub struct Fixture {
    pub env: Env,
    pub topology: Topology,
    pub store: Arc<dyn Store>,
    pub schema: String,
}

impl Fixture {
    pub async fn new(env: Env, partitions: u32) -> Fixture {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let schema = format!("sf_nats_{tag}");
        let store = sourceflow_sqlx::PostgresStore::connect_with_schema(&env.pg, &schema)
            .await
            .expect("connect to SOURCEFLOW_PG_URL");
        Fixture {
            topology: Topology::new(format!("t{}", &tag[..12]))
                .partitions(partitions)
                .in_memory(),
            env,
            store: Arc::new(store),
            schema,
        }
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.env.nats)
            .await
            .expect("connect to SOURCEFLOW_NATS_URL")
    }

    /// Deletes the test's streams and drops its schema.
    pub async fn finish(self) {
        let jetstream = jetstream::new(self.client().await);
        if let Err(e) = self.topology.delete_streams(&jetstream).await {
            eprintln!(
                "cannot delete the test streams {}_*: {e}",
                self.topology.prefix()
            );
        }
        if let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.env.pg)
            .await
        {
            let _ = sqlx::query(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            ))
            .execute(&pool)
            .await;
            pool.close().await;
        }
    }
}

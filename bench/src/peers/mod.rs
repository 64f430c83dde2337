//! The peer frameworks, with the same bank account: `cqrs-es` (+ `postgres-es`) always, `esrs`
//! behind the `esrs` feature (its `postgres` feature forces sqlx's `runtime-tokio-native-tls`,
//! i.e. OpenSSL, on every sqlx user built together with it).

pub mod cqrs;
#[cfg(feature = "esrs")]
pub mod esrs;

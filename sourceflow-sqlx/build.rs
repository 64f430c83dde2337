//! `sqlx::migrate!` embeds the migration files at compile time; rebuild when they change.
//! Sets `cfg(sourceflow_pg)` when `SOURCEFLOW_PG_URL` is set (and not empty): the unit tests
//! against Postgres run then, and are reported as ignored otherwise.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=SOURCEFLOW_PG_URL");
    println!("cargo:rustc-check-cfg=cfg(sourceflow_pg)");
    if std::env::var_os("SOURCEFLOW_PG_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo:rustc-cfg=sourceflow_pg");
    }
}

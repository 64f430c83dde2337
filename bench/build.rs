//! Sets `cfg(sourceflow_pg)` when `SOURCEFLOW_PG_URL` is set (and not empty), and
//! `cfg(sourceflow_nats)` when `SOURCEFLOW_NATS_URL` is: the tests against those servers run
//! then, and are reported as ignored otherwise.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCEFLOW_PG_URL");
    println!("cargo:rerun-if-env-changed=SOURCEFLOW_NATS_URL");
    println!("cargo:rustc-check-cfg=cfg(sourceflow_pg)");
    println!("cargo:rustc-check-cfg=cfg(sourceflow_nats)");
    if std::env::var_os("SOURCEFLOW_PG_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo:rustc-cfg=sourceflow_pg");
    }
    if std::env::var_os("SOURCEFLOW_NATS_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo:rustc-cfg=sourceflow_nats");
    }
}

//! Sets `cfg(sourceflow_nats)` when `SOURCEFLOW_NATS_URL` and `SOURCEFLOW_PG_URL` are both set
//! (and not empty): the tests against real NATS and Postgres servers run then, and are reported
//! as ignored otherwise.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCEFLOW_NATS_URL");
    println!("cargo:rerun-if-env-changed=SOURCEFLOW_PG_URL");
    println!("cargo:rustc-check-cfg=cfg(sourceflow_nats)");
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if set("SOURCEFLOW_NATS_URL") && set("SOURCEFLOW_PG_URL") {
        println!("cargo:rustc-cfg=sourceflow_nats");
    }
}

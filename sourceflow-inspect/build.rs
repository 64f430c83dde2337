//! Sets `cfg(sourceflow_pg)` when `SOURCEFLOW_PG_URL` is set (and not empty): the Postgres tests
//! run then, and are reported as ignored otherwise. Sets `cfg(sourceflow_chromium)` when
//! headless Chromium is installed (`/usr/bin/chromium`, or `CHROMIUM` naming the binary): the
//! browser test runs then, and is reported as ignored otherwise.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCEFLOW_PG_URL");
    println!("cargo:rerun-if-env-changed=CHROMIUM");
    // Installing a package changes the directory: the check runs again.
    println!("cargo:rerun-if-changed=/usr/bin");
    println!("cargo:rustc-check-cfg=cfg(sourceflow_pg)");
    println!("cargo:rustc-check-cfg=cfg(sourceflow_chromium)");
    if std::env::var_os("SOURCEFLOW_PG_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo:rustc-cfg=sourceflow_pg");
    }
    let chromium = std::env::var_os("CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into());
    if Path::new(&chromium).exists() {
        println!("cargo:rustc-cfg=sourceflow_chromium");
    }
}

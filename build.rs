// Builds the cxx bridge glue into the library and, with the `c-header` feature, writes the C
// header to <cargo target dir>/<profile>/generated/rootstream_db.h (CMake compares it with the
// checked-in include/rootstream_db.h). The path depends only on the target dir and profile, so
// build trees sharing a target dir never invalidate each other's build.

fn main() {
    // One bridge per area; keep this list in step with src/ffi/cxx/mod.rs and CMakeLists.txt.
    let bridges = [
        "src/ffi/cxx/config.rs",
        "src/ffi/cxx/db.rs",
        "src/ffi/cxx/cache.rs",
        "src/ffi/cxx/models.rs",
        "src/ffi/cxx/events.rs",
        "src/ffi/cxx/auth.rs",
        "src/ffi/cxx/backup.rs",
        "src/ffi/cxx/sync.rs",
        "src/ffi/cxx/metrics.rs",
        "src/ffi/cxx/health.rs",
        "src/ffi/cxx/ha_replication.rs",
        "src/ffi/cxx/failover.rs",
    ];
    cxx_build::bridges(bridges)
        .include("cpp/include")
        .include("cpp/src")
        .std("c++17")
        .flag_if_supported("-Wno-unused-parameter")
        .compile("rootstream_db_cxxbridge");
    for bridge in bridges {
        println!("cargo:rerun-if-changed={bridge}");
    }
    println!("cargo:rerun-if-changed=cpp/src/message_observer.h");
    println!("cargo:rerun-if-changed=cpp/src/sync_observer.h");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,librootstream_db.so");

    #[cfg(feature = "c-header")]
    generate_c_header();
}

#[cfg(feature = "c-header")]
fn generate_c_header() {
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=src/ffi/c");
    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let profile_dir = out_dir.ancestors().nth(3).expect("OUT_DIR has the usual layout").to_path_buf();
    let out = profile_dir.join("generated").join("rootstream_db.h");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("cbindgen.toml");
    // Only the C ABI module: public constants elsewhere in the crate are not part of it.
    cbindgen::Builder::new()
        .with_src(format!("{dir}/src/ffi/c/mod.rs"))
        .with_config(config)
        .generate()
        .expect("the C header could not be generated")
        .write_to_file(out);
}

// Builds the cxx bridge glue into the library and, with the `c-header` feature, writes the C
// header to the path in RSDB_C_HEADER_OUT (CMake and CI use it; the checked-in copy lives in
// include/).

fn main() {
    cxx_build::bridge("src/ffi/cxx/mod.rs")
        .include("cpp/include")
        .std("c++17")
        .flag_if_supported("-Wno-unused-parameter")
        .compile("rootstream_db_cxxbridge");
    println!("cargo:rerun-if-changed=src/ffi/cxx/mod.rs");
    println!("cargo:rerun-if-changed=cpp/include/rootstream/cache/message_observer.h");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,librootstream_db.so");

    #[cfg(feature = "c-header")]
    generate_c_header();
}

#[cfg(feature = "c-header")]
fn generate_c_header() {
    println!("cargo:rerun-if-env-changed=RSDB_C_HEADER_OUT");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=src/ffi/c");
    let Ok(out) = std::env::var("RSDB_C_HEADER_OUT") else {
        return;
    };
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("cbindgen.toml");
    cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("the C header could not be generated")
        .write_to_file(out);
}

//! The library's two native faces, thin adapters over the core: `c` is the C ABI behind
//! `include/rootstream_db.h`, `cxx` the bridges behind the C++ API in `cpp/`. Neither holds
//! defaults or workflows; those live in the core modules they call.

pub mod c;
pub mod cxx;

pub mod c;
pub mod cxx;

//! `uniffi-bindgen generate --library target/debug/libcourier_ffi.so --language kotlin ...`:
//! uniffi's own command line, built from the same uniffi version as `courier-ffi`.

fn main() {
    uniffi::uniffi_bindgen_main();
}

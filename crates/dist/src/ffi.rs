//! The C ABI of `csrc/shim.cpp`. Every fallible function returns null / 0
//! on failure and leaves a `malloc`'ed message in `*err`.

use std::ffi::{c_char, c_int, c_void};

/// A `c10d::TCPStore` (client, or server and client).
#[repr(C)]
pub struct PdStore {
    _private: [u8; 0],
}

/// A c10d backend (`ProcessGroupGloo` or `ProcessGroupNCCL`).
#[repr(C)]
pub struct PdGroup {
    _private: [u8; 0],
}

unsafe extern "C" {
    pub fn pd_free(p: *mut c_void);

    pub fn pd_store_new(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        timeout_ms: i64,
        err: *mut *mut c_char,
    ) -> *mut PdStore;
    pub fn pd_store_port(s: *const PdStore) -> u16;
    pub fn pd_store_free(s: *mut PdStore);
    pub fn pd_store_add(
        s: *mut PdStore,
        key: *const c_char,
        delta: i64,
        out: *mut i64,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn pd_store_set(
        s: *mut PdStore,
        key: *const c_char,
        data: *const u8,
        len: usize,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn pd_store_get(
        s: *mut PdStore,
        key: *const c_char,
        data: *mut *mut u8,
        len: *mut usize,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn pd_store_check(
        s: *mut PdStore,
        key: *const c_char,
        present: *mut c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn pd_store_delete(s: *mut PdStore, key: *const c_char, err: *mut *mut c_char) -> c_int;

    #[allow(clippy::too_many_arguments)]
    pub fn pd_gloo_new(
        s: *mut PdStore,
        prefix: *const c_char,
        rank: c_int,
        size: c_int,
        device_kind: c_int,
        device_name: *const c_char,
        timeout_ms: i64,
        threads: c_int,
        err: *mut *mut c_char,
    ) -> *mut PdGroup;
    pub fn pd_nccl_built() -> c_int;
    pub fn pd_nccl_new(
        s: *mut PdStore,
        prefix: *const c_char,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        err: *mut *mut c_char,
    ) -> *mut PdGroup;
    pub fn pd_group_free(g: *mut PdGroup);
    pub fn pd_group_allreduce_sum(
        g: *mut PdGroup,
        tensors: *const *const c_void,
        n: usize,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn pd_group_broadcast(
        g: *mut PdGroup,
        tensors: *const *const c_void,
        n: usize,
        root: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn pd_group_barrier(g: *mut PdGroup, err: *mut *mut c_char) -> c_int;
}

/// Runs `f` with an error slot; on failure returns the message it left.
pub fn call<T>(f: impl FnOnce(*mut *mut c_char) -> Option<T>) -> Result<T, String> {
    let mut err: *mut c_char = std::ptr::null_mut();
    let out = f(&mut err);
    if !err.is_null() {
        // SAFETY: the shim wrote a NUL-terminated malloc'ed string.
        let msg = unsafe { std::ffi::CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: allocated by the shim's malloc, freed once.
        unsafe { pd_free(err.cast()) };
        return Err(msg);
    }
    out.ok_or_else(|| "the c10d shim failed without a message".to_owned())
}

//! [`Store`]: libtorch's `c10d::TCPStore`, the key-value store ranks meet
//! in (rendezvous, the rank counter, small exchanges such as batch ids).

use std::ffi::{CString, c_int};
use std::time::Duration;

use crate::error::DistError;
use crate::ffi;

/// A connection to a `TCPStore` (and, for the rank that hosts it, the
/// server). Every blocking call waits at most the timeout it was built with.
#[derive(Debug)]
pub struct Store {
    raw: *mut ffi::PdStore,
    addr: String,
    server: bool,
}

// SAFETY: c10d's TCPStore serialises its client operations with a mutex;
// the handle is only freed in Drop.
unsafe impl Send for Store {}
// SAFETY: as above.
unsafe impl Sync for Store {}

fn cstring(op: &'static str, addr: &str, s: &str) -> Result<CString, DistError> {
    CString::new(s).map_err(|_| DistError::Store {
        op,
        key: s.replace('\0', "\\0"),
        addr: addr.to_owned(),
        message: "contains a NUL byte".into(),
    })
}

impl Store {
    /// Connects to the store at `host:port`, hosting it first when `server`
    /// (port 0 picks a free port: see [`Store::port`]). A client retries
    /// until the server is up or `timeout` passes.
    pub fn connect(
        host: &str,
        port: u16,
        server: bool,
        timeout: Duration,
    ) -> Result<Self, DistError> {
        let addr = format!("{host}:{port}");
        let c_host = cstring("connect", &addr, host)?;
        let raw = ffi::call(|err| {
            // SAFETY: valid C string; the shim catches every exception.
            let raw = unsafe {
                ffi::pd_store_new(
                    c_host.as_ptr(),
                    port,
                    c_int::from(server),
                    timeout_ms(timeout),
                    err,
                )
            };
            (!raw.is_null()).then_some(raw)
        })
        .map_err(|message| DistError::Store {
            op: if server { "host" } else { "connect" },
            key: host.to_owned(),
            addr: addr.clone(),
            message,
        })?;
        // SAFETY: `raw` is a live store.
        let port = unsafe { ffi::pd_store_port(raw) };
        Ok(Self {
            raw,
            addr: format!("{host}:{port}"),
            server,
        })
    }

    /// The port (the one picked when connected with port 0).
    pub fn port(&self) -> u16 {
        // SAFETY: live store.
        unsafe { ffi::pd_store_port(self.raw) }
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether this process hosts the store.
    pub fn is_server(&self) -> bool {
        self.server
    }

    fn err(&self, op: &'static str, key: &str) -> impl FnOnce(String) -> DistError {
        let (key, addr) = (key.to_owned(), self.addr.clone());
        move |message| DistError::Store {
            op,
            key,
            addr,
            message,
        }
    }

    /// Adds `delta` to the counter `key` (created at 0); returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64, DistError> {
        let c_key = cstring("add", &self.addr, key)?;
        let mut out = 0i64;
        ffi::call(|err| {
            // SAFETY: live store, valid pointers.
            (unsafe { ffi::pd_store_add(self.raw, c_key.as_ptr(), delta, &mut out, err) } != 0)
                .then_some(())
        })
        .map_err(self.err("add", key))?;
        Ok(out)
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), DistError> {
        let c_key = cstring("set", &self.addr, key)?;
        ffi::call(|err| {
            // SAFETY: live store; `value` outlives the call.
            (unsafe {
                ffi::pd_store_set(self.raw, c_key.as_ptr(), value.as_ptr(), value.len(), err)
            } != 0)
                .then_some(())
        })
        .map_err(self.err("set", key))
    }

    /// The value of `key`, waiting (up to the timeout) until it is set.
    pub fn get(&self, key: &str) -> Result<Vec<u8>, DistError> {
        let c_key = cstring("get", &self.addr, key)?;
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut len = 0usize;
        ffi::call(|err| {
            // SAFETY: live store, valid out-pointers.
            (unsafe { ffi::pd_store_get(self.raw, c_key.as_ptr(), &mut data, &mut len, err) } != 0)
                .then_some(())
        })
        .map_err(self.err("get", key))?;
        // SAFETY: the shim malloc'ed `len` bytes (at least 1) at `data`.
        let out = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
        // SAFETY: freed once.
        unsafe { ffi::pd_free(data.cast()) };
        Ok(out)
    }

    /// Whether `key` is set, without waiting.
    pub fn check(&self, key: &str) -> Result<bool, DistError> {
        let c_key = cstring("check", &self.addr, key)?;
        let mut present: c_int = 0;
        ffi::call(|err| {
            // SAFETY: live store, valid pointers.
            (unsafe { ffi::pd_store_check(self.raw, c_key.as_ptr(), &mut present, err) } != 0)
                .then_some(())
        })
        .map_err(self.err("check", key))?;
        Ok(present != 0)
    }

    /// Deletes `key` (no error when absent).
    pub fn delete(&self, key: &str) -> Result<(), DistError> {
        let c_key = cstring("delete", &self.addr, key)?;
        ffi::call(|err| {
            // SAFETY: live store, valid pointers.
            (unsafe { ffi::pd_store_delete(self.raw, c_key.as_ptr(), err) } != 0).then_some(())
        })
        .map_err(self.err("delete", key))
    }

    pub(crate) fn raw(&self) -> *mut ffi::PdStore {
        self.raw
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: created by pd_store_new, freed once.
        unsafe { ffi::pd_store_free(self.raw) };
    }
}

/// Milliseconds for the shim, at least 1.
pub(crate) fn timeout_ms(t: Duration) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX).max(1)
}

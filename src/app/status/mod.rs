//! The operator's view of a running proxy: each route's credential state
//! and traffic, the process, its config and listeners. Read-only, served
//! on the admin listener as JSON (`/status`) and as a page (`/`), and
//! printed by `sidekey status`.
//!
//! | module | holds |
//! | --- | --- |
//! | [`model`] | the `/status` document (its schema is in the README) and how it is collected |
//! | [`page`] | the HTML page: server-rendered, refreshed by a small script |
//! | [`table`] | the terminal table of `sidekey status` |
//! | [`client`] | `sidekey status`'s `GET /status` |
//!
//! Collecting costs the request path nothing: token state comes from each
//! source's [`crate::token::TokenSource::snapshot`], traffic from
//! [`crate::traffic`]'s atomics and samples.

pub mod client;
pub mod model;
pub mod page;
pub mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::time::Instant;

/// What the status views know of the process beyond its routes: when it
/// started, its config file and reloads, its listeners. Written on start,
/// reload and listener changes only.
pub(crate) struct ProcessInfo {
    pub(crate) started: SystemTime,
    pub(crate) started_mono: Instant,
    state: Mutex<ProcessState>,
}

#[derive(Clone)]
pub(crate) struct ProcessState {
    pub(crate) config_file: Option<PathBuf>,
    /// When the running config was loaded (start or last good reload).
    pub(crate) loaded_at: SystemTime,
    /// The last reload: when, and `ok`, `invalid` or `rejected`.
    pub(crate) last_reload: Option<(SystemTime, &'static str)>,
    /// (config key, bound address) of each open listener.
    pub(crate) listeners: Vec<(String, SocketAddr)>,
}

impl ProcessInfo {
    pub(crate) fn new() -> ProcessInfo {
        let started = SystemTime::now();
        ProcessInfo {
            started,
            started_mono: Instant::now(),
            state: Mutex::new(ProcessState {
                config_file: None,
                loaded_at: started,
                last_reload: None,
                listeners: Vec::new(),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ProcessState> {
        // Plain data: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

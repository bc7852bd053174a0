//! The composition root: turns a config into a running proxy. It builds
//! the [`crate::proxy::Runtime`] ([`runtime`]), binds and reloads the
//! listeners ([`server`]; every worker runs their [`accept`] loops), starts the
//! worker threads ([`workers`]) and serves the admin listener
//! ([`admin`], with the operator's [`status`] views). Nothing below
//! imports from here.

pub(crate) mod accept;
pub(crate) mod admin;
pub(crate) mod runtime;
pub(crate) mod server;
pub mod status;
pub(crate) mod workers;

pub use runtime::RuntimeError;
pub use server::RunningProxy;

//! Integration-test support for sidekey: a throw-away CA, recording stand-in
//! servers, verifying stand-ins of the seed APIs (token endpoints included:
//! Algonomy, Invoca, Copernica, a generic OAuth2 server), and a small proxy
//! client.
//!
//! Use from a test file as `mod support; use support::*;` (inside a Tokio runtime).
#![allow(dead_code, unused_imports)]

pub mod algonomy;
pub mod blackhole;
pub mod ca;
pub mod client;
/// One-shot sidekey commands (`authorize`, `check`) as child processes.
pub mod command;
/// A corporate HTTP proxy (CONNECT and absolute form) that records what went through it.
pub mod connect_proxy;
pub mod copernica;
pub mod copilot;
/// sidekey in-process: config around the stand-ins, start, admin requests.
pub mod harness;
pub mod invoca;
pub mod koupon;
pub mod oauth2;
/// Only integration tests know where cargo put the binary.
#[cfg(test)]
pub mod process;
/// A raw upstream that records every byte (smuggling tests).
pub mod recorder;
/// A real `redis-server` on a free port (shared-cache tests).
pub mod redis_server;
/// All five seed stand-ins with the seed routes; a local CA for interception.
pub mod seeds;
pub mod server;
/// A stand-in AWS API verifying Signature Version 4 independently.
pub mod sigv4;
/// Every token source at once, and readers of `/status`.
pub mod status;
pub mod test_env;
pub mod tokens;

pub use algonomy::AlgonomyApi;
pub use blackhole::Blackhole;
pub use ca::TestCa;
pub use client::*;
pub use command::SidekeyCommand;
pub use connect_proxy::{ConnectProxy, Through};
pub use copernica::CopernicaApi;
pub use copilot::CopilotApi;
pub use invoca::InvocaApi;
pub use koupon::KouponApi;
pub use oauth2::OAuth2Server;
#[cfg(test)]
pub use process::*;
pub use recorder::{Recorder, Seen, RECORDER_REPLY};
pub use redis_server::RedisServer;
pub use server::*;
pub use sigv4::{SigV4Api, SigV4Rules, AWS_KEY_ID, AWS_SECRET};
pub use test_env::*;
pub use tokens::{random_token, wait_until};

//! Integration-test support for sidekey: a throw-away CA, recording stand-in
//! servers, verifying stand-ins of the seed APIs, and a small proxy client.
//!
//! Use from a test file as `mod support; use support::*;` (inside a Tokio runtime).
#![allow(dead_code, unused_imports)]

pub mod blackhole;
pub mod ca;
pub mod client;
pub mod copilot;
/// sidekey in-process: config around the stand-ins, start, admin requests.
pub mod harness;
pub mod koupon;
/// Only integration tests know where cargo put the binary.
#[cfg(test)]
pub mod process;
pub mod server;
pub mod test_env;

pub use blackhole::Blackhole;
pub use ca::TestCa;
pub use client::*;
pub use copilot::CopilotApi;
pub use koupon::KouponApi;
#[cfg(test)]
pub use process::*;
pub use server::*;
pub use test_env::*;

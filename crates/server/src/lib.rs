//! Wiring only: builds the store, the runtime supervisor and the gateway from a
//! [`Config`], serves until told to stop, and drains in order — stop accepting, finish
//! calls in flight, stop instances — within a deadline.
//!
//! Start reading at [`Server::start`] then [`Running::run`].
//!
//! # Layout
//! - [`config`]: [`Config`], how this process runs (flags and environment).
//! - [`Server`] / [`Running`]: start-up and the serve-and-drain loop.
//! - [`Error`]: the crate's one error enum.

pub mod config;

mod error;
mod server;

pub use config::Config;
pub use error::{Error, Result};
pub use server::{Running, Server};

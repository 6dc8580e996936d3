//! Wire formats: what crosses a process boundary, each in one module so that both sides of the boundary read
//! the same definition.
//!
//! - [`env`]: the environment variables of a re-executed program;
//! - [`bootstrap`]: a re-executed child's start-up message;
//! - [`outcome`]: how a child's run ended, sent back to its parent;
//! - [`request`]: a start request to the fork server.

pub(crate) mod bootstrap;
pub(crate) mod env;
pub(crate) mod outcome;
pub(crate) mod request;

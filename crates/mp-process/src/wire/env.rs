//! Every environment variable mp-process sets for a re-executed program, in one place: both sides read them
//! from here. All start with `MP_PROCESS_`, and a child's environment is cleared of stale ones.

/// The prefix of every name below.
pub(crate) const PREFIX: &str = "MP_PROCESS_";
/// Turns a re-executed program into a spawned child (value: its socket's number).
pub(crate) const CHILD: &str = "MP_PROCESS_CHILD";
/// A spawned child's outcome slot, in the memory file [`SLOTS`] names.
pub(crate) const SLOT: &str = "MP_PROCESS_SLOT";
/// Turns a re-executed program into the fork server (value: its request socket).
pub(crate) const SERVER: &str = "MP_PROCESS_FORKSERVER";
/// The pid of the program the fork server serves.
pub(crate) const PARENT: &str = "MP_PROCESS_PARENT";
/// Set when the fork server got `LD_BIND_NOW` from us (not from the user), so that it removes it again.
pub(crate) const BIND_NOW: &str = "MP_PROCESS_BIND_NOW";
/// The memory file of the outcome slots (for the fork server, and for a spawned child with a slot).
pub(crate) const SLOTS: &str = "MP_PROCESS_SLOTS";

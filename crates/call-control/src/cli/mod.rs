//! Subcommands of the `dialcore` binary that talk to a running service.

pub mod test_call;

//! Subcommands of the `dialcore` binary that talk to a running service, or to any SIP
//! endpoint (`load`).

pub mod load;
pub mod test_call;

//! The `dialcore` binary (being built: see crates/call-control/src/service.rs).

fn main() {
    eprintln!("dialcore: the service is being assembled in this session");
    std::process::exit(2);
}

//! `purgewatch-mock-provider [PORT]`: a local fake SiteHost and VIMS API on 127.0.0.1 that prints
//! every request it gets and answers as the providers document, so that you can watch the
//! traffic purgewatch sends without an account. Built with the daemon (no test-only
//! dependency) and shipped in the package.
//!
//! Point a rules file at it: `api_url: http://127.0.0.1:8080/1.3` for SiteHost targets and
//! `api_url: http://127.0.0.1:8080/api` for VIMS targets. It is the same fake the tests use.

#[path = "../../tests/common/fake.rs"]
#[allow(unreachable_pub)]
mod fake;

use std::process::ExitCode;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    let port: u16 = match arg.as_deref() {
        None => 8080,
        Some("-h" | "--help") => {
            println!("usage: purgewatch-mock-provider [PORT]   (default 8080; listens on 127.0.0.1)");
            return ExitCode::SUCCESS;
        }
        Some(p) => match p.parse() {
            Ok(port) => port,
            Err(_) => {
                eprintln!(
                    "purgewatch-mock-provider: `{p}` is not a port number (usage: purgewatch-mock-provider [PORT])"
                );
                return ExitCode::from(2);
            }
        },
    };
    // Said plainly, before the server starts: a port in use.
    if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
        eprintln!("purgewatch-mock-provider: cannot listen on 127.0.0.1:{port}: {e} (pass another port)");
        return ExitCode::from(1);
    }
    let fake = fake::Fake::start_on(port, true);
    println!("mock provider listening on http://{}", fake.addr);
    println!("  SiteHost api_url: {}", fake.sitehost_url());
    println!("  VIMS     api_url: {}", fake.vims_url());
    loop {
        std::thread::park();
    }
}

//! A local fake SiteHost and VIMS API that prints every request it gets, so you can watch the
//! traffic purgewatch sends without an account.
//!
//! ```text
//! cargo run --example mock_provider -- 8080
//! ```
//!
//! Then point a rules file at it: `api_url: http://127.0.0.1:8080/1.3` for SiteHost targets and
//! `api_url: http://127.0.0.1:8080/api` for VIMS targets.

#[path = "../tests/common/fake.rs"]
mod fake;

fn main() {
    let port = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(8080);
    let fake = fake::Fake::start_on(port, true);
    println!("mock provider listening on http://{}", fake.addr);
    println!("  SiteHost api_url: {}", fake.sitehost_url());
    println!("  VIMS     api_url: {}", fake.vims_url());
    loop {
        std::thread::park();
    }
}

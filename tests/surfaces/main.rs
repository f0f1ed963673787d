//! The surfaces in-process: each test starts Slipway inside the test process
//! (`slipway::testing::TestApp`) on the runtime's test twin and drives it as people and
//! GitHub and Discord do (HTTP, the real CLI client, signed webhooks, the Discord stand-in).
//! Nothing here needs Docker, so these run in seconds; the paths that touch Docker keep their
//! end-to-end tests against a `slipway serve` process (`http_surface`, `github_prs`,
//! `discord_chatops`).

#[path = "../harness/mod.rs"]
mod harness;
mod support;

mod audit;
mod discord;
mod github;
mod http;

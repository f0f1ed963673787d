//! Slipway in this process on the runtime's test twin, behind the same test API
//! ([`SlipwayApi`]) as a `slipway serve` process.

use slipway::testing::TestApp;

use crate::harness::{last_lines, ServerOptions, SlipwayApi};

/// A [`TestApp`] started from the harness's config, with its own data dir.
pub struct InProcessServer {
    /// Declared before the data dir: the app stops before its files go.
    pub app: TestApp,
    pub url: String,
    pub repo: String,
    _data_dir: tempfile::TempDir,
}

impl InProcessServer {
    pub fn start(options: ServerOptions) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let app = TestApp::start(&options.config(data_dir.path()))
            .unwrap_or_else(|e| panic!("the in-process Slipway did not start: {e:#}"));
        Self {
            url: app.url().to_string(),
            repo: options.repo_name.to_string(),
            app,
            _data_dir: data_dir,
        }
    }
}

impl SlipwayApi for InProcessServer {
    fn url(&self) -> &str {
        &self.url
    }

    fn repo(&self) -> &str {
        &self.repo
    }

    fn tail_log(&self) -> String {
        last_lines(&self.app.log(), 40)
    }
}

//! Slipway's engine. Surfaces (CLI, HTTP API, chat, webhooks) record intent through
//! [`Engine`]; reconcilers compare that desired state with what a [`runtime::Runtime`]
//! reports and converge; the [`store::Store`] keeps desired state, observed state and the
//! event timeline, and is the only state shared between processes.

pub mod compose;
pub mod controller;
pub mod engine;
pub mod git;
pub mod junit;
pub mod names;
pub mod queue;
pub mod reconciler;
pub mod rollout;
pub mod runtime;
pub mod secrets;
pub mod settings;
pub mod snippet;
pub mod store;
pub mod testrun;

pub use engine::Engine;
pub use settings::{EngineSettings, GitCredentials, GitToken, MintToken, RepoSettings};

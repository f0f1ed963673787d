//! The submit queue.
pub mod machine;

/// The controller kind of submit queues; keys are `<repo>/<target>`.
pub const QUEUE_KIND: &str = "queue";

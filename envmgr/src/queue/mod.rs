//! The submit queue: main only ever moves to a tree that passed. [`machine`] is the scheduling
//! policy as one pure state machine (queue state + event -> actions); [`sim`] drives that same
//! machine against a model CI to measure it beside the policies other queues use.

pub mod machine;
#[cfg(test)]
mod proptests;
pub mod sim;

/// The controller kind of submit queues; keys are `<repo>/<target>`.
pub const QUEUE_KIND: &str = "queue";

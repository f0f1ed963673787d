//! The submit queue.
pub mod machine;

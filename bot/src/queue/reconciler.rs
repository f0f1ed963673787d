//! The submit queue's reconciler (filled in when the scheduler lands).

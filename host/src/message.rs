//! message (in progress)

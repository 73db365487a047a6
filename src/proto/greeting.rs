//! greeting (in progress).

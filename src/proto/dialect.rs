//! dialect (in progress).

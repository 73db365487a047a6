//! MD6 (to be filled in: safe wrapper over the `md6` crate).

//! Placeholder while the crate is written; replaced in the next commits.

//! hookbridge's relay (in progress).
pub mod circuit;
pub mod policy;
pub mod sign;

//! The converter (feature `convert`).

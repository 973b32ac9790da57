//! Tables (stub).

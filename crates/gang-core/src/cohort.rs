//! Cohorts (stub).

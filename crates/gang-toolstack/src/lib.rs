//! The gang toolstack: what the `gang` daemon keeps and does on behalf of the
//! CLI and the JSON API.
//!
//! For now it holds [`store`], the daemon's transactional state (pools and
//! domains) in an embedded SQLite database — the equivalent of Xen's
//! xenstore plus the hypervisor's cpupool bookkeeping.

pub mod daemon;
pub mod domain_cgroup;
pub mod process;
pub mod store;

pub use store::{
    DomainRecord, DomainRef, DomainState, NewDomain, PoolId, PoolRecord, PoolRef, ProcessIdentity,
    RawId, Ref, Sched, ShutdownReason, Store, StoreError, POOL0_NAME, SCHEMA_VERSION,
};

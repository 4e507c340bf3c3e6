//! The signed management channel shared by `keel-agent` and `keelctl`.
//!
//! Not built yet: the protocol, agent and client arrive with their own issue.
//! The crate exists so the workspace layout matches the design from the start.

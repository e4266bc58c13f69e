//! A repository as the engine sees it (a leaf: the engine's modules import it directly).

use serde::{Deserialize, Serialize};

use crate::event::Provider;

/// A repository as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRef {
    pub internal_id: i64,
    /// Immutable identity used in trigger ids: `provider:id:<id>` or `provider:name:<owner/name>`.
    pub stable_key: String,
    pub provider: Provider,
    /// The latest spelling seen.
    pub owner: String,
    pub name: String,
    pub external_id: Option<String>,
}

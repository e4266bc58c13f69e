//! Repository identity (DESIGN.md): a repository is identified by `provider` and
//! `repository.id` where the producer gives one, else by `provider` and owner/name compared
//! case-insensitively. The registry keeps the latest spelling, so a rename (same id, new
//! name) is followed. This module holds the rules; `store::repositories` persists them and
//! [`MemoryRegistry`] keeps them in memory for `simulate`.

use std::collections::HashMap;

use crate::engine::RepoRef;
use crate::event::{Event, Provider, Repository};

/// What an event says about its repository, normalized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoClaim {
    pub provider: Provider,
    pub external_id: Option<String>,
    pub owner: String,
    pub name: String,
}

impl RepoClaim {
    pub fn from_event(e: &Event) -> RepoClaim {
        RepoClaim::of(e.provider, &e.repository)
    }

    /// The repository an event of `provider` names: the host's repository by name when
    /// `repository.host` is another provider, else `provider`'s, by id when given.
    pub fn of(provider: Provider, r: &Repository) -> RepoClaim {
        match r.host.filter(|h| *h != provider) {
            Some(host) => RepoClaim {
                provider: host,
                external_id: None,
                owner: r.owner.clone(),
                name: r.name.clone(),
            },
            None => RepoClaim {
                provider,
                external_id: r.id.clone(),
                owner: r.owner.clone(),
                name: r.name.clone(),
            },
        }
    }

    /// `owner/name` in lower case: the name-based identity.
    pub fn lower_name(&self) -> String {
        format!("{}/{}", self.owner.to_lowercase(), self.name.to_lowercase())
    }

    /// The immutable key a new registry entry gets; trigger ids are derived from it.
    pub fn stable_key(&self) -> String {
        match &self.external_id {
            Some(id) => format!("{}:id:{id}", self.provider),
            None => format!("{}:name:{}", self.provider, self.lower_name()),
        }
    }
}

/// The registry for `simulate`: the same resolution as the Postgres store.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    repos: Vec<RepoRef>,
    by_id: HashMap<(Provider, String), usize>,
    by_name: HashMap<(Provider, String), usize>,
}

impl MemoryRegistry {
    /// Finds or registers the repository an event names, updating its spelling.
    pub fn resolve(&mut self, claim: &RepoClaim) -> RepoRef {
        let lower = claim.lower_name();
        let found = claim
            .external_id
            .as_ref()
            .and_then(|id| self.by_id.get(&(claim.provider, id.clone())).copied())
            .or_else(|| {
                // By name: an entry with no id, or any entry when the claim has no id.
                self.by_name
                    .get(&(claim.provider, lower.clone()))
                    .copied()
                    .filter(|&i| claim.external_id.is_none() || self.repos[i].external_id.is_none())
            });
        let index = match found {
            Some(i) => {
                let repo = &mut self.repos[i];
                let old = format!("{}/{}", repo.owner.to_lowercase(), repo.name.to_lowercase());
                repo.owner.clone_from(&claim.owner);
                repo.name.clone_from(&claim.name);
                if repo.external_id.is_none() && claim.external_id.is_some() {
                    repo.external_id.clone_from(&claim.external_id);
                    if let Some(id) = &claim.external_id {
                        self.by_id.insert((claim.provider, id.clone()), i);
                    }
                }
                if old != lower {
                    self.by_name.remove(&(claim.provider, old));
                }
                i
            }
            None => {
                let i = self.repos.len();
                self.repos.push(RepoRef {
                    internal_id: i as i64 + 1,
                    stable_key: claim.stable_key(),
                    provider: claim.provider,
                    owner: claim.owner.clone(),
                    name: claim.name.clone(),
                    external_id: claim.external_id.clone(),
                });
                if let Some(id) = &claim.external_id {
                    self.by_id.insert((claim.provider, id.clone()), i);
                }
                i
            }
        };
        self.by_name.insert((claim.provider, lower), index);
        self.repos[index].clone()
    }

    pub fn get(&self, provider: Provider, owner_name: &str) -> Option<&RepoRef> {
        self.by_name
            .get(&(provider, owner_name.to_lowercase()))
            .map(|&i| &self.repos[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: Option<&str>, owner: &str, name: &str) -> RepoClaim {
        RepoClaim {
            provider: Provider::Github,
            external_id: id.map(str::to_string),
            owner: owner.into(),
            name: name.into(),
        }
    }

    #[test]
    fn case_and_renames_are_followed() {
        let mut r = MemoryRegistry::default();
        let a = r.resolve(&claim(Some("1"), "Acme", "Widgets"));
        let b = r.resolve(&claim(Some("1"), "acme", "widgets"));
        assert_eq!(a.internal_id, b.internal_id);
        let c = r.resolve(&claim(Some("1"), "acme", "gadgets"));
        assert_eq!(c.internal_id, a.internal_id);
        assert_eq!(c.name, "gadgets");
        assert_eq!(c.stable_key, a.stable_key);
        let d = r.resolve(&claim(None, "ACME", "Gadgets"));
        assert_eq!(d.internal_id, a.internal_id);
        let e = r.resolve(&claim(None, "other", "x"));
        assert_ne!(e.internal_id, a.internal_id);
        assert!(r.get(Provider::Github, "acme/gadgets").is_some());
    }
}

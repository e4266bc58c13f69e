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

    /// (owner, name) in lower case: the name-based identity. The two parts stay apart:
    /// owner `a/b` with name `c` is not owner `a` with name `b/c`.
    pub fn lower_name(&self) -> (String, String) {
        (self.owner.to_lowercase(), self.name.to_lowercase())
    }

    /// The immutable key a new registry entry gets; trigger ids are derived from it.
    ///
    /// `provider:id:<id>` when the producer gives an id. Else `provider:name:<owner>/<name>`
    /// (lower case) when neither part holds a `/` or a `%`: the key every registry entry had
    /// before owner and name were escaped, so existing keys and trigger ids stay. Else
    /// `provider:name-escaped:<owner>/<name>`, each part lower case with `%` written `%25`
    /// and `/` written `%2F`. Distinct (provider, owner, name) give distinct keys: within
    /// each form the one unescaped `/` splits the parts, and the forms differ in their tag
    /// (so no escaped key equals a key registered before).
    pub fn stable_key(&self) -> String {
        match &self.external_id {
            Some(id) => format!("{}:id:{id}", self.provider),
            None => {
                let (owner, name) = self.lower_name();
                let plain = |s: &str| !s.contains(['/', '%']);
                if plain(&owner) && plain(&name) {
                    format!("{}:name:{owner}/{name}", self.provider)
                } else {
                    format!(
                        "{}:name-escaped:{}/{}",
                        self.provider,
                        escape_key_part(&owner),
                        escape_key_part(&name)
                    )
                }
            }
        }
    }
}

/// `%` as `%25` and `/` as `%2F`; everything else as is.
fn escape_key_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// A name-based index key: provider, lower-case owner, lower-case name.
type NameKey = (Provider, String, String);

fn name_key(provider: Provider, (owner, name): (String, String)) -> NameKey {
    (provider, owner, name)
}

/// The registry for `simulate`: the same resolution as the Postgres store.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    repos: Vec<RepoRef>,
    by_id: HashMap<(Provider, String), usize>,
    by_name: HashMap<NameKey, usize>,
}

impl MemoryRegistry {
    /// Finds or registers the repository an event names, updating its spelling.
    pub fn resolve(&mut self, claim: &RepoClaim) -> RepoRef {
        let lower = name_key(claim.provider, claim.lower_name());
        let found = claim
            .external_id
            .as_ref()
            .and_then(|id| self.by_id.get(&(claim.provider, id.clone())).copied())
            .or_else(|| {
                // By name: an entry with no id, or any entry when the claim has no id.
                self.by_name
                    .get(&lower)
                    .copied()
                    .filter(|&i| claim.external_id.is_none() || self.repos[i].external_id.is_none())
            });
        let index = match found {
            Some(i) => {
                let repo = &mut self.repos[i];
                let old = name_key(
                    claim.provider,
                    (repo.owner.to_lowercase(), repo.name.to_lowercase()),
                );
                repo.owner.clone_from(&claim.owner);
                repo.name.clone_from(&claim.name);
                if repo.external_id.is_none() && claim.external_id.is_some() {
                    repo.external_id.clone_from(&claim.external_id);
                    if let Some(id) = &claim.external_id {
                        self.by_id.insert((claim.provider, id.clone()), i);
                    }
                }
                if old != lower {
                    self.by_name.remove(&old);
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
        self.by_name.insert(lower, index);
        self.repos[index].clone()
    }

    pub fn get(&self, provider: Provider, owner: &str, name: &str) -> Option<&RepoRef> {
        self.by_name
            .get(&(provider, owner.to_lowercase(), name.to_lowercase()))
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
        assert!(r.get(Provider::Github, "acme", "gadgets").is_some());
    }

    #[test]
    fn owner_and_name_that_join_alike_stay_two_repositories() {
        let mut r = MemoryRegistry::default();
        let a = r.resolve(&claim(None, "a/b", "c"));
        let b = r.resolve(&claim(None, "A", "B/C"));
        assert_ne!(a.internal_id, b.internal_id);
        assert_ne!(a.stable_key, b.stable_key);
        assert_eq!(
            r.resolve(&claim(None, "A/B", "C")).internal_id,
            a.internal_id
        );
    }

    #[test]
    fn stable_keys_are_unchanged_for_plain_names_and_distinct_otherwise() {
        assert_eq!(
            claim(None, "Acme", "Widgets").stable_key(),
            "github:name:acme/widgets"
        );
        assert_eq!(claim(Some("9"), "a/b", "c").stable_key(), "github:id:9");
        assert_eq!(
            claim(None, "a/b", "c").stable_key(),
            "github:name-escaped:a%2Fb/c"
        );
        assert_eq!(
            claim(None, "a", "b/c").stable_key(),
            "github:name-escaped:a/b%2Fc"
        );
        assert_eq!(
            claim(None, "a%", "b").stable_key(),
            "github:name-escaped:a%25/b"
        );
        // Every pair of distinct (owner, name) over these parts keys differently, and none
        // equals the key a registry entry got before escaping (the plain form, unescaped).
        let parts = [
            "a", "b", "a/b", "b/c", "a%2Fb", "a%25", "a%", "%", "/", "", "name:x",
        ];
        let mut seen = std::collections::HashMap::new();
        for o in parts {
            for n in parts {
                let key = claim(None, o, n).stable_key();
                if let Some(prev) = seen.insert(key.clone(), (o, n)) {
                    panic!("{prev:?} and {:?} share {key}", (o, n));
                }
            }
        }
        for o in parts {
            for n in parts {
                let old = format!("github:name:{o}/{n}");
                if let Some(&(o2, n2)) = seen.get(&old) {
                    assert_eq!((o2, n2), (o, n), "{old} is now another repository's key");
                }
            }
        }
    }
}

//! The repository registry in Postgres (the seed's `get_repo_id`), with an in-process
//! cache: ids never change, so a cached entry with the same spelling needs no query.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::PgPool;

use super::{Store, StoreError};
use crate::engine::RepoRef;
use crate::event::Provider;
use crate::repository::RepoClaim;

/// Claims already resolved, by claim (which includes the spelling).
#[derive(Debug, Default)]
pub struct RepoCache {
    by_claim: Mutex<HashMap<RepoClaim, RepoRef>>,
    by_id: Mutex<HashMap<i64, RepoRef>>,
}

impl RepoCache {
    fn get(&self, claim: &RepoClaim) -> Option<RepoRef> {
        self.by_claim.lock().ok()?.get(claim).cloned()
    }

    fn put(&self, claim: RepoClaim, repo: RepoRef) {
        if let Ok(mut m) = self.by_claim.lock() {
            if m.len() > 100_000 {
                m.clear();
            }
            m.insert(claim, repo.clone());
        }
        if let Ok(mut m) = self.by_id.lock() {
            if m.len() > 100_000 {
                m.clear();
            }
            m.insert(repo.internal_id, repo);
        }
    }

    fn get_id(&self, id: i64) -> Option<RepoRef> {
        self.by_id.lock().ok()?.get(&id).cloned()
    }
}

/// A `repositories` row as the queries below select it.
struct RepoRow {
    id: i64,
    stable_key: String,
    provider: String,
    owner: String,
    name: String,
    external_id: Option<String>,
}

impl From<RepoRow> for RepoRef {
    fn from(row: RepoRow) -> Self {
        RepoRef {
            internal_id: row.id,
            stable_key: row.stable_key,
            provider: Provider::parse(&row.provider).unwrap_or(Provider::Generic),
            owner: row.owner,
            name: row.name,
            external_id: row.external_id,
        }
    }
}

impl Store {
    /// Finds or registers the repository a claim names and records its latest spelling.
    /// Runs in autocommit mode, before the group transaction: registering is idempotent.
    pub async fn resolve_repository(&self, claim: &RepoClaim) -> Result<RepoRef, StoreError> {
        if let Some(r) = self.repos.get(claim) {
            return Ok(r);
        }
        let repo = resolve(&self.pool, claim).await?;
        self.repos.put(claim.clone(), repo.clone());
        Ok(repo)
    }

    /// Repositories by internal id (cached).
    pub(super) async fn repositories_by_id(
        &self,
        ids: &[i64],
    ) -> Result<HashMap<i64, RepoRef>, StoreError> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        for id in ids {
            match self.repos.get_id(*id) {
                Some(r) => {
                    out.insert(*id, r);
                }
                None => missing.push(*id),
            }
        }
        if !missing.is_empty() {
            let rows = sqlx::query_as!(
                RepoRow,
                "SELECT id, stable_key, provider, owner, name, external_id FROM repositories WHERE id = ANY($1)",
                &missing
            )
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                let r = RepoRef::from(row);
                out.insert(r.internal_id, r);
            }
        }
        Ok(out)
    }

    /// The seed's `get_repo_id`: the internal id of `owner/name` (case-insensitive).
    pub async fn repo_id(
        &self,
        provider: Provider,
        owner_name: &str,
    ) -> Result<Option<i64>, StoreError> {
        let Some((owner, name)) = owner_name.split_once('/') else {
            return Ok(None);
        };
        Ok(sqlx::query_scalar!(
            "SELECT id FROM repositories WHERE provider = $1 AND lower(owner) = lower($2) AND lower(name) = lower($3)
             ORDER BY updated_at DESC LIMIT 1",
            provider.as_str(),
            owner,
            name
        )
        .fetch_optional(&self.pool)
        .await?)
    }
}

async fn find_by_id(
    pool: &PgPool,
    claim: &RepoClaim,
    id: &str,
) -> Result<Option<RepoRef>, StoreError> {
    let row = sqlx::query_as!(
        RepoRow,
        "SELECT id, stable_key, provider, owner, name, external_id FROM repositories
         WHERE provider = $1 AND external_id = $2",
        claim.provider.as_str(),
        id
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(RepoRef::from))
}

async fn find_by_name(
    pool: &PgPool,
    claim: &RepoClaim,
    only_without_id: bool,
) -> Result<Option<RepoRef>, StoreError> {
    let row = sqlx::query_as!(
        RepoRow,
        "SELECT id, stable_key, provider, owner, name, external_id FROM repositories
         WHERE provider = $1 AND lower(owner) = lower($2) AND lower(name) = lower($3)
           AND (NOT $4 OR external_id IS NULL)
         ORDER BY updated_at DESC, id DESC LIMIT 1",
        claim.provider.as_str(),
        &claim.owner,
        &claim.name,
        only_without_id
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(RepoRef::from))
}

async fn resolve(pool: &PgPool, claim: &RepoClaim) -> Result<RepoRef, StoreError> {
    // A few attempts: a concurrent insert of the same repository makes the first one find
    // nothing and then conflict; the second finds it.
    for _ in 0..3 {
        let found = match &claim.external_id {
            Some(id) => match find_by_id(pool, claim, id).await? {
                Some(r) => Some(r),
                None => match find_by_name(pool, claim, true).await? {
                    // A repository registered by name only: adopt the id.
                    Some(r) => {
                        let adopted = sqlx::query!(
                            "UPDATE repositories SET external_id = $2 WHERE id = $1 AND external_id IS NULL",
                            r.internal_id,
                            id
                        )
                        .execute(pool)
                        .await;
                        match adopted {
                            Ok(_) => Some(RepoRef {
                                external_id: Some(id.clone()),
                                ..r
                            }),
                            Err(sqlx::Error::Database(e))
                                if e.code().as_deref() == Some("23505") =>
                            {
                                continue;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    None => None,
                },
            },
            None => find_by_name(pool, claim, false).await?,
        };
        if let Some(r) = found {
            if r.owner != claim.owner || r.name != claim.name {
                sqlx::query!(
                    "UPDATE repositories SET owner = $2, name = $3 WHERE id = $1",
                    r.internal_id,
                    &claim.owner,
                    &claim.name
                )
                .execute(pool)
                .await?;
            }
            return Ok(RepoRef {
                owner: claim.owner.clone(),
                name: claim.name.clone(),
                ..r
            });
        }
        let inserted = sqlx::query_as!(
            RepoRow,
            "INSERT INTO repositories (provider, external_id, owner, name, stable_key)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING
             RETURNING id, stable_key, provider, owner, name, external_id",
            claim.provider.as_str(),
            claim.external_id.as_deref(),
            &claim.owner,
            &claim.name,
            claim.stable_key()
        )
        .fetch_optional(pool)
        .await?;
        if let Some(row) = inserted {
            return Ok(row.into());
        }
        // Lost a race (or the stable key exists under another identity): by stable key.
        let row = sqlx::query_as!(
            RepoRow,
            "SELECT id, stable_key, provider, owner, name, external_id FROM repositories WHERE stable_key = $1",
            claim.stable_key()
        )
        .fetch_optional(pool)
        .await?;
        if let Some(row) = row {
            return Ok(row.into());
        }
    }
    Err(StoreError::Db(sqlx::Error::Protocol(format!(
        "could not register repository {}/{}",
        claim.owner, claim.name
    ))))
}

//! Opening the services a command needs, once, the same way for every command: the store
//! (with migrations applied, the schema checked, or neither) and the bus (connected, its
//! streams ensured, the worker's consumer when asked).

use std::sync::Arc;

use crate::bus::{Bus, BusError};
use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::store::{self, Store, StoreError, StoreOptions};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// What to do about the database schema before using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Create the database if configured so, and apply pending migrations.
    Migrate,
    /// Refuse to start when a migration this binary embeds is not applied (the role may
    /// not change the schema).
    Check,
    /// Use it as it is (read-only commands that fail clearly on a missing relation).
    AsIs,
}

/// Applies the migrations (creating the database first when `database.create_if_missing`).
pub async fn migrate(config: &Config) -> Result<(), StartupError> {
    if config.database.create_if_missing {
        store::create_database_if_missing(&config.database.url).await?;
    }
    let pool = store::connect(&config.database).await?;
    let migrated = store::migrate(&pool).await;
    pool.close().await;
    Ok(migrated?)
}

/// The store, with the engine built from the configured rules.
pub async fn open_store(config: &Config, schema: Schema) -> Result<Store, StartupError> {
    let engine = Arc::new(Engine::new(config.rule_set()?, config.limits));
    if schema == Schema::Migrate {
        migrate(config).await?;
    }
    let pool = store::connect(&config.database).await?;
    if schema == Schema::Check
        && let Err(e) = store::check_schema(&pool).await
    {
        pool.close().await;
        return Err(e.into());
    }
    Ok(Store::new(pool, engine, StoreOptions::from_config(config)))
}

/// The bus, connected, with the three streams created or updated.
pub async fn open_bus(config: &Config) -> Result<Bus, StartupError> {
    let bus = Bus::connect(config).await?;
    bus.ensure_streams().await?;
    Ok(bus)
}

/// Everything the worker needs: the store (migrated unless `no_migrate`, then checked), the
/// bus and its durable consumer.
pub async fn open_worker(config: &Config, no_migrate: bool) -> Result<(Store, Bus), StartupError> {
    let schema = if no_migrate {
        Schema::Check
    } else {
        Schema::Migrate
    };
    let store = open_store(config, schema).await?;
    let bus = open_bus(config).await?;
    bus.ensure_consumer().await?;
    Ok((store, bus))
}

//! The Postgres reference figures: its own ceiling on this machine (`pgbench -N -c 8`) and
//! one client committing one transaction at a time (`pgbench -N -c 1`).

use anyhow::{Context, Result, bail};
use sqlx::Connection;

use crate::services::{database_url, unique, with_database};

/// `pgbench -i` into a scratch database, `pgbench -N -c C -T 10` for each of `clients` in
/// turn, drop it; the tps of each.
pub async fn pgbench(clients: &[u32]) -> Result<Vec<f64>> {
    let db = unique("rwbench_pgbench");
    let admin = with_database(&database_url(), "postgres");
    let mut conn = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query(&(format!("CREATE DATABASE {db}")))
        .execute(&mut conn)
        .await?;
    let url = with_database(&database_url(), &db);
    let result = async {
        let init = tokio::process::Command::new("pgbench")
            .args(["-i", "-q", &url])
            .output()
            .await?;
        if !init.status.success() {
            bail!(
                "pgbench -i failed: {}",
                String::from_utf8_lossy(&init.stderr)
            );
        }
        let mut tps = Vec::with_capacity(clients.len());
        for c in clients {
            let run = tokio::process::Command::new("pgbench")
                .args(["-N", "-c", &c.to_string(), "-T", "10", &url])
                .output()
                .await?;
            let text = String::from_utf8_lossy(&run.stdout);
            if !run.status.success() {
                bail!("pgbench failed: {}", String::from_utf8_lossy(&run.stderr));
            }
            tps.push(
                text.lines()
                    .filter_map(|l| l.strip_prefix("tps = "))
                    .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
                    .next_back()
                    .context("no `tps = ` line in pgbench's output")?,
            );
        }
        Ok(tps)
    }
    .await;
    sqlx::query(&(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    result
}

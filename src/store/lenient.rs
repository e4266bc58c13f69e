//! [`Lenient`]: a JSON or JSONB column decoded by the query macros without failing the row.
//!
//! `sqlx::query!` decodes every column of a row or fails the whole statement. The stored
//! states (groups, streaks, budgets, jobs) must not: a row whose JSON does not decode is
//! set aside or counted as empty by the caller, and the rest of the batch goes on. So those
//! columns are read as `state AS "state!: Lenient<GroupState>"`: the same decoding as
//! `sqlx::types::Json<T>` (straight from the json or jsonb bytes into `T`, no intermediate value),
//! with its error kept for the caller instead of returned.

use serde::Deserialize;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::types::Json;
use sqlx::{Decode, Postgres, Type};

/// A JSON or JSONB value decoded as `T`, or why it could not be (the error `Json<T>` gives: serde's,
/// or an unexpected NULL).
#[derive(Debug)]
pub struct Lenient<T>(pub Result<T, BoxDynError>);

impl<T> Type<Postgres> for Lenient<T> {
    fn type_info() -> PgTypeInfo {
        <Json<T> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Json<T> as Type<Postgres>>::compatible(ty)
    }
}

impl<'r, T: Deserialize<'r> + 'r> Decode<'r, Postgres> for Lenient<T> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Lenient(
            <Json<T> as Decode<'r, Postgres>>::decode(value).map(|j| j.0),
        ))
    }
}

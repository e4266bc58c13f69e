//! Glob filters over repositories, branches, workflows and authors.

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::RulesError;

/// Glob patterns over a string; `*` matches everything, `/` included.
#[derive(Debug, Clone)]
pub struct Filter {
    set: GlobSet,
    pub(super) any: bool,
}

impl Filter {
    /// Compiles `patterns` (at least one); an error names `key`.
    pub fn compile(
        key: &str,
        patterns: &[String],
        case_insensitive: bool,
    ) -> Result<Filter, RulesError> {
        if patterns.is_empty() {
            return Err(RulesError {
                key: key.into(),
                message: "must list at least one pattern (use [\"*\"] for all)".into(),
            });
        }
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let g = globset::GlobBuilder::new(p)
                .case_insensitive(case_insensitive)
                .literal_separator(false)
                .build()
                .map_err(|e| RulesError {
                    key: key.into(),
                    message: format!("bad pattern {p:?}: {e}"),
                })?;
            b.add(g);
        }
        let set = b.build().map_err(|e| RulesError {
            key: key.into(),
            message: e.to_string(),
        })?;
        Ok(Filter {
            set,
            any: patterns.iter().any(|p| p == "*"),
        })
    }

    /// Matches everything (`["*"]`).
    pub fn any() -> Filter {
        let mut b = GlobSetBuilder::new();
        if let Ok(g) = Glob::new("*") {
            b.add(g);
        }
        Filter {
            set: b.build().unwrap_or_else(|_| GlobSet::empty()),
            any: true,
        }
    }

    pub fn matches(&self, s: &str) -> bool {
        self.any || self.set.is_match(s)
    }
}

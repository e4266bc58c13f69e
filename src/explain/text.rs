//! The text forms: an explanation for a person, and the groups table.

use super::list::GroupRow;
use super::verdict::{Explanation, show_time, status_str};

/// Left-aligned columns separated by two spaces, no trailing blanks. Control characters
/// in a cell (a row stored before the decoder refused them) are escaped.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| esc(c)).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = w.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Stored text as it may be printed: control characters escaped.
fn esc(s: &str) -> String {
    crate::printable::escape_controls(s).into_owned()
}

fn or_dash(s: Option<&str>) -> String {
    s.map_or_else(|| "-".to_string(), str::to_string)
}

/// `runwatch explain`'s text form.
pub fn explanation(e: &Explanation) -> String {
    let g = &e.group;
    let pr = g.pr_number.map_or_else(
        || "no pull request (push build)".to_string(),
        |p| format!("pull request {p}"),
    );
    let branch = g
        .branch
        .as_deref()
        .map_or_else(|| "no branch".to_string(), |b| format!("branch {}", esc(b)));
    let mut out = format!(
        "group {}: {} {}, {pr}, commit {}, {branch}\n",
        g.id,
        g.provider,
        esc(&g.repository),
        esc(&g.commit_sha)
    );
    if e.runs.is_empty() {
        out.push_str("runs: none\n");
    } else {
        out.push_str("runs:\n");
        let rows: Vec<Vec<String>> = e
            .runs
            .iter()
            .map(|r| {
                vec![
                    r.run_id.clone(),
                    r.workflow.clone(),
                    r.attempt.to_string(),
                    status_str(r.status).to_string(),
                    or_dash(r.conclusion.map(|c| c.as_str())),
                    show_time(r.updated_at),
                ]
            })
            .collect();
        for line in table(
            &[
                "RUN",
                "WORKFLOW",
                "ATTEMPT",
                "STATUS",
                "CONCLUSION",
                "UPDATED_AT",
            ],
            &rows,
        )
        .lines()
        {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    let jobs: Vec<Vec<String>> = e
        .runs
        .iter()
        .flat_map(|r| {
            r.jobs.iter().map(|j| {
                vec![
                    r.run_id.clone(),
                    j.job_id.clone(),
                    j.name.clone(),
                    status_str(j.status).to_string(),
                    or_dash(j.conclusion.map(|c| c.as_str())),
                    if j.failed_steps.is_empty() {
                        "-".to_string()
                    } else {
                        j.failed_steps.join("; ")
                    },
                ]
            })
        })
        .collect();
    if !jobs.is_empty() {
        out.push_str("jobs:\n");
        for line in table(
            &["RUN", "JOB", "NAME", "STATUS", "CONCLUSION", "FAILED_STEPS"],
            &jobs,
        )
        .lines()
        {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("rules:\n");
    for r in &e.rules {
        out.push_str(&format!(
            "  {} ({}): {}\n",
            esc(&r.rule),
            r.kind,
            esc(&r.reason)
        ));
    }
    out
}

/// `runwatch groups list`'s table.
pub fn groups_table(rows: &[GroupRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.provider.clone(),
                r.repository.clone(),
                r.pr_number
                    .map_or_else(|| "-".to_string(), |p| p.to_string()),
                r.commit_sha.clone(),
                or_dash(r.branch.as_deref()),
                r.runs.to_string(),
                r.state.as_str().to_string(),
                show_time(r.updated_at),
                r.next_due.map_or_else(|| "-".to_string(), show_time),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "PROVIDER",
            "REPOSITORY",
            "PR",
            "COMMIT",
            "BRANCH",
            "RUNS",
            "STATE",
            "UPDATED_AT",
            "NEXT_DUE",
        ],
        &cells,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_blanks() {
        let t = table(
            &["A", "BB"],
            &[vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]],
        );
        assert_eq!(t, "A    BB\nxyz  1\nq\n");
    }

    #[test]
    fn control_characters_in_cells_are_escaped() {
        let t = table(&["A", "B"], &[vec!["x\u{1b}[2J\r\ny".into(), "z".into()]]);
        assert_eq!(t, "A                B\nx\\u{1b}[2J\\r\\ny  z\n");
    }
}

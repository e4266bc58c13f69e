//! Lanes: the record transactions of one batch that run side by side.
//!
//! A pulled batch is split by repository into `consumer.lanes` lanes, each keeping the
//! stream's order of its events; the lanes' transactions run at once on their own
//! connections, and the batch is finished (triggers published, inputs acked) when all
//! of them have committed. Every row a decision reads or writes belongs to one repository
//! (its groups, their commits' pull requests and heads, its streaks and cooldowns), so
//! lanes touch disjoint rows, and per repository the decisions are taken in stream order,
//! as one transaction per batch took them: `simulate`, replay and one worker still agree.
//! The repository's key is its lower-cased `owner/name` (whatever the provider), hashed with
//! FNV-1a, so a lane is also where a partition served by its own database could be cut.

use crate::pull_request::Input;

/// The lane of `input` among `lanes`.
pub fn lane_of(input: &Input, lanes: usize) -> usize {
    let r = input.repository();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in r
        .owner
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(r.name.bytes())
        .map(|b| b.to_ascii_lowercase())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // `lanes` is at least 1 (configuration); the remainder is below it.
    usize::try_from(h % lanes.max(1) as u64).unwrap_or(0)
}

/// Splits `batch` into at most `lanes` non-empty lanes, each in the batch's order.
pub fn split<T>(batch: Vec<T>, lanes: usize, input: impl Fn(&T) -> &Input) -> Vec<Vec<T>> {
    let lanes = lanes.max(1);
    if lanes == 1 {
        return vec![batch];
    }
    let mut out: Vec<Vec<T>> = (0..lanes).map(|_| Vec::new()).collect();
    for item in batch {
        let lane = lane_of(input(&item), lanes);
        if let Some(l) = out.get_mut(lane) {
            l.push(item);
        }
    }
    out.retain(|l| !l.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Limits;
    use crate::pull_request::decode_input;

    fn input(owner: &str, name: &str, id: &str) -> Input {
        let line = serde_json::json!({
            "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
            "repository": {"owner": owner, "name": name},
            "commit_sha": "abc", "pr_number": 1,
            "run": {"id": id, "workflow": "ci", "status": "queued", "updated_at": "2026-01-01T00:00:00Z"},
        });
        decode_input(line.to_string().as_bytes(), &Limits::default()).expect("valid")
    }

    #[test]
    fn a_repository_keeps_one_lane_and_its_order() {
        let batch: Vec<Input> = (0..200)
            .map(|i| {
                let repo = format!("repo-{}", i % 7);
                let owner = if i % 2 == 0 { "Acme" } else { "acme" };
                input(owner, &repo, &format!("e{i}"))
            })
            .collect();
        let lanes = split(batch, 4, |i| i);
        assert!(
            lanes.len() > 1,
            "seven repositories spread over several lanes"
        );
        let mut seen = std::collections::BTreeMap::new();
        for (n, lane) in lanes.iter().enumerate() {
            let mut last = -1i64;
            for i in lane {
                let r = i.repository();
                let key = format!("{}/{}", r.owner.to_lowercase(), r.name);
                assert_eq!(
                    *seen.entry(key).or_insert(n),
                    n,
                    "one repository, one lane (owner case ignored)"
                );
                let Input::Run(e) = i else { panic!("a run") };
                let k: i64 = e.event_id[1..].parse().expect("number");
                assert!(k > last, "a lane keeps the batch's order");
                last = k;
            }
        }
        assert_eq!(lanes.iter().map(Vec::len).sum::<usize>(), 200);
    }

    #[test]
    fn one_lane_is_the_batch_as_it_is() {
        let batch = vec![input("a", "b", "1"), input("c", "d", "2")];
        let lanes = split(batch.clone(), 1, |i| i);
        assert_eq!(lanes, vec![batch]);
    }
}

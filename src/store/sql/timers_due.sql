-- The timer sweep: groups whose settle or cooldown timer is due, by wall clock or by
-- event time ($1), at most $2 of each kind, locked with SKIP LOCKED so replicas take
-- disjoint rows.
--
-- Each kind is read from its own partial index (`groups_due_wall`, `groups_due_event`:
-- only rows with a timer set) in due order and stops after $2 rows, so the sweep costs
-- O(log n + due) whatever the table holds and whatever the statistics say. The single
-- `WHERE due_wall_at <= now() OR due_event_at <= $1 ORDER BY id` it replaces let the
-- planner walk the primary key and filter every row when its estimate of the matching rows
-- was stale (hundreds of milliseconds at a few hundred thousand groups, with no timer due).
WITH wall AS (
    SELECT id, repository_id, pr_number, commit_sha, branch, state FROM groups
    WHERE due_wall_at <= now()
    ORDER BY due_wall_at LIMIT $2
    FOR UPDATE SKIP LOCKED
), event AS (
    SELECT id, repository_id, pr_number, commit_sha, branch, state FROM groups
    WHERE due_event_at <= $1
    ORDER BY due_event_at LIMIT $2
    FOR UPDATE SKIP LOCKED
)
-- The first branch names the columns as `sqlx::query_file_as!` reads them (the columns of a
-- UNION carry no NOT NULL: "!" where the code reads a non-null value, `Lenient` for the
-- state: store/lenient.rs); `ORDER BY 1` is `id`, which that name hides.
SELECT id AS "id!", repository_id AS "repository_id!", pr_number, commit_sha AS "commit_sha!",
       branch, state AS "state!: Lenient<GroupState>" FROM wall
UNION ALL
SELECT * FROM event e WHERE NOT EXISTS (SELECT 1 FROM wall w WHERE w.id = e.id)
ORDER BY 1

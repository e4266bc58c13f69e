-- Room on each page of `groups` for one more version of one row, which is what a HOT update
-- needs: a group's row is about 900 bytes with five runs (runs stored as arrays), and
-- `fillfactor = 70` left 2.4 KB of each page free, so a page held 6 rows where 7 fit with
-- room for the next version. At 85 a page keeps 1.2 KB free, more than one version of such
-- a row; page pruning frees the versions that no snapshot sees any longer, so the room is
-- there again for the next update. (Pages written from now on; existing pages keep their
-- rows as they are.)
ALTER TABLE groups SET (fillfactor = 85);

-- 0007_workspace_name_key keeps workspace names unique regardless of case:
-- commands name workspaces (--workspace acme), and two whose names differ
-- only in case would be taken for each other. name_key is keyward.NameKey
-- of the name, which Go computes (SQLite's lower() knows only ASCII); the
-- migration's step in Go fills it for the workspaces there and then adds
-- the unique index (see nameKeys).
ALTER TABLE workspaces ADD COLUMN name_key TEXT;

-- 0007_workspace_name_key keeps workspace names unique regardless of case:
-- commands name workspaces (--workspace acme), and two whose names differ
-- only in case would be taken for each other. name_key is keyward.NameKey
-- of the name, computed in Go so that both stores fold alike (lower()
-- depends on the database's collation); the migration's step in Go fills
-- it for the workspaces there, then makes it unique (see nameKeys).
ALTER TABLE workspaces ADD COLUMN name_key text COLLATE "C";

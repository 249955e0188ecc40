"""The embedded SQLite store, in layers: `executor` (one thread owning the sqlite3
connection), `transactions` (what runs on it), `group_commit` (calls sharing transactions),
`migrations` (the versioned schema), `rows` (rows to models and back) and `repository`
(`SqliteStore`: the SQL of the `Store` protocol)."""

"""The PostgreSQL store, for several replicas sharing one database, in layers: `connection`
(the asyncpg pool, and errors that say where without the password), `migrations` (the
versioned schema), `group_commit` (calls sharing transactions, batches) and `repository`
(`PostgresStore`: the SQL of the `Store` protocol)."""

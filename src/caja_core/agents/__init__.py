"""The server side of ``caja agent``: a command queue per register in the database (works across several app
instances on one PostgreSQL, and on SQLite) and the ``AgentChannel`` providers use to reach the register PC."""

"""Drop-in replacements for other libraries' pools, on fastpool's core.

``fastpool.compat.psycopg_pool``: ``ConnectionPool``, ``NullConnectionPool``,
``AsyncConnectionPool`` and ``AsyncNullConnectionPool`` with psycopg_pool
3.3's constructor, methods, exceptions and stats: switching is the import.
"""

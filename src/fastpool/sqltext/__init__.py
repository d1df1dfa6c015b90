"""Reading SQL text: a lexer for statement shapes and aliases (``lexer``), and
which tables a statement reads and writes (``tables``, with sqlglot)."""

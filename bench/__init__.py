"""The `bench` command: runner, metrics, result records, tables and soundness checks."""

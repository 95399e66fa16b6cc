"""Presenting records: the paper's tables, the figures and the static HTML report. Imports
`bench.results`, `bench.cells` and `bench.grids`; never evaluation or the run layer."""

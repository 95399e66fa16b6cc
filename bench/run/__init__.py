"""Running grids: planning (`plan`), job files (`jobs`), the worker shell, the local and SLURM
executors, `bench status`, the up-front validation and the cost estimates. Imports `bench.cells`,
`bench.results` and `bench.evaluation`; never the report layer."""

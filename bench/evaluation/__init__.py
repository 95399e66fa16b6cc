"""Evaluating a group of cells: prepare its model once (`prepare`), then score the test set clean and
under each cell's attack (`evaluate`), with the metrics and the soundness checks (`bench check`).
Imports `bench.cells` and `bench.results`, never the run or report layers."""

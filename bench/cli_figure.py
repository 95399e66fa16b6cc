"""`bench figure maps|strength`: the paper's Figure 1 and attack-strength curves from result records.

(`bench figure attention-degree`, Figure 2, runs `bench attention-degree`: it needs the model.)
"""
from __future__ import annotations

import sys
from pathlib import Path

from robustad.bench.results.loading import load_records


def _records(results) -> list:
    records, problems = load_records(results)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    return records


def select_maps_record(records: list, args):
    """The newest done record with example maps matching the command's filters; an error lists the choices."""
    from robustad.bench.report.tables import _matches

    filters = {k: getattr(args, k, None) for k in ("method", "dataset", "attack", "eps", "steps", "objective", "norm",
                                                   "profile")}
    filters = {k: v for k, v in filters.items() if v is not None}
    candidates = [r for r in records if r.done and r.category == args.category and _matches(r, filters)]
    with_maps = [r for r in candidates if r.examples]
    if not with_maps:
        given = ", ".join(f"{k}={v}" for k, v in {**filters, "category": args.category}.items())
        if candidates:
            raise ValueError(f"the records matching {given} name no example maps (written before the runner saved "
                             f"them); rerun their cells with --force")
        raise ValueError(f"no done record matches {given} under --results {args.results}")
    chosen = max(with_maps, key=lambda r: (r.seed == 0, r.created))
    if len(with_maps) > 1:
        print(f"{len(with_maps)} records match; drawing {chosen.cell_id} (narrow with --eps, --steps, --seed)",
              file=sys.stderr)
    return chosen


def cmd_figure_maps(args) -> int:
    from robustad.bench.report.maps_figure import write_maps_figure

    results = Path(args.results).expanduser().resolve()
    records = _records(results)
    if args.seed is not None:
        records = [r for r in records if r.seed == args.seed]
    record = select_maps_record(records, args)
    out = Path(args.out) if args.out else results / "figures" / f"maps__{record.cell_id}"
    for path in write_maps_figure(results, record, out):
        print(path)
    return 0


def cmd_figure_strength(args) -> int:
    from robustad.bench.report.strength_figure import write_strength_figure
    from robustad.bench.report.tables import _matches

    results = Path(args.results).expanduser().resolve()
    filters = {k: getattr(args, k) for k in ("method", "dataset", "attack", "objective", "norm", "profile")}
    filters = {k: v for k, v in filters.items() if v is not None}
    records = [r for r in _records(results) if _matches(r, filters)]
    if not records:
        raise ValueError(f"no result records under {results} match {filters or 'the filters'}")
    out = Path(args.out) if args.out else results / "figures" / f"strength__{args.task}__by-{args.by}"
    for path in write_strength_figure(records, out, task=args.task, by=args.by):
        print(path)
    return 0


def add_figure_parser(sub, results_default: str, add_attention_degree_arguments, cmd_attention_degree) -> None:
    figure = sub.add_parser("figure", help="figures from result records: maps (Figure 1), strength, attention-degree")
    kinds = figure.add_subparsers(dest="figure_command", required=True)

    maps = kinds.add_parser("maps", help="image, ground truth, clean map, adversarial image and map (Figure 1)")
    maps.add_argument("--method", required=True, help="method, or its label with config overrides")
    maps.add_argument("--dataset", required=True)
    maps.add_argument("--category", required=True)
    maps.add_argument("--attack", required=True, help="e.g. pgd, pgd-1000, worst:pgd,square")
    for name in ("eps", "objective", "norm", "profile"):
        maps.add_argument(f"--{name}", default=None, help=f"only records with this {name}")
    maps.add_argument("--steps", type=int, default=None)
    maps.add_argument("--seed", type=int, default=None)
    maps.add_argument("--results", default=results_default)
    maps.add_argument("--out", default=None, help="output path without extension (default: <results>/figures/maps__<cell>)")
    maps.set_defaults(func=cmd_figure_maps)

    strength = kinds.add_parser("strength", help="adversarial AUROC against attack steps and against ε")
    strength.add_argument("--results", default=results_default)
    strength.add_argument("--task", default="ad", choices=["ad", "al"], help="ad: image AUROC, al: pixel AUROC")
    strength.add_argument("--by", default="method", choices=["method", "attack"], help="one line per method or per attack")
    for name in ("method", "dataset", "attack", "objective", "norm", "profile"):
        strength.add_argument(f"--{name}", default=None, help=f"only records with this {name}")
    strength.add_argument("--out", default=None,
                          help="output path without extension (default: <results>/figures/strength__<task>__by-<by>)")
    strength.set_defaults(func=cmd_figure_strength)

    degree = kinds.add_parser("attention-degree", help="attention degree vs vulnerability (Figure 2; trains or "
                                                       "loads the model)")
    add_attention_degree_arguments(degree)
    degree.set_defaults(func=cmd_attention_degree)

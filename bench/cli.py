"""`bench`: a thin command line over the library (same defaults as the Python API).

    bench run   --method M --attack A --dataset D [--category C|all] ...   one record per cell
    bench run   --grid paper/table4 --root mvtec=DIR --root visa=DIR ...  a grid file's cells
                [--executor local --workers N | --executor slurm ...] [--shard i/n] [--dry-run]
    bench table --results DIR --format latex|markdown|csv --layout methods|categories|attacks
    bench table --grid paper/table1 [--reference paper|FILE]               as the paper lays it out
    bench grid  list | show NAME [--root dataset=DIR ...]                  cells, trainings, not runnable
    bench figure maps|strength|attention-degree ...                      Figure 1, strength curves, Figure 2
    bench report --results DIR --out site/                                 static HTML report
    bench status --results DIR                                             done/running/failed/pending groups
    bench list  [methods|attacks|datasets]
    bench check --method M --dataset D [--category C]                      soundness checks
    bench data  info|download ...
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from robustad.core.parsing import parse_eps, parse_number
from robustad.core.profiles import Profile

DEFAULT_RESULTS = "results"
PROFILE_NAMES = [profile.value for profile in Profile]


def parse_config_items(items: list[str] | None) -> tuple[tuple[str, str], ...]:
    """`--config KEY=VALUE` items as sorted pairs; a malformed item is an error naming it."""
    pairs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"bench: error: --config {item!r}: expected KEY=VALUE")
        pairs[key.strip()] = value.strip()
    return tuple(sorted(pairs.items()))


def eps_argument(text: str) -> str:
    try:
        parse_eps(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grid", default=None,
                   help="run a grid file's cells: a shipped grid (paper/table4; see `bench grid list`) or a "
                        "TOML file; instead of --method, --dataset, --attack ...")
    p.add_argument("--method", action="append", default=None,
                   help="registered method or package.module:Class (repeat for several)")
    p.add_argument("--attack", action="append", default=None,
                   help="attack name, e.g. pgd, pgd-1000, sea, worst:pgd,sea (repeat for several; default pgd)")
    p.add_argument("--dataset", action="append", default=None, help="dataset name (repeat for several)")
    add_root_argument(p)
    p.add_argument("--category", default=None, help="category, comma list, or 'all' (default: all)")
    p.add_argument("--norm", default=None, choices=["linf", "l2"], help="default linf")
    p.add_argument("--eps", action="append", type=eps_argument, default=None,
                   help="budget in pixel units, e.g. 8/255 or 0.0314 (repeat for several; default 8/255)")
    p.add_argument("--steps", type=int, default=None, help="attack iterations (default: profile's)")
    p.add_argument("--objective", default=None, choices=["localization", "detection"],
                   help="default localization")
    p.add_argument("--loss", default=None, choices=["margin", "ce"], help="attack loss (default: margin)")
    p.add_argument("--restarts", type=int, default=None)
    p.add_argument("--random-start", dest="random_start", action="store_true", default=None)
    p.add_argument("--step-size", dest="step_size", type=eps_argument, default=None)
    p.add_argument("--attack-option", dest="attack_option", action="append", metavar="KEY=VALUE",
                   help="an option of the attack's constructor, e.g. losses=masked-ce,balanced-ce,js,margin "
                        "for sea (repeatable; recorded with the cell)")
    p.add_argument("--profile", default=None, choices=PROFILE_NAMES,
                   help="quick (default; with --grid, the grid's), long, paper or official (core/profiles.py)")
    p.add_argument("--seed", action="append", type=int, default=None,
                   help="seed (repeat for several; default 0; with --grid, the grid's)")
    p.add_argument("--results", default=DEFAULT_RESULTS, help="output folder (default: results)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="autocast precision of evaluation and attacks (default fp32)")
    p.add_argument("--config", action="append", metavar="KEY=VALUE", help="set a field of the method's config")
    p.add_argument("--attack-batch", dest="attack_batch", type=int, default=None,
                   help="images attacked at once (default: the profile's test batch; halved on CUDA out-of-memory)")
    p.add_argument("--evaluations", type=int, default=None, metavar="R",
                   help="scoring passes of a randomized detector; its metrics are their mean, with std and worst "
                        "beside (default 5; a deterministic detector is scored once)")
    p.add_argument("--force", action="store_true", help="rerun cells whose record exists")
    from robustad.bench.run.plan import add_execution_arguments

    add_execution_arguments(p)


def add_root_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", action="append", default=None, metavar="[DATASET=]DIR",
                   help="dataset root folder: DIR for every dataset, or DATASET=DIR for one "
                        "(repeat, e.g. --root mvtec=/data/mvtec --root visa=/data/visa; default: the dataset's own)")


def parse_option_value(text: str):
    """"true"/"false" → bool, "3" → int, "0.5" or "8/255" → float, anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return parse_number(text)
    except ValueError:
        return text


def attack_options_of(args) -> dict:
    """The attack options of `bench run`: the named flags plus every --attack-option KEY=VALUE."""
    options = {
        "loss": args.loss, "restarts": args.restarts, "random_start": args.random_start,
        "step_size": parse_eps(args.step_size) if args.step_size is not None else None,
    }
    for item in getattr(args, "attack_option", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--attack-option {item!r}: expected KEY=VALUE, e.g. losses=masked-ce,js")
        options[key.strip()] = parse_option_value(value)
    return {k: v for k, v in options.items() if v is not None}


def build_specs(args) -> list:
    from robustad.bench.cells import CellSpec, expand_categories

    config = parse_config_items(args.config)
    attack_options = tuple(sorted(attack_options_of(args).items()))
    specs = []
    for method, dataset in itertools.product(args.method, args.dataset):
        root = root_of(args, dataset)
        categories = expand_categories(dataset, root, args.category or "all")
        for category, attack, eps_text, seed in itertools.product(
            categories, args.attack or ["pgd"], args.eps or ["8/255"], args.seed or [0]
        ):
            specs.append(CellSpec(
                method=method, dataset=dataset, category=category, attack=attack, norm=args.norm,
                eps=parse_eps(eps_text), eps_text=eps_text, steps=args.steps, seed=seed,
                profile=args.profile, objective=args.objective, root=root, config=config,
                attack_options=attack_options,
            ))
    return specs


def validate_run_arguments(args) -> None:
    """Fails fast (before any training) on unknown methods, attacks, config keys and options.

    Methods are checked through their configs, not built: the runner builds each detector once.
    """
    from robustad.attacks import create_attack
    from robustad.methods import method_config

    from robustad.bench.cells import expand_categories
    from robustad.bench.run.validation import check_categories, check_eps, check_method_inputs, check_results_writable

    config = dict(parse_config_items(args.config))
    for method in args.method:
        method_config(method, profile=args.profile, **config)
    for attack in args.attack or ["pgd"]:
        create_attack(attack, norm=args.norm, eps=parse_eps((args.eps or ["8/255"])[0]), steps=args.steps,
                      objective=args.objective, **attack_options_of(args))
    check_eps(args.norm, [parse_eps(e) for e in args.eps or ["8/255"]])
    for dataset in args.dataset:
        root = root_of(args, dataset)
        categories = expand_categories(dataset, root, args.category or "all")
        check_categories(dataset, root, categories)
        for method in args.method:
            check_method_inputs(method, args.profile, config, dataset, categories, args.objective)
    check_results_writable(args.results)


def root_of(args, dataset: str) -> str | None:
    from robustad.bench.cli_grid import parse_roots

    roots = parse_roots(args.root)
    return roots.get(dataset, roots.get(None))


CELL_OPTIONS = ("method", "dataset", "attack", "category", "norm", "eps", "steps", "objective", "loss", "restarts",
                "random_start", "step_size", "attack_option", "config")


def cmd_run(args) -> int:
    from robustad.bench.run.plan import check_execution_arguments, execute_run
    from robustad.bench.cli_grid import parse_roots

    parse_roots(args.root)  # a malformed --root fails first
    if args.grid:
        from robustad.bench.cli_grid import grid_specs

        given = [name for name in CELL_OPTIONS if getattr(args, name) is not None]
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')}: not with --grid (the grid file names its cells; "
                             f"copy it and edit the copy to change them)")
        check_execution_arguments(args)
        specs = grid_specs(args)
        return execute_run(specs, args, show=print_record) if specs else 2
    missing = [name for name in ("method", "dataset") if not getattr(args, name)]
    if missing:
        raise ValueError(f"--{missing[0]} is required (or --grid NAME)")
    if args.evaluations is not None and args.evaluations < 1:
        raise ValueError(f"--evaluations {args.evaluations}: expected a number of scoring passes >= 1")
    args.profile = args.profile or "quick"
    args.norm = args.norm or "linf"
    args.objective = args.objective or "localization"
    check_execution_arguments(args)
    validate_run_arguments(args)
    return execute_run(build_specs(args), args, show=print_record)


def print_record(record) -> None:
    from robustad.bench.report.tables import format_cell_result

    print(format_cell_result(record), flush=True)


def cmd_table(args) -> int:
    from robustad.bench.report.tables import build_table, load_records, write_tables

    records, problems = load_records(args.results)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    filters = {k: getattr(args, k) for k in ("method", "dataset", "attack", "steps", "objective", "norm", "eps", "profile")}
    filters = {k: v for k, v in filters.items() if v is not None}
    reference = None
    if args.reference:
        from robustad.bench.results.reference import load_reference

        reference = load_reference(args.reference)
        from robustad.bench.report.tables import unmatched_reference_rows

        for line in unmatched_reference_rows(reference, records):
            print(f"warning: reference row {line}", file=sys.stderr)
    if args.grid:
        from robustad.bench.report.grid_table import write_grid_table

        extra = [name for name in filters if name != "profile"]
        if extra:
            raise ValueError(f"--{extra[0]}: not with --grid (the grid chooses the records; --profile may "
                             f"choose another profile than the grid's)")
        return write_grid_table(args, records, reference)
    text = build_table(records, layout=args.layout, task=args.task, fmt=args.format, reference=reference,
                       **filters) if records else None
    try:
        paths = write_tables(args.results, layout=args.layout, task=args.task, fmt=args.format, records=records,
                             reference=reference, **filters)
    except OSError as err:  # a read-only results folder: the table is still shown
        print(text)
        print(f"bench: error: could not save the table under {Path(args.results).resolve() / 'tables'} "
              f"({err.strerror or err})", file=sys.stderr)
        return 1
    for path in paths:
        print(Path(path).read_text())
        print(f"written to {path}", file=sys.stderr)
    return 0


def cmd_grid(args) -> int:
    from robustad.bench.cli_grid import cmd_grid as grid

    return grid(args)


def cmd_status(args) -> int:
    from robustad.bench.run.jobs import grid_of
    from robustad.bench.run.slurm import queued_groups
    from robustad.bench.run.status import format_status, group_statuses

    results = Path(args.results).expanduser().resolve()
    groups, problems = grid_of(results)
    for problem in problems:
        print(f"warning: {problem}")
    if not groups:
        print(f"no grid in {results}: no job files under {results / 'jobs'} (bench run writes them)")
        return 1
    statuses = group_statuses(results, groups, queued=queued_groups(results))
    print(f"{results}:")
    print(format_status(statuses, verbose=args.verbose))
    return 0


def cmd_list(args) -> int:
    from robustad.bench.catalog import listing

    print(listing([args.kind] if args.kind else ["methods", "attacks", "datasets"]))
    return 0


def single_cell(args, attack: str):
    """The one cell of `bench check` / `bench attention-degree`, checked as `bench run` checks its cells
    (names, config, the method's own inputs, the objective), before any training."""
    from robustad.bench.cells import CellSpec
    from robustad.bench.run.validation import check_categories, check_eps, check_method_inputs
    from robustad.datasets import list_categories

    root = root_of(args, args.dataset)
    category = args.category or list_categories(args.dataset, root)[0]
    check_categories(args.dataset, root, [category])
    check_eps(args.norm, [parse_eps(args.eps)])
    spec = CellSpec(method=args.method, dataset=args.dataset, category=category, attack=attack, norm=args.norm,
                    eps=parse_eps(args.eps), eps_text=args.eps, steps=args.steps, seed=args.seed,
                    profile=args.profile, objective=getattr(args, "objective", "localization"), root=root,
                    config=parse_config_items(args.config))
    check_method_inputs(spec.method, spec.profile, spec.config_overrides, spec.dataset, [category], spec.objective)
    return spec


def cmd_check(args) -> int:
    from robustad.attacks import create_attack
    from robustad.bench.evaluation.soundness import run_soundness

    create_attack(args.attack, norm=args.norm, eps=parse_eps(args.eps))  # an unknown attack fails before training
    if args.eot is not None and args.eot < 1:
        raise ValueError(f"--eot {args.eot}: expected a number of passes >= 1")
    spec = single_cell(args, args.attack)
    outcome, report = run_soundness(spec, results=args.results, device=args.device, max_images=args.max_images,
                                    margin=args.margin, eot=args.eot, log=lambda m: print(m, file=sys.stderr))
    print(report)
    return 1 if any(r.passed is False for r in outcome) else 0


def cmd_data(args) -> int:
    from robustad.datasets.image_io import DatasetError

    try:
        if args.data_command == "info":
            from robustad.datasets.info import dataset_info, format_dataset_info

            info = dataset_info(args.dataset, root_of(args, args.dataset))
            print(json.dumps(info, indent=1) if args.format == "json" else format_dataset_info(info))
            return 1 if info.get("problems") or any(c.get("problems") for c in info["categories"].values()) else 0
        from robustad.datasets.download import download_dataset

        root = root_of(args, args.name)
        if root is None:
            raise ValueError(f"--root: no folder for dataset {args.name!r} (give DIR or {args.name}=DIR)")
        path = download_dataset(args.name, root, url=args.url, sha256=args.sha256)
        print(f"{args.name} is ready in {path}")
        return 0
    except DatasetError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2


def cmd_attention_degree(args) -> int:
    """Figure 2 of the paper: vulnerability against attention degree, for a detector that exposes attention."""
    from robustad.attacks import create_attack
    from robustad.bench.evaluation.attention_degree import attention_degree_report, save_attention_degree_report
    from robustad.bench.evaluation.prepare import prepare
    from robustad.methods import resolve_method

    if not resolve_method(args.method).exposes_attention:
        raise ValueError(f"--method {args.method!r} exposes no attention maps (its detector does not declare "
                         f"exposes_attention)")
    spec = single_cell(args, args.attack)
    attack = create_attack(args.attack, norm=args.norm, eps=parse_eps(args.eps), steps=spec.resolved_steps(),
                           seed=args.seed)
    results = Path(args.results).expanduser().resolve()
    with prepare(spec, results=results, device=args.device, log=lambda m: print(m, file=sys.stderr)) as prepared:
        per_image, per_cluster = attention_degree_report(prepared.detector, prepared.test_set, attack,
                                                         layer=args.layer, groups=args.groups)
    out = Path(args.out) if args.out else results / "attention_degree" / spec.cell_id()
    paths = save_attention_degree_report(per_image, per_cluster, out,
                                         title=f"{args.method} {args.dataset}/{spec.category}")
    print(per_cluster.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for kind, path in paths.items():
        print(f"{kind}: {path}", file=sys.stderr)
    return 0


def add_attention_degree_arguments(degree: argparse.ArgumentParser) -> None:
    degree.add_argument("--method", default="patchguard")
    degree.add_argument("--dataset", required=True)
    add_root_argument(degree)
    degree.add_argument("--category", default=None, help="default: the first category")
    degree.add_argument("--attack", default="pgd")
    degree.add_argument("--norm", default="linf", choices=["linf", "l2"])
    degree.add_argument("--eps", default="8/255", type=eps_argument)
    degree.add_argument("--steps", type=int, default=None)
    degree.add_argument("--profile", default="quick", choices=PROFILE_NAMES,
                        help="quick (default), long, paper or official (core/profiles.py)")
    degree.add_argument("--seed", type=int, default=0)
    degree.add_argument("--config", action="append", metavar="KEY=VALUE")
    degree.add_argument("--layer", default="-1", help="1-based ViT block, negative from the end, or 'discriminator'")
    degree.add_argument("--groups", type=int, default=5, help="clusters of images by attention degree (default 5)")
    degree.add_argument("--results", default=DEFAULT_RESULTS)
    degree.add_argument("--out", default=None, help="output folder (default: <results>/attention_degree/<cell>)")
    degree.add_argument("--device", default="cpu")


def cmd_report(args) -> int:
    from robustad.bench.report.html import write_report

    index = write_report(args.results, args.out, reference=args.reference, margin=args.margin, maps=args.maps,
                         log=lambda m: print(m, file=sys.stderr))
    print(index)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Adversarial robustness benchmark for anomaly detection and localization")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="evaluate grid cells and write result records")
    add_run_arguments(run)
    run.set_defaults(func=cmd_run)

    table = sub.add_parser("table", help="build the paper's tables from result records")
    table.add_argument("--results", default=DEFAULT_RESULTS)
    table.add_argument("--format", default="latex", choices=["latex", "markdown", "csv"])
    table.add_argument("--layout", default="methods", choices=["methods", "categories", "attacks"])
    table.add_argument("--task", default="ad", choices=["ad", "al"])
    for name in ("method", "dataset", "attack", "objective", "norm", "eps", "profile"):
        table.add_argument(f"--{name}", default=None, help=f"only records with this {name}")
    table.add_argument("--steps", type=int, default=None, help="only records with this many attack steps")
    table.add_argument("--reference", default=None, metavar="paper|FILE",
                       help="put published figures beside the measured ones: the paper's (shipped) or a CSV "
                            "in the same format (bench/results/paper_figures/README.md)")
    table.add_argument("--grid", default=None, help="lay the records of a grid out as its table (paper/table1 ...)")
    table.set_defaults(func=cmd_table)

    grid = sub.add_parser("grid", help="the evaluation grids: list them, show one's cells and what cannot run here")
    grid_sub = grid.add_subparsers(dest="grid_command", required=True)
    grid_list = grid_sub.add_parser("list", help="the shipped grids with their cells and trainings")
    add_root_argument(grid_list)
    grid_show = grid_sub.add_parser("show", help="a grid's runs, cells, trainings and what is not runnable, and why")
    grid_show.add_argument("name", help="a shipped grid (paper/table4) or a TOML grid file")
    add_root_argument(grid_show)
    grid_show.add_argument("--profile", default=None, choices=PROFILE_NAMES, help="default: the grid's")
    grid.set_defaults(func=cmd_grid)

    check = sub.add_parser("check", help="soundness checks of the evaluation of one method")
    check.add_argument("--method", required=True)
    check.add_argument("--dataset", required=True)
    add_root_argument(check)
    check.add_argument("--category", default=None, help="default: the first category")
    check.add_argument("--norm", default="linf", choices=["linf", "l2"])
    check.add_argument("--eps", default="8/255", type=eps_argument)
    check.add_argument("--steps", type=int, default=None, help="PGD steps of the checks (default: profile's)")
    check.add_argument("--attack", default="pgd",
                       help="the attack of the logit-shift and composite checks, e.g. apgd, a3, worst:pgd,square "
                            "(default pgd; a composite is checked against its members)")
    check.add_argument("--objective", default="localization", choices=["localization", "detection"])
    check.add_argument("--profile", default="quick", choices=PROFILE_NAMES,
                       help="quick (default), long, paper or official (core/profiles.py)")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--results", default=DEFAULT_RESULTS)
    check.add_argument("--device", default="cpu")
    check.add_argument("--config", action="append", metavar="KEY=VALUE")
    check.add_argument("--max-images", dest="max_images", type=int, default=32)
    check.add_argument("--margin", type=float, default=1.0, help="noise margin in AUROC points (default 1.0)")
    check.add_argument("--eot", type=int, default=None, metavar="K",
                       help="EOT passes of the checks' attacks (default: the attacks' own, 20 for a randomized "
                            "detector); the EOT ladder check still compares 1, 5 and 20")
    check.set_defaults(func=cmd_check)

    data = sub.add_parser("data", help="inspect or download a dataset")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    info = data_sub.add_parser("info", help="counts and problems of a dataset tree, per category")
    info.add_argument("--dataset", required=True)
    add_root_argument(info)
    info.add_argument("--format", default="text", choices=["text", "json"])
    download = data_sub.add_parser("download", help="download, verify (SHA-256) and extract a dataset")
    download.add_argument("name")
    download.add_argument("--root", action="append", required=True, metavar="[DATASET=]DIR",
                          help="where to put it: DIR, or DATASET=DIR")
    download.add_argument("--url", default=None, help="archive address (required where none is known)")
    download.add_argument("--sha256", default=None, help="expected SHA-256 of the archive")
    data.set_defaults(func=cmd_data)

    degree = sub.add_parser("attention-degree", help="attention degree vs vulnerability (the paper's Figure 2; "
                                                     "also `bench figure attention-degree`)")
    add_attention_degree_arguments(degree)
    degree.set_defaults(func=cmd_attention_degree)

    from robustad.bench.cli_figure import add_figure_parser

    add_figure_parser(sub, DEFAULT_RESULTS, add_attention_degree_arguments, cmd_attention_degree)

    report = sub.add_parser("report", help="a static HTML report of a results folder (works from file://)")
    report.add_argument("--results", default=DEFAULT_RESULTS)
    report.add_argument("--out", default="site", help="output folder (default: site)")
    report.add_argument("--reference", default="paper",
                        help="published figures beside the measured ones: paper (default), a CSV file, or none")
    report.add_argument("--margin", type=float, default=1.0,
                        help="AUROC points an attack must win by before a flag is raised (default 1.0)")
    report.add_argument("--no-maps", dest="maps", action="store_false", help="leave out the Figure 1 maps")
    report.set_defaults(func=cmd_report)

    status = sub.add_parser("status", help="done / running / queued / failed / pending groups of a results folder")
    status.add_argument("--results", default=DEFAULT_RESULTS)
    status.add_argument("--verbose", action="store_true", help="list the done groups too")
    status.set_defaults(func=cmd_status)

    listing = sub.add_parser("list", help="list registered methods, attacks and datasets")
    listing.add_argument("kind", nargs="?", choices=["methods", "attacks", "datasets"])
    listing.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; completed records are kept, rerun to resume", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"bench: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`resnet-bench` command: one subcommand per stage, each a module's `main(argv)`."""

from __future__ import annotations

import importlib
import os
import sys

from resnet_bench.argparsing import Parser

# subcommand -> (module, entry point, one-line help)
COMMANDS = {
    "models": ("resnet_bench.models.cli", "models_main", "table of every model: parameters, forward GFLOPs"),
    "summary": ("resnet_bench.models.cli", "summary_main", "layer-by-layer summary of one model"),
    "prepare": ("resnet_bench.data.prepare", "main", "turn a dataset into a prepared artifact"),
    "train": ("resnet_bench.train_cli", "main", "train one cell by hand"),
    "bench": ("resnet_bench.bench", "main", "throughput, memory and FLOPs of models"),
    "sweep": ("resnet_bench.sweep.driver", "main", "run the experiment's grid on Ray Tune"),
    "collect": ("resnet_bench.collect", "main", "tables of all cells"),
    "report": ("resnet_bench.report", "main", "figures and report.md from a results folder"),
    "verify": ("resnet_bench.verify", "main", "retrain committed cells (or, with --eval, re-evaluate their "
                                              "stored models); identical / within seed spread / outside"),
    "evaluate": ("resnet_bench.evaluate", "main", "a stored model's accuracy, rebuilt from its own file"),
    "export": ("resnet_bench.models.export", "main", "a stored model's weights under torchvision's or timm's names"),
    "config": ("resnet_bench.cli", "config_main", "show the resolved experiment (with sources) or write the JSON Schema"),
    "compare": ("resnet_bench.report.compare", "main", "paired differences between two results folders"),
    "init": ("resnet_bench.scaffold", "init_main", "a project of one's own: dvc.yaml, params.yaml, experiments/"),
    "exp-show": ("resnet_bench.views", "exp_show_main", "`dvc exp show` narrowed to fit 120 columns"),
    "plots-offline": ("resnet_bench.views", "plots_offline_main",
                      "an HTML template for `dvc plots show` that renders without a network"),
}


SCHEMA_TITLES = ("resnet-bench experiment", "resnet-bench params.yaml")


def _is_our_schema(path) -> bool:
    """An existing --out file `config schema` may replace: a JSON Schema it wrote (its title says so)."""
    from resnet_bench.inputs import InputError, read_json

    try:
        doc = read_json(path)
    except InputError:
        return False
    return isinstance(doc, dict) and doc.get("title") in SCHEMA_TITLES


def config_main(argv=None) -> int:
    """`resnet-bench config show|schema`."""
    import json
    import re

    from resnet_bench import config as cfg
    from resnet_bench.outputs import OutputError, OutputFile
    from resnet_bench.vocab import NAME_PATTERN

    p = Parser(prog="resnet-bench config", description="The resolved experiment, or the JSON Schema.")
    sub = p.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="{show,schema}",
                           help="show: the resolved experiment; schema: the JSON Schema")
    show = sub.add_parser("show", help="the resolved experiment, each value with where it came from")
    show.add_argument("--params", default="params.yaml", help="params file (absent: the schema's defaults)")
    show.add_argument("--experiments-dir", default="experiments",
                      help="folder of experiment files (absent: the packaged experiments)")
    show.add_argument("--experiment", help="show this experiment (default: params.yaml sweep.experiment)")
    schema = sub.add_parser("schema", help="write the JSON Schema of experiment files (or params.yaml)")
    schema.add_argument("--of", choices=["experiment", "params"], default="experiment",
                        help="the schema of experiment files or of params.yaml")
    schema.add_argument("--out", help="a file to write (replaced only if it is a schema this wrote; "
                                      "default: standard output)")
    args = p.parse_args(argv)
    try:
        if args.action == "schema":
            data = cfg.experiment_json_schema() if args.of == "experiment" else cfg.params_json_schema()
            text = json.dumps(data, indent=2, sort_keys=True) + "\n"
            if args.out:  # a file
                OutputFile(args.out, writer="config schema", flag="--out", ours=_is_our_schema).prepare() \
                    .write_text(text)
            else:
                sys.stdout.write(text)
            return 0
        if args.experiment is not None:
            # The flag, not params.yaml, names a bad value; it names a file in --experiments-dir
            # (or a packaged experiment).
            valid = cfg.available_experiments(args.experiments_dir)
            if not re.fullmatch(NAME_PATTERN, args.experiment) or args.experiment not in valid:
                raise cfg.ConfigError(f"--experiment: unknown experiment {args.experiment[:80]!r}; valid: "
                                      f"{', '.join(valid) or '(none in ' + str(args.experiments_dir) + ')'}")
        params = cfg.load_params_or_defaults(args.params)
        if args.experiment is not None:
            params = params.model_copy(update={"sweep": params.sweep.model_copy(
                update={"experiment": args.experiment})})
        resolved = cfg.resolve_experiment(params, args.experiments_dir, params_label=args.params)
    except (cfg.ConfigError, OutputError) as err:
        print("\n".join(f"error: {line}" for line in getattr(err, "problems", [str(err)])), file=sys.stderr)
        return 2
    print(f"# experiment {resolved.experiment.name!r}: value  # source")
    print(resolved.show())
    return 0


def version() -> str:
    """The installed distribution's version (what `pip show resnet-bench` says), else the source tree's."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("resnet-bench")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from resnet_bench import __version__

        return __version__


def usage() -> str:
    lines = ["usage: resnet-bench [--version] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "`resnet-bench COMMAND --help` for a command's options."]
    return "\n".join(lines)


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"resnet-bench {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; valid: --version, {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = _dispatch(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's own flush at exit
    except BrokenPipeError:
        # The reader went away (`resnet-bench config show | head -1`): no traceback. As the Python docs
        # on SIGPIPE recommend, point stdout at /dev/null so the flush at exit cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())

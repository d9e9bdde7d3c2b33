"""`resnet-bench` command: one subcommand per stage, each a module's `main(argv)`."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, entry point, one-line help)
COMMANDS = {
    "models": ("resnet_bench.models", "models_main", "table of every model: parameters, forward GFLOPs"),
    "summary": ("resnet_bench.models", "summary_main", "layer-by-layer summary of one model"),
    "prepare": ("resnet_bench.data", "main", "turn a dataset into a prepared artifact"),
    "train": ("resnet_bench.train", "main", "train one cell by hand"),
    "bench": ("resnet_bench.bench", "main", "throughput, memory and FLOPs of models"),
    "sweep": ("resnet_bench.sweep", "main", "run the experiment's grid on Ray Tune"),
    "collect": ("resnet_bench.collect", "main", "tables of all cells"),
    "report": ("resnet_bench.report", "main", "figures and report.md from a results folder"),
    "compare": ("resnet_bench.report.compare", "main", "paired differences between two results folders"),
}


def usage() -> str:
    lines = ["usage: resnet-bench COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "`resnet-bench COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

"""`resnet-bench exp-show`: `dvc exp show` narrowed to what compares experiments, so that it reads in a
120-column terminal.

DVC cannot set `exp show`'s columns in `.dvc/config`, and a plain `dvc exp show` here has 60-70 columns:
one per params.yaml and experiment-file key, one per metric, and one file hash per stage dependency
(every module a stage imports). This runs `dvc exp show` with one flag set:

- `--only-changed`: only the params and metrics whose values differ between the rows shown;
- `--drop 'Created|.*/'`: no timestamp and no dependency hash (their column names are paths);
- `--keep`: the experiment name and the headline metrics (collect.HEADLINE_DATASET_KEYS per dataset,
  `not_ok`) even where they are equal.

Any other argument is passed on to `dvc exp show` (`--csv`, `--md`, `-A`, `--sort-by`, `-n`, ...).
"""

from __future__ import annotations

import re
import subprocess
import sys

# The metrics.json keys `exp-show` always shows; the other headline keys (v1_acc, v2_acc, ok) show
# where they differ, like every parameter.
KEPT_DATASET_KEYS = ("v2-v1_pp", "ci95_pp")
KEPT_TOP_KEYS = ("not_ok",)


def exp_show_args() -> list[str]:
    """The flag set (tests/test_views.py checks the kept keys are collect's metric names)."""
    # DVC matches these with re.match against column names: params and metrics are dotted key paths
    # (`digits.v2-v1_pp`, `sweep.depths`), dependencies are file paths (they contain a `/`).
    dataset_keys = "|".join(re.escape(k) for k in KEPT_DATASET_KEYS)
    top_keys = "|".join(re.escape(k) for k in KEPT_TOP_KEYS)
    keep = rf"Experiment$|[^./:]+\.({dataset_keys})$|({top_keys})$"
    return ["--no-pager", "--only-changed", "--drop", "Created$|.*/", "--keep", keep]


def exp_show_main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print("usage: resnet-bench exp-show [DVC EXP SHOW OPTIONS...]\n\n" + __doc__.split("\n\n", 1)[1].strip())
        return 0
    from pathlib import Path

    here = Path.cwd()
    if not any((d / ".dvc").is_dir() for d in (here, *here.parents)):
        print(f"error: resnet-bench exp-show: not in a DVC project (no .dvc/ in {here} or above); run it in a "
              "project's root (`resnet-bench init DIR` makes one)", file=sys.stderr)
        return 2
    # argv goes to dvc as a list (no shell); dvc validates its own options.
    return subprocess.call([sys.executable, "-m", "dvc", "exp", "show", *exp_show_args(), *argv])


# ---- `resnet-bench plots-offline`: an HTML template for `dvc plots show` that needs no CDN -----------------

# DVC's page loads these three from a CDN (dvc_render.vega.VegaRenderer.SCRIPTS); npm tarballs of them
# (`npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2`) hold them at these members.
VEGA_SCRIPTS = {"vega": "package/build/vega.min.js", "vega-lite": "package/build/vega-lite.min.js",
                "vega-embed": "package/build/vega-embed.min.js"}
MAX_SCRIPT_BYTES = 8 * 2**20  # each of the three is under 1 MiB minified
OFFLINE_MARK = "<!-- written by resnet-bench plots-offline -->"
# what dvc_render.html.HTML replaces in a template: a script containing one would be cut
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")


class OfflineError(ValueError):
    """A tarball or output path plots-offline cannot use; the message names it."""


def _npm_name(path) -> str:
    """`vega-lite-5.2.0.tgz` -> `vega-lite` (npm pack's file name: <name>-<version>.tgz)."""
    import re
    from pathlib import Path

    m = re.fullmatch(r"(vega|vega-lite|vega-embed)-\d+\.\d+\.\d+[^/]*\.tgz", Path(path).name)
    if not m:
        raise OfflineError(f"{path}: not an npm tarball of {', '.join(VEGA_SCRIPTS)} "
                           "(make them with `npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2`)")
    return m.group(1)


def read_script(tarball, name: str) -> str:
    """The minified script of one npm tarball, read (never extracted) under a size cap."""
    import tarfile

    member = VEGA_SCRIPTS[name]
    from resnet_bench.inputs import InputError, check_regular

    try:
        check_regular(tarball)
    except InputError as err:
        raise OfflineError(str(err)) from None
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            info = tar.getmember(member)
            if not info.isfile() or info.size > MAX_SCRIPT_BYTES:
                raise OfflineError(f"{tarball}: {member} is not a regular file under {MAX_SCRIPT_BYTES} bytes")
            text = tar.extractfile(info).read().decode("utf-8")
    except KeyError:
        raise OfflineError(f"{tarball}: has no {member}; is it the npm package {name}?") from None
    except (OSError, tarfile.TarError, UnicodeDecodeError) as err:
        raise OfflineError(f"{tarball}: cannot be read as a gzipped tarball ({err})") from None
    bad = [p for p in DVC_PLACEHOLDERS if p in text]
    if bad:
        raise OfflineError(f"{tarball}: {member} contains {bad[0]}, which DVC would replace in the page")
    return text


def offline_template(scripts: dict[str, str]) -> str:
    """DVC's page (dvc_render.html.PAGE_HTML) with the scripts inlined instead of loaded from a CDN."""
    # `</script` inside a script would end the element early; `<\/` is the same string to JavaScript
    inline = "\n".join("<script>/* " + name + " */\n" + text.replace("</script", "<\\/script") + "\n</script>"
                       for name, text in scripts.items())
    return (f"<!DOCTYPE html>\n{OFFLINE_MARK}\n<html>\n<head>\n{{refresh_tag}}\n<title>DVC Plot</title>\n{inline}\n"
            "<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n")


def plots_offline_main(argv=None) -> int:
    from pathlib import Path

    from resnet_bench.argparsing import Parser

    p = Parser(prog="resnet-bench plots-offline",
               description="Write an HTML template for `dvc plots show --html-template` with vega, vega-lite and "
                           "vega-embed inlined, so the page renders without a network.")
    p.add_argument("tarballs", nargs=3, metavar="TARBALL",
                   help="the npm tarballs of vega, vega-lite and vega-embed, in any order (made once, anywhere, "
                        "with `npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2`)")
    p.add_argument("--out", default=".dvc/plots/offline.html",
                   help="the template to write (default: .dvc/plots/offline.html); an existing file is replaced "
                        "only if this command wrote it")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        names = [_npm_name(t) for t in args.tarballs]
        if sorted(names) != sorted(VEGA_SCRIPTS):
            raise OfflineError(f"give one tarball each of {', '.join(VEGA_SCRIPTS)}; got {', '.join(names)}")
        if out.exists() and (not out.is_file() or OFFLINE_MARK not in out.read_text(errors="replace")[:200]):
            raise OfflineError(f"{out} exists and was not written by resnet-bench plots-offline; "
                               "remove it or give another --out")
        if not out.parent.is_dir():
            raise OfflineError(f"{out.parent} is not a folder (run this in the project root, after `dvc init`)")
        by_name = dict(zip(names, args.tarballs))
        scripts = {n: read_script(by_name[n], n) for n in VEGA_SCRIPTS}  # vega, then vega-lite, then embed
    except OfflineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from resnet_bench.outputs import atomic_write

    atomic_write(out, offline_template(scripts).encode())
    # dvc config's plots.html_template is relative to .dvc/
    rel = out.resolve().relative_to(Path(".dvc").resolve()) if out.resolve().is_relative_to(
        Path(".dvc").resolve()) else out.resolve()
    print(f"wrote {out}; use it with `dvc plots show --html-template {out}`, or for every `dvc plots show|diff` "
          f"here: `dvc config --local plots.html_template {rel}`")
    return 0

"""The model commands of the CLI: ``info``, ``import`` (a published checkpoint), ``pull`` and ``export`` (ONNX, or a library's tracks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli import app, fail


@app.command()
def info(bundle: Annotated[Optional[Path], typer.Argument(help="Model bundle directory (default: the built-in model).")] = None) -> None:
    """Show a model bundle's labels, preprocessing, provenance and metrics (JSON).

    Exit code 2 if its model file is missing, cut short, or does not fit its architecture or labels."""
    from .config import ONNX_NAME, read_config
    from .model_files import check_onnx, model_file
    from .options import DEFAULT_BUNDLE

    config = read_config(bundle or DEFAULT_BUNDLE)
    typer.echo(json.dumps(config.to_dict(), indent=2))
    path = model_file(bundle or DEFAULT_BUNDLE, config)
    if path.name == ONNX_NAME:  # the whole graph is parsed: a file cut short does not pass
        check_onnx(path, path.read_bytes())


import_app = typer.Typer(help="Turn a published checkpoint into a model bundle (strict: weights must fit exactly).", no_args_is_help=True)
app.add_typer(import_app, name="import")
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")]
AggregationOpt = Annotated[str, typer.Option("--aggregation", help="Track result from windows: mean (of probabilities) or vote (share of window top-1s).")]


def _imported(run) -> None:
    """Run an import, report the bundle written or a one-line error."""
    try:
        path = run()
    except OSError as e:
        fail(str(e))
    typer.echo(f"wrote {path}; use it with: acousticsense predict --model {path} FILE")


@import_app.command("ccmusic")
def import_ccmusic(
    save_pt: Annotated[Path, typer.Argument(help="ccmusic-database/music_genre vit_b_16_mel/save.pt")],
    out: OutOpt,
    aggregation: AggregationOpt = "vote",
) -> None:
    """Import ccmusic's ViT-B/16 mel genre model (16 genres) with its preprocessing and its demo's majority vote."""
    from . import importers

    _imported(lambda: importers.import_ccmusic(save_pt, out, aggregation))


@import_app.command("torchvision")
def import_torchvision(
    state_dict: Annotated[Path, typer.Argument(help="A torchvision ViT state dict (.pt/.pth) with a Linear head.")],
    labels: Annotated[Path, typer.Option("--labels", help="Labels in output order: one a line, or a JSON list.")],
    out: OutOpt,
    arch: Annotated[Optional[str], typer.Option("--arch", help="vit_b_16, vit_s_16, vit_ti_16 or vit_mini_16 (default: from the weights).")] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="Input size (default: from the weights, e.g. 224).")] = None,
    preprocessing: Annotated[Optional[Path], typer.Option("--preprocessing", help="JSON object of Preprocessing fields the model was trained with.")] = None,
    aggregation: AggregationOpt = "mean",
) -> None:
    """Import a torchvision ViT checkpoint. Pass the preprocessing it was trained with (--preprocessing)."""
    from . import importers
    from .config import read_config
    from .errors import ParameterError
    from .files import read_json

    def run():
        fields = None if preprocessing is None else read_json(preprocessing, ParameterError)
        if preprocessing is not None and not isinstance(fields, dict):  # JSON's null is no "none given"
            raise ParameterError(f"{preprocessing}: invalid preprocessing (expected a JSON object of its fields)")
        path = importers.import_torchvision(state_dict, labels, out, arch, image_size, fields, aggregation, preprocessing_name=str(preprocessing))
        config = read_config(path)  # said of a bundle made, not of a checkpoint refused
        if assumed := config.provenance.get("preprocessing_assumed"):
            pre = config.preprocessing
            typer.echo(f"warning: {'--preprocessing does not state' if fields is not None else 'no --preprocessing given: assumed'} {', '.join(assumed)}: the bundle takes "
                       f"the defaults ({', '.join(f'{k} {getattr(pre, k):g}' for k in assumed)}); a model trained otherwise will give wrong answers "
                       "(README: Importing published models)", err=True)
        return path

    _imported(run)


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help="A known model: ccmusic-vit_b_16_mel (`acousticsense pull --list` shows them all).")] = "",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Bundle directory (default: ./NAME).")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the models pull knows and exit.")] = False,
) -> None:
    """Download a published model from the Hugging Face hub and import it."""
    from . import importers

    if list_:
        for key, entry in importers.PULLABLE.items():
            typer.echo(f"{key}\t{entry.description}")
        return
    if not name:
        fail("name a model to pull (acousticsense pull --list shows them)")
    _imported(lambda: importers.pull(name, out))


@app.command()
def export(
    bundle: Annotated[Optional[Path], typer.Argument(help="Model bundle directory (default: the built-in model).")] = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="New bundle directory (default: model-onnx); with --db a file (default or -: stdout).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Only onnx for now.")] = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="ONNX Runtime dynamic int8 quantization (smaller; faster on some CPUs).")] = False,
    db: Annotated[Optional[Path], typer.Option("--db", help="Export a library database's tracks instead (with --csv or --json).")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="With --db: CSV, one row per track.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --db: a JSON array of tracks (with timelines).")] = False,
) -> None:
    """Export a bundle to ONNX (it then runs through ONNX Runtime with `predict --model OUT`), or a library with --db."""
    if db is not None:
        from .cli_library import export_library

        model_options = [name for name, given in (("BUNDLE", bundle is not None), ("--int8", int8), ("--format", fmt != "onnx")) if given]
        if model_options:
            fail(f"{', '.join(model_options)}: export a model, not a library: leave out --db or {' and '.join(model_options)}")
        if as_csv == as_json:
            fail("with --db choose one of --csv and --json")
        file = None if out in (None, "-") else Path(out)  # -: standard output, as elsewhere (./- is a file)
        count = export_library(db, "csv" if as_csv else "json", file)
        typer.echo(f"{count} tracks of {db}" + (f" written to {file}" if file else ""), err=True)
        return
    if as_csv or as_json:
        fail("--csv and --json export a library: add --db LIBRARY.db")
    if fmt != "onnx":
        fail(f"--format {fmt}: only 'onnx' is supported")
    from .export import export_onnx

    out = Path(out or "model-onnx")
    record = export_onnx(bundle, out, int8=int8)
    check = record["check"]
    typer.echo(
        f"wrote {out} ({record['quantization'] or 'float32'}); check on {check['files']} example clips: "
        f"max |Δp| {check['max_abs_diff']:.2g}, top-1 agreement {check['window_top1_agreement']}/{check['windows']} windows, "
        f"{check['track_top1_agreement']}/{check['files']} tracks"
    )

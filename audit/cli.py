"""The ``gan-audit`` command line (click).

Commands are thin: parse, build the config, call the library, print. Results go
to stdout, progress and logs to stderr. A user error (:class:`AuditError`) exits
with code 2 and one message; ``--debug`` shows the traceback instead.

Heavy libraries (torch, fairlearn, weasyprint) are imported inside the commands
that need them, so ``gan-audit --help`` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click

from audit._version import __version__
from audit.errors import AuditError
from audit.vocabulary import label, severity_rank

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class AuditGroup(click.Group):
    """A click group that turns :class:`AuditError` into one message and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AuditError as exc:
            if ctx.find_root().params.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: the run folder is consistent; run the same command again "
                       "to resume.", err=True)
            ctx.exit(130)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A warning as users read it: ``warning: <message>`` on stderr (the source line and
    category are for --debug)."""
    click.echo(f"warning: {message}", err=True)


@contextmanager
def _writing(run_dir: Path, *, create: bool = False, record: list[str] | None = None,
             stages: dict[str, list[str]] | None = None, needs: str | None = None
             ) -> Iterator[None]:
    """Own and lock a run folder while a command writes into it (:func:`audit.runfolder.claim`);
    afterwards record the outputs ``record`` in its manifest (their sha256 and size), and
    those of the pipeline ``stages`` a stage command redid (:func:`record_stage_command`).
    ``needs``: the command that must have made the folder (for the message when it did
    not)."""
    from audit.manifest import record_artifacts, record_stage_command
    from audit.runfolder import claim

    fix = f"Run `{needs}` first." if needs else "Give the folder that gan-audit run wrote."
    with claim(Path(run_dir), create=create, fix=fix):
        yield
        if record:
            record_artifacts(Path(run_dir), record)
        if stages:
            record_stage_command(Path(run_dir), stages)


trust_run_config_option = click.option(
    "--trust-run-config", is_flag=True,
    help="Load the run folder's models even when its config.yaml names code (any model spec "
         "but builtin:: a python: module and its kwargs, a pickle, a TorchScript file, a "
         "code_path): only for run folders from someone you trust.")


@click.group(cls=AuditGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="gan-audit")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
def cli(debug: bool) -> None:
    """Audit a GAN for bias through what its discriminator knows.

    Record discriminator activations on labelled real images, train concept
    decoders on them, decode real and generated images, and measure how
    protected groups are represented and scored. Writes an HTML/PDF/JSON report.

    \b
    Example:
      gan-audit demo --out reports/demo
      gan-audit run audit.yaml --no-pdf
    """
    if not debug:
        import warnings

        warnings.showwarning = _show_warning


# ---------------------------------------------------------------- main job


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/demo"),
              show_default=True, help="Run folder to write.")
@click.option("--no-pdf", is_flag=True, help="Skip the PDF report (HTML and JSON only).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              show_default=True)
@click.option("--counterfactual", is_flag=True,
              help="Also run the counterfactual treatment test (edits along each protected "
                   "concept's latent direction; about 10% more time).")
def demo(out: Path, no_pdf: bool, device: str, counterfactual: bool) -> None:
    """Run the whole audit on the embedded demo (digits with planted bias).

    \b
    Example:
      gan-audit demo --out reports/demo
      gan-audit demo --out reports/demo-cf --counterfactual
    """
    from audit.config import load_config
    from audit.pipeline import demo_config, run_audit

    cfg = load_config(demo_config())
    if counterfactual:
        cfg = cfg.model_copy(update={"counterfactual": cfg.counterfactual.model_copy(
            update={"enabled": True})})
    summary = run_audit(cfg, out=out, device=device, pdf=not no_pdf)
    _print_summary(summary)


@cli.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: 'out' of the config).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None,
              help="Device for extraction and decoders (default: the config's).")
@click.option("--no-pdf", is_flag=True, help="Skip the PDF report.")
def run(config: Path, out: Path | None, device: str | None, no_pdf: bool) -> None:
    """Run every stage of an audit described by CONFIG.yaml.

    \b
    Example:
      gan-audit run examples/celeba_stylegan2.yaml --out reports/celeba
      torchrun --nproc-per-node 4 -m audit run audit.yaml   # extraction on 4 GPUs
    """
    from audit.config import load_config
    from audit.distributed import rank_from_env
    from audit.pipeline import run_audit

    cfg = load_config(config)
    extracted = False
    if rank_from_env().distributed:  # under torchrun: every rank extracts its part first
        _, is_main = _extract_on_every_rank(cfg, out=out, device=device)
        if not is_main:
            return  # rank 0 runs the light stages alone
        extracted = True
    summary = run_audit(cfg, out=out, device=device, pdf=False if no_pdf else None,
                        extracted=extracted)
    _print_summary(summary)


def _print_summary(summary: Any) -> None:
    """The closing summary on stdout: verdicts, top findings, timings, where the report is."""
    results = summary.results
    from audit.measure.sanity import sanity_words

    click.echo(f"audit {results.get('meta', {}).get('audit_id', '')}: {summary.run_dir}")
    click.echo(sanity_words(results.get("discriminator")))
    click.echo("verdicts:")
    for v in results.get("verdicts", []):
        click.echo(f"  {v['concept']:<24} {label(v['verdict'])}: {v.get('reason', '')}")
    findings = sorted(results.get("findings", []),
                      key=lambda f: (severity_rank(f.get("severity")), f.get("id", "")))
    shown = [f for f in findings if f.get("severity") != "info"][:5]
    click.echo(f"top findings ({len(findings)} in all):" if shown else "no findings above info")
    for f in shown:
        low = ", low confidence" if f.get("confidence") == "low" else ""
        click.echo(f"  [{f['severity']}{low}] {f['id']}: {f.get('summary', '')}")
    stages = ", ".join(f"{name} {'reused' if name in summary.cached else f'{sec:.1f} s'}"
                       for name, sec in summary.seconds.items())
    click.echo(f"stages: {stages} (total {sum(summary.seconds.values()):.1f} s)")
    for kind, path in summary.outputs.items():
        click.echo(f"{kind}: {path}")


# ---------------------------------------------------------------- stages


@cli.command()
@click.argument("source", metavar="MODEL")
@click.option("--code-path", type=click.Path(path_type=Path), default=None,
              help="Folder put on sys.path first (e.g. the StyleGAN2-ADA repository).")
@click.option("--trust-pickle", is_flag=True,
              help="Allow a pickle: spec (a pickle can run arbitrary code).")
@click.option("--kwargs", "kwargs", multiple=True, metavar="JSON|KEY=VALUE",
              help="Keyword arguments of a python: factory: a JSON object, or KEY=VALUE "
                   "(repeatable; VALUE read as JSON where it parses, else as text).")
@click.option("--image-size", type=int, default=None, help="Input size of the dummy batch.")
@click.option("--channels", type=int, default=None, help="Input channels of the dummy batch.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def layers(source: str, code_path: Path | None, trust_pickle: bool, kwargs: tuple[str, ...],
           image_size: int | None, channels: int | None, as_json: bool) -> None:
    """List a discriminator's layers with output shapes and batch dependence.

    MODEL is a model spec, or a config file (its discriminator section; the options
    given here override it).

    \b
    Example:
      gan-audit layers builtin:digits-dcgan
      gan-audit layers audit.yaml
      gan-audit layers pickle:network.pkl#D --code-path stylegan2-ada-pytorch --trust-pickle
      gan-audit layers python:nets.py:make_d --kwargs width=64 --image-size 32 --channels 3
      gan-audit layers torchscript:D.pt --image-size 64 --channels 3 --json
    """
    import json

    from audit.load import load_discriminator

    options = {"code_path": code_path, "trust_pickle": trust_pickle or None,
               "kwargs": _parse_kwargs(kwargs) if kwargs else None,
               "image_size": image_size, "channels": channels}
    cfg = _discriminator_section(source, {k: v for k, v in options.items() if v is not None})
    model = load_discriminator(cfg)
    if as_json:
        click.echo(json.dumps({"spec": model.spec, "sha256": model.sha256,
                               "dtype": model.dtype, "identity": model.identity,
                               "input": {"image_size": model.input.image_size,
                                         "channels": model.input.channels,
                                         "value_range": list(model.input.value_range)},
                               "notes": model.notes,
                               "batch_dependent_layers": model.batch_dependent_layers,
                               "layers": [i.to_dict() for i in model.layer_info]}, indent=2))
        return
    rows = [("layer", "type", "output shape", "params", "flags")]
    for i in model.layer_info:
        flags = [f for f, on in (("batch-dependent", i.batch_dependent),
                                 ("nondeterministic", i.nondeterministic),
                                 ("tuple", i.tuple_output),
                                 (f"reused (called {i.calls} times)", i.reused)) if on]
        shape = " x ".join(map(str, i.shape)) if i.shape is not None else "(not called)"
        rows.append((i.name, i.type, shape, f"{i.params:,}", ", ".join(flags)))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for r in rows:
        click.echo(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
                   f"{r[3]:>{widths[3]}}  {r[4]}".rstrip())
    for note in model.notes:
        click.echo(f"note: {note}", err=True)


def _parse_kwargs(values: tuple[str, ...]) -> dict[str, Any]:
    """``--kwargs`` values -> one dict: each a JSON object or ``KEY=VALUE`` (VALUE as JSON
    where it parses, else text); later values win."""
    import json

    from audit.errors import ConfigError

    out: dict[str, Any] = {}
    for text in values:
        if text.lstrip().startswith("{"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--kwargs {text!r} is not a valid JSON object ({exc.msg} at "
                                  f"character {exc.pos}). Write it like "
                                  f"--kwargs '{{\"width\": 64}}' or --kwargs width=64.") from exc
            if not isinstance(parsed, dict):
                raise ConfigError(f"--kwargs {text!r} must be a JSON object. Write it like "
                                  f"--kwargs '{{\"width\": 64}}' or --kwargs width=64.")
            out.update(parsed)
            continue
        key, eq, value = text.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ConfigError(f"--kwargs {text!r}: expected KEY=VALUE (e.g. --kwargs width=64) "
                              f"or a JSON object (e.g. --kwargs '{{\"width\": 64}}').")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _discriminator_section(model: str, options: dict[str, Any]) -> Any:
    """The discriminator section for ``model`` (a spec, or a config file whose discriminator
    section is taken) with the command-line ``options`` on top; messages like ``run``'s."""
    from audit._yaml import validate
    from audit.config import DiscriminatorConfig, load_config
    from audit.models.specs import SPEC_KINDS

    kinds = tuple(f"{k}:" for k in SPEC_KINDS)
    if model.startswith(kinds) or not (model.endswith((".yaml", ".yml"))
                                       or Path(model).is_file()):
        return validate(DiscriminatorConfig, {"spec": model, **options},
                        source="gan-audit layers")
    section = load_config(Path(model)).discriminator.model_dump()
    if "kwargs" in options:
        options = {**options, "kwargs": {**section["kwargs"], **options["kwargs"]}}
    return validate(DiscriminatorConfig, {**section, **options},
                    source=f"gan-audit layers {model} (its discriminator section and the options)")


@cli.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None)
def extract(config: Path, out: Path | None, device: str | None) -> None:
    """Record discriminator activations (paired, real and generated images).

    \b
    Example:
      gan-audit extract audit.yaml
      torchrun --nproc-per-node 2 -m audit extract audit.yaml
    """
    from audit.config import load_config

    stores, is_main = _extract_on_every_rank(load_config(config), out=out, device=device,
                                             stages={"extract": ["activations", "generated"]})
    if not is_main:
        return
    for name, store in stores.items():
        skipped = f", {len(store.skipped)} skipped" if store.skipped else ""
        click.echo(f"{name}: {store.n_images} images, layers {', '.join(store.layers)} "
                   f"({store.settings.pooling}){skipped} -> {store.path}")


def _extract_on_every_rank(cfg: Any, *, out: Path | None, device: str | None,
                           stages: dict[str, list[str]] | None = None
                           ) -> tuple[dict[str, Any], bool]:
    """Extract under torchrun (each rank its shards) or in one process; (stores, is rank 0).

    A failure on any rank is printed once, by rank 0, and every rank exits with code 2.
    ``stages``: for the extract command, the pipeline stage it redid (see ``_writing``).
    """
    from audit import distributed
    from audit.extract import extract_from_config
    from audit.load import resolve_device

    with distributed.process_group(resolve_device(device or cfg.device)) as rank, \
            ExitStack() as held:
        try:
            # rank 0 owns and locks the folder before any rank writes into it (a refusal
            # reaches every rank); the other ranks then write their shards beside it
            distributed.on_main(lambda: held.enter_context(
                _writing(out or cfg.out, create=True, stages=stages)), what="claiming the "
                "output folder")
            stores = extract_from_config(cfg, out=out, device=device)
        except distributed.DistributedError as exc:  # the same message on every rank
            ctx = click.get_current_context()
            if rank.is_main and ctx.find_root().params.get("debug"):
                raise
            if rank.is_main:
                click.echo(f"error: {exc}", err=True)
            distributed.barrier()  # no rank exits (torchrun then stops all) before rank 0 printed
            ctx.exit(exc.exit_code)
    return stores, rank.is_main


@cli.command("train-decoders")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None)
def train_decoders(config: Path, out: Path | None, device: str | None) -> None:
    """Train the concept decoders (layer sweep) and decode every stored image.

    \b
    Example:
      gan-audit train-decoders audit.yaml
    """
    from audit.concepts import load_concept_set
    from audit.config import load_config
    from audit.decode.run import train_run_decoders
    from audit.load import resolve_device
    from audit.pipeline import predictions_from_run

    cfg = load_config(config)
    run_dir = Path(out if out is not None else cfg.out)
    concept_set = load_concept_set(cfg.concept_set)
    with _writing(run_dir, needs="gan-audit extract CONFIG.yaml",
                  stages={"decoders": ["decoders"], "decode": ["predictions.parquet"]}):
        bundle = train_run_decoders(run_dir, concept_set, cfg.decoders,
                                    device=resolve_device(device or cfg.device))
        predictions_from_run(run_dir, concept_set)  # what the measure stage reads
    for name, v in bundle.validity["concepts"].items():
        verdict = "" if v["decodable"] else "  (not decodable at this layer)"
        click.echo(f"{name}: layer {v['layer']}, held-out accuracy {v['accuracy']:.3f}, "
                   f"AUROC {v['auroc']:.3f}, probe {v['probe_accuracy']:.3f}, selectivity "
                   f"{v['selectivity']:.3f}{verdict}")
    click.echo(f"decoders -> {run_dir / 'decoders'}; predictions -> "
               f"{run_dir / 'predictions.parquet'}", err=True)


@cli.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None)
def measure(config: Path, out: Path | None) -> None:
    """Measure representation and treatment from predictions.parquet.

    \b
    Example:
      gan-audit measure audit.yaml
    """
    from audit.concepts import load_concept_set
    from audit.config import load_config
    from audit.measure import measure_run
    from audit.measure.results import run_meta

    cfg = load_config(config)
    run_dir = out if out is not None else cfg.out
    with _writing(run_dir, needs="gan-audit train-decoders CONFIG.yaml",
                  stages={"measure": ["results.json", "tables"]}):
        # the counterfactual stage's edits, when the config enables it and a run wrote them
        edited = cfg.counterfactual.enabled and (Path(run_dir) / "counterfactual").is_dir()
        results = measure_run(run_dir, load_concept_set(cfg.concept_set), cfg.measure,
                              meta=run_meta(run_dir, name=cfg.name, title=cfg.report.title),
                              counterfactual=cfg.counterfactual if edited else None)
    click.echo(f"{run_dir / 'results.json'}: {len(results['findings'])} finding(s); "
               + "; ".join(f"{v['concept']}: {label(v['verdict'])}" for v in results["verdicts"]))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True)
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None,
              help="Write the table as CSV here (default: print JSON).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="cpu",
              show_default=True)
@click.option("--class-label", "class_label", type=click.IntRange(min=0), default=None,
              help="Class of every image, for a class-conditional discriminator (default: "
                   "the run's discriminator.class_label).")
@trust_run_config_option
def decode(run_dir: Path, images: tuple[str, ...], csv_path: Path | None, device: str,
           class_label: int | None, trust_run_config: bool) -> None:
    """Decode concepts of any images with a run's decoders.

    \b
    Example:
      gan-audit decode reports/demo samples/*.png --csv decoded.csv
      gan-audit decode reports/demo new_images/ > decoded.json
    """
    from audit.decode.run import decode_images
    from audit.io import atomic_write_text

    table = decode_images(run_dir, images, device=device, trust_run_config=trust_run_config,
                          class_label=class_label)
    if csv_path is not None:
        atomic_write_text(csv_path, table.to_csv(index=False))
        click.echo(f"{len(table)} images -> {csv_path}", err=True)
    else:
        click.echo(table.to_json(orient="records", indent=2))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--no-pdf", is_flag=True, help="Skip the PDF.")
def report(run_dir: Path, no_pdf: bool) -> None:
    """Render report.html and report.pdf from results.json and the review log.

    \b
    Example:
      gan-audit report reports/demo --no-pdf
    """
    from audit.report import render_report

    with _writing(run_dir):
        paths = render_report(run_dir, pdf=not no_pdf)
    for path in paths.values():
        click.echo(str(path))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("finding_id", required=False)
@click.option("--status", type=click.Choice(["accepted", "disputed", "mitigated",
                                             "false-positive"]), default=None)
@click.option("--note", default="", help="The reviewer's note.")
@click.option("--reviewer", default=None, help="The reviewer's name.")
@click.option("--expect-head", default=None, metavar="HASH",
              help="A head printed by an earlier review ('head sha256:...'): fail unless the "
                   "log still holds it, unchanged up to it.")
@click.option("--mitigation", default="", help="What will be done about the finding (the "
              "report's mitigation plan).")
@click.option("--owner", default="", help="Who answers for the mitigation.")
def review(run_dir: Path, finding_id: str | None, status: str | None, note: str,
           reviewer: str | None, expect_head: str | None, mitigation: str, owner: str) -> None:
    """List findings with their review status, or record a review of one.

    Both print the review log's head hash; record it elsewhere (a ticket, an email) and
    pass it to --expect-head later: a log rewritten up to it, even with recomputed hashes,
    or cut before it then fails.

    \b
    Example:
      gan-audit review reports/demo
      gan-audit review reports/demo F-REP-tone-dark --status accepted \\
          --note "confirmed by sampling" --reviewer "A. Auditor" \\
          --mitigation "rebalance the training set" --owner "ML team"
      gan-audit review reports/demo --expect-head sha256:4f1c...
    """
    from audit.errors import ReviewError
    from audit.report import append_review, read_review_log, render_report, verify_review_log
    from audit.report.review import LOG_NAME, head_summary, latest_status, list_findings

    if finding_id is None:
        if status is not None or reviewer is not None or note or mitigation or owner:
            raise ReviewError("--status, --note, --reviewer, --mitigation and --owner need a "
                              "FINDING_ID: gan-audit review RUN_DIR FINDING_ID --status "
                              "STATUS --note TEXT --reviewer NAME")
        log = read_review_log(run_dir, expected_head=expect_head)
        if expect_head is not None and not log.check.ok:
            raise ReviewError(f"{run_dir / LOG_NAME}: does not verify against the recorded "
                              f"head: " + "; ".join(log.check.problems) + ". Restore the log "
                              "from a copy; its statuses cannot be trusted.")
        latest = latest_status(log)
        rows = [(f["id"], f["severity"], f["confidence"],
                 latest[f["id"]]["status"] if f["id"] in latest else "unreviewed")
                for f in list_findings(run_dir)]
        header = ("finding", "severity", "confidence", "status")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
        for r in [header, *rows]:
            click.echo("  ".join(f"{c!s:<{w}}" for c, w in zip(r, widths, strict=True)).rstrip())
        if not rows:
            click.echo("(no findings)")
        click.echo(head_summary(log.check))
        if not log.verification.ok:
            click.echo("warning: review.jsonl: " + "; ".join(log.verification.problems),
                       err=True)
        return
    if status is None:
        raise ReviewError(f"give the review's status with --status (one of accepted, disputed, "
                          f"mitigated, false-positive) for finding {finding_id!r}.")
    with _writing(run_dir):
        entry = append_review(run_dir, finding_id, status=status, note=note,
                              reviewer=reviewer or "", expected_head=expect_head,
                              mitigation=mitigation, owner=owner)
        click.echo(f"{entry['finding_id']}: {entry['status']} by {entry['reviewer']} "
                   f"(entry {entry['hash'][:12]})")
        check = verify_review_log(run_dir / LOG_NAME, expected_head=entry["hash"])
        click.echo(head_summary(check))
        if not check.ok:
            click.echo("warning: review.jsonl: " + "; ".join(check.problems), err=True)
        pdf = (run_dir / "report.pdf").exists()
        for path in render_report(run_dir, pdf=pdf).values():
            click.echo(f"re-rendered {path}", err=True)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but this machine's loopback address "
                   "serves the audit to the network (with a warning).")
@click.option("--no-browser", is_flag=True, help="Do not open the address in a browser.")
def serve(run_dir: Path, port: int, host: str, no_browser: bool) -> None:
    """Review findings and label generated images in the browser (a local web app).

    Prints an address with a random access token (as Jupyter does); open it to see the
    summary, filter the findings, record reviews (the same hash-chained log as `review`),
    re-render the report and label the run's sample of generated images. Needs the serve
    extra: pip install 'gan-audit[serve]'.

    \b
    Example:
      gan-audit serve reports/demo
      gan-audit serve reports/demo --port 0 --no-browser
    """
    from audit.serve.server import serve_run

    try:
        serve_run(run_dir, host=host, port=port, open_browser=not no_browser, echo=click.echo)
    except KeyboardInterrupt:
        click.echo("stopped.", err=True)


@cli.command("label")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--export", "export_path", type=click.Path(path_type=Path), default=None,
              metavar="FILE", help="Write the labelling sample: FILE.csv (a row per image and "
              "protected concept, group to fill in) or FILE.json (Label Studio tasks, images "
              "embedded).")
@click.option("--import", "import_path", type=click.Path(path_type=Path), default=None,
              metavar="FILE", help="Add the labels of a CSV (image_id, concept, group) or a "
              "Label Studio JSON export.")
@click.option("--labeller", default=None, help="Who gave the imported labels (recorded with "
              "each).")
def label_command(run_dir: Path, export_path: Path | None, import_path: Path | None,
                  labeller: str | None) -> None:
    """Label generated images in bulk: export the labelling sample, or import labels.

    The labels (labels/labels.csv in the run folder) let the measure stage check how the
    decoders read generated images (decoder transfer). Without --export or --import, counts
    the labels given so far.

    \b
    Example:
      gan-audit label reports/demo --export to_label.csv
      gan-audit label reports/demo --import to_label.csv --labeller "A. Labeller"
      gan-audit label reports/demo --export tasks.json   # for Label Studio
    """
    from audit.errors import LabelError
    from audit.labelfiles import export_labelling, import_labels, label_studio_config
    from audit.labels import LABELS_FILE, label_choices, labelling_sample, read_labels

    if export_path is not None and import_path is not None:
        raise LabelError("give --export FILE or --import FILE, not both.")
    if export_path is not None:
        n = export_labelling(run_dir, export_path)
        click.echo(f"{n} images -> {export_path}")
        if export_path.suffix.lower() == ".json":
            click.echo("Label Studio labelling interface (Settings > Labeling Interface > "
                       "Code):\n" + label_studio_config(label_choices(run_dir)))
        return
    if import_path is not None:
        if not (labeller or "").strip():
            raise LabelError("give the labeller's name with --labeller NAME (it is recorded "
                             "with each label).")
        n = import_labels(run_dir, import_path, labeller=labeller or "")
        click.echo(f"{n} labels from {import_path} -> {run_dir / LABELS_FILE}; run gan-audit "
                   f"run CONFIG (or gan-audit measure CONFIG) to measure decoder transfer with "
                   f"them.")
        return
    n_images, labels = len(labelling_sample(run_dir)), read_labels(run_dir)
    click.echo(f"labelling sample: {n_images} images; {len(labels)} labels")
    for (concept, who), part in labels.groupby(["concept", "labeller"], sort=True):
        click.echo(f"  {concept}  {who}: {part['image_id'].nunique()} images")


_LISTED = 20  # problems verify lists one by one (the rest are counted)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--expect-head", default=None, metavar="HASH",
              help="The review log's head hash as recorded earlier (printed by review and "
                   "verify): fail unless the log still holds that entry unchanged.")
@click.option("--trusted-keys", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="A folder of the public keys (*.pub) you trust: a signature by any other "
                   "key fails.")
def verify(run_dir: Path, expect_head: str | None, trusted_keys: Path | None) -> None:
    """Check a run folder against its manifest: every artifact's sha256 and size, the
    config, the stages' outputs, the review log's hash chain and every signature (valid,
    still matching the folder, by a trusted key). Exit 0 when intact, 1 with a list of what
    differs. Loads no model and imports no code the folder names.

    \b
    Example:
      gan-audit verify reports/demo
      gan-audit verify reports/demo --expect-head sha256:3f2a...c9
      gan-audit verify reports/demo --trusted-keys keys/
    """
    from audit.verify import verify_run

    check = verify_run(run_dir, expected_review_head=expect_head, trusted_keys=trusted_keys)
    for note in check.notes:
        click.echo(f"note: {note}", err=True)
    for sig in check.signatures:
        if sig.name or sig.key_fingerprint:
            click.echo(f"signed by {sig.name} ({sig.role}) on {sig.signed_at}, key "
                       f"{sig.key_fingerprint}: {sig.artifacts} artifacts, config, review log "
                       f"of {sig.review_entries} entries: {'valid' if sig.ok else 'INVALID'}")
    head = f"head sha256:{check.review_head}" if check.review_head else "empty"
    summary = (f"{check.artifacts} artifacts, config, {len(check.stages)} finished stages, "
               f"{len(check.signatures)} signature(s); review log: {check.review_entries} "
               f"entries, {head}")
    if check.ok:
        click.echo(f"{run_dir}: intact ({summary})")
        return
    click.echo(f"{run_dir}: differs from its manifest in {len(check.problems)} place(s):")
    for problem in check.problems[:_LISTED]:
        click.echo(f"  - {problem}")
    if len(check.problems) > _LISTED:
        click.echo(f"  ... and {len(check.problems) - _LISTED} more")
    click.echo(f"checked: {summary}")
    click.get_current_context().exit(1)


@cli.command()
@click.argument("run_a", type=click.Path(path_type=Path))
@click.argument("run_b", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--no-pdf", is_flag=True)
def compare(run_a: Path, run_b: Path, out: Path, no_pdf: bool) -> None:
    """Compare two audits (e.g. two checkpoints of one GAN).

    \b
    Example:
      gan-audit compare reports/ckpt-100k reports/ckpt-200k --out reports/compare
    """
    import json

    from audit.report import render_compare

    paths = render_compare(run_a, run_b, out=out, pdf=not no_pdf)
    comparison = json.loads(paths["json"].read_text(encoding="utf-8"))
    metrics, findings = comparison["metrics"], comparison["findings"]
    moved = sum(1 for m in metrics if m.get("intervals_overlap") is False)
    click.echo(f"{len(metrics)} metrics in both audits, {moved} with intervals that do not "
               f"overlap; findings: {len(findings['new'])} new, {len(findings['resolved'])} "
               f"resolved, {len(findings['changed_severity'])} changed in severity")
    for kind in ("new", "resolved"):
        for f in findings[kind]:
            click.echo(f"  {kind}: [{f['severity']}] {f['id']}")
    for warning in comparison["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--from", "start", required=True,
              help="Start: a seed, or a generated image id (gen-<seed>-<index>).")
@click.option("--to", "end", required=True, help="End: a seed or a generated image id.")
@click.option("--steps", type=click.IntRange(min=2), default=9, show_default=True,
              help="Images along the path, both ends included.")
@click.option("--method", type=click.Choice(["slerp", "linear"]), default="slerp",
              show_default=True, help="Great-circle (slerp) or straight-line path.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="cpu",
              show_default=True)
@trust_run_config_option
def interpolate(run_dir: Path, start: str, end: str, steps: int, method: str,
                device: str, trust_run_config: bool) -> None:
    """Decode every concept along a latent path between two generated images.

    Writes RUN_DIR/insight/interpolation-<name>.png (the image strip) and adds the path to
    insight/interpolations.json; prints each step's score and decoded probabilities.

    \b
    Example:
      gan-audit interpolate reports/demo --from gen-0-0 --to gen-0-4 --steps 9
      gan-audit interpolate reports/demo --from 3 --to 7 --method linear
    """
    from audit.config import load_run_config
    from audit.insight.run import interpolate_run

    cfg = load_run_config(run_dir, trust=trust_run_config)
    with _writing(run_dir, record=["insight"]):
        path = interpolate_run(run_dir, start=start, end=end, steps=steps, method=method,
                               cfg=cfg, device=device)  # type: ignore[arg-type]
    shown = path.groups
    click.echo("step  t      score    " + "  ".join(
        f"{c}:{g[-1] if len(g) == 2 else 'argmax'}" for c, g in shown.items()))
    for i, t in enumerate(path.t):
        cells = []
        for c, g in shown.items():
            p = path.probabilities[c][i]
            cells.append(f"{p[-1]:.3f}" if len(g) == 2 else f"{g[int(p.argmax())]} "
                         f"({p.max():.2f})")
        click.echo(f"{i:>4}  {t:.3f}  {path.scores[i]:>7.3f}  " + "  ".join(cells))
    for c, s in path.summary.items():
        click.echo(f"{c}: {s['start']} -> {s['end']}, change {s['change']:.2f}, path length "
                   f"{s['path_length']:.2f}", err=True)
    click.echo(f"-> {run_dir / 'insight' / 'interpolations.json'}", err=True)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--reject-share", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.25, show_default=True,
              help="Share of each source's images, lowest scores first, that the diagnosis "
                   "looks at (the lowest-scored).")
@click.option("--top", type=click.IntRange(min=0), default=16, show_default=True,
              help="Lowest-scored images listed (and shown) per source.")
@click.option("--no-images", is_flag=True, help="Skip the image grids (no models loaded).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="cpu",
              show_default=True)
@trust_run_config_option
def diagnose(run_dir: Path, reject_share: float, top: int, no_images: bool, device: str,
             trust_run_config: bool) -> None:
    """Which groups the discriminator scores lowest: lifts with intervals, lowest-scored images.

    Writes RUN_DIR/insight/diagnosis.json and the grids of the lowest-scored images
    (rejected-real.png, rejected-generated.png); prints the named groups.

    \b
    Example:
      gan-audit diagnose reports/demo
      gan-audit diagnose reports/demo --reject-share 0.1 --top 8 --no-images
    """
    from audit.config import load_run_config
    from audit.insight.run import diagnose_run

    cfg = None if no_images else load_run_config(run_dir, trust=trust_run_config, images=True)
    with _writing(run_dir, record=["insight"]):
        result = diagnose_run(run_dir, reject_share=reject_share, top_k=top,
                              images=not no_images, cfg=cfg, device=device)
    for s in result.sources:
        click.echo(f"{s.source}: {s.n_rejected} of {s.n} images lowest-scored (score <= "
                   f"{s.threshold if s.threshold is None else round(s.threshold, 3)})")
    lines = result.summary()
    click.echo("\n".join(lines) if lines else "no group is over-represented among the "
               "lowest-scored images")
    click.echo(f"-> {run_dir / 'insight' / 'diagnosis.json'}", err=True)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--tensorboard", type=click.Path(path_type=Path), default=None,
              help="Also write the decoder curves as TensorBoard event files here "
                   "(needs: pip install 'gan-audit[tensorboard]').")
@click.option("--steps", type=click.IntRange(min=2), default=9, show_default=True,
              help="Images per interpolation path.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="cpu",
              show_default=True)
@trust_run_config_option
def insight(run_dir: Path, tensorboard: Path | None, steps: int, device: str,
            trust_run_config: bool) -> None:
    """Every insight view of a finished run: diagnosis, interpolation, entropy, redundancy,
    decoder curves (into RUN_DIR/insight/; re-render with gan-audit report).

    \b
    Example:
      gan-audit insight reports/demo && gan-audit report reports/demo --no-pdf
      gan-audit insight reports/demo --tensorboard runs/decoders
    """
    from audit.config import load_run_config
    from audit.insight.run import insight_for_run

    cfg = (load_run_config(run_dir, trust=trust_run_config, images=True)
           if (Path(run_dir) / "config.yaml").is_file() else None)
    with _writing(run_dir, record=["insight"]):
        index = insight_for_run(run_dir, cfg, device=device, tensorboard=tensorboard,
                                steps=steps, log=lambda line: click.echo(line, err=True))
    for name, entry in index.items():
        click.echo(f"{name}: " + (f"not available: {entry['unavailable']}"
                                  if "unavailable" in entry else f"{entry['seconds']:.1f} s"))


@cli.command()
@click.argument("config", type=click.Path(path_type=Path))
def plan(config: Path) -> None:
    """Size an audit before running it: images needed per group for 80% power.

    For each protected concept, intersection and group (shares from the real images'
    labels, else the paired ones'), the generated and real images needed to detect the
    policy's gaps (a generated share under_margin below the real one; an impact ratio of
    impact_threshold) at the per-test level of the audit's Holm family. Images that come
    in clusters (measure.cluster_by) count less: multiply by the design effect.

    \b
    Example:
      gan-audit plan audit.yaml
    """
    from audit.measure.power import describe
    from audit.plan import config_to_plan

    result = config_to_plan(config)
    click.echo(f"plan for {result['config']} ({result['concept_set']}): {result['n_tests']} "
               f"tests, each at level {result['alpha']:.2g} (alpha / tests, Holm), "
               f"{result['power']:.0%} power, {result['ratio']:g} real per generated image")
    for line in describe(result["rows"]):
        click.echo(line)
    audited = result["audited"]
    if audited["real"] or audited["generated"]:
        click.echo(f"the config audits {audited['real'] or 'all'} real and "
                   f"{audited['generated'] or 'the given'} generated images")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the card here instead of RUN_DIR/model-card.md (which the run's "
                   "manifest records).")
def card(run_dir: Path, out: Path | None) -> None:
    """Write the "Bias, Risks, and Limitations" and "Evaluation" sections of a Hugging
    Face-style model card (Markdown with YAML metadata) from results.json, linking to the
    full report.

    \b
    Example:
      gan-audit card reports/demo
      gan-audit card reports/demo --out MODEL_CARD_bias.md
    """
    from audit.card import CARD_NAME, write_card

    if out is None:
        with _writing(run_dir, record=[CARD_NAME]):
            path = write_card(run_dir)
    else:
        path = write_card(run_dir, out=out)
    click.echo(str(path))


# ---------------------------------------------------------------- concept sets


@cli.group("concept-sets", context_settings=CONTEXT_SETTINGS)
def concept_sets() -> None:
    """List, show and validate concept sets.

    \b
    Example:
      gan-audit concept-sets list
    """


@concept_sets.command("list")
def concept_sets_list() -> None:
    """List the bundled concept sets.

    \b
    Example:
      gan-audit concept-sets list
    """
    from audit.concepts import bundled_concept_sets, load_concept_set

    rows = []
    for name in bundled_concept_sets():
        cs = load_concept_set(name)
        rows.append((name, str(len(cs.concepts)),
                     ", ".join(c.name for c in cs.protected) or "-"))
    header = ("name", "concepts", "protected concepts")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(2)]
    for r in [header, *rows]:
        click.echo(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]}")


@concept_sets.command("show")
@click.argument("name")
def concept_sets_show(name: str) -> None:
    """Print a concept set's YAML (bundled name or file path).

    \b
    Example:
      gan-audit concept-sets show celeba_protected
    """
    from audit.concepts import bundled_concept_sets, load_concept_set

    load_concept_set(name)  # validates, with a clear error for unknown names
    path = bundled_concept_sets().get(name, Path(name))
    click.echo(path.read_text(encoding="utf-8"), nl=False)


@concept_sets.command("validate")
@click.argument("file", type=click.Path(path_type=Path))
def concept_sets_validate(file: Path) -> None:
    """Check a concept set file; list every problem with its location.

    \b
    Example:
      gan-audit concept-sets validate my_concepts.yaml
    """
    from audit.concepts import load_concept_set

    cs = load_concept_set(file)
    click.echo(f"{file}: valid concept set {cs.name!r}: {len(cs.concepts)} concepts "
               f"({', '.join(cs.names)}), protected: "
               f"{', '.join(c.name for c in cs.protected) or 'none'}, "
               f"{len(cs.intersections)} intersection(s)")


# ---------------------------------------------------------------- signatures (#21)


def _passphrase(variable: str | None) -> bytes | None:
    """The passphrase held by the environment variable ``variable`` (never a command-line
    value, which other users can read in the process list)."""
    import os

    from audit.errors import SigningError

    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise SigningError(f"--passphrase-env {variable}: the environment variable {variable} "
                           f"is not set or empty; export the passphrase in it first.")
    return value.encode("utf-8")


passphrase_option = click.option(
    "--passphrase-env", default=None, metavar="VAR",
    help="The environment variable that holds the key's passphrase (never the passphrase "
         "itself on the command line).")


@cli.command("sign-pdf")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--p12", type=click.Path(path_type=Path), required=True,
              help="PKCS#12 file (.p12/.pfx) with the signer's certificate and private key.")
@passphrase_option
@click.option("--reason", default="gan-audit report", show_default=True,
              help="The reason PDF readers show next to the signature.")
@click.option("--location", default=None, help="Where it was signed (shown by readers).")
def sign_pdf(run_dir: Path, p12: Path, passphrase_env: str | None, reason: str,
             location: str | None) -> None:
    """Sign RUN_DIR/report.pdf (PAdES) into RUN_DIR/report.signed.pdf, recorded in the
    manifest. PDF readers show who signed it and whether it changed since; `pdfsig` checks
    it. The report.pdf must match the manifest. A review re-renders report.pdf: sign again.

    \b
    Example:
      gan-audit keygen --x509 --name "A. Auditor" --out me.p12 --passphrase-env P12_PASS
      gan-audit sign-pdf reports/demo --p12 me.p12 --passphrase-env P12_PASS
      pdfsig reports/demo/report.signed.pdf
    """
    from audit.errors import SigningError
    from audit.manifest import differing_artifacts, read_manifest
    from audit.pdfsign import sign_pdf as sign
    from audit.runfolder import refuse_links

    passphrase = _passphrase(passphrase_env)
    with _writing(run_dir, record=["report.signed.pdf"], needs="gan-audit run"):
        manifest = read_manifest(run_dir)
        changed = differing_artifacts(run_dir, ["report.pdf"], manifest) if manifest else []
        if changed:
            raise SigningError(f"{run_dir}: will not sign a report.pdf that differs from "
                                  f"the manifest ({'; '.join(changed)}). Render it again "
                                  f"with `gan-audit report {run_dir}`.")
        out = sign(refuse_links(run_dir / "report.pdf"), run_dir / "report.signed.pdf",
                   p12=p12, passphrase=passphrase, reason=reason, location=location)
    click.echo(str(out))




# ---------------------------------------------------------------- compliance (#21)


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The private key file to write (the public key goes to FILE.pub); with "
                   "--x509, the PKCS#12 file (.p12). Never overwritten; permissions 0600.")
@passphrase_option
@click.option("--x509", "x509", is_flag=True,
              help="Make a key and a self-signed X.509 certificate for signing report PDFs "
                   "(PKCS#12, for sign-pdf) instead of an Ed25519 key for signing run folders.")
@click.option("--name", default=None, help="With --x509: the signer's name, shown by PDF "
                                           "readers.")
@click.option("--days", type=click.IntRange(min=1), default=None,
              help="With --x509: validity of the certificate in days [default: 3 years].")
def keygen(out: Path, passphrase_env: str | None, x509: bool, name: str | None,
           days: int | None) -> None:
    """Make a key: an Ed25519 key pair for signing run folders (`gan-audit sign`): the
    private key (PEM, PKCS#8, permissions 0600, encrypted with the passphrase if given) and
    FILE.pub; or, with --x509, a key and a self-signed certificate for signing report PDFs
    (`gan-audit sign-pdf`; readers call its signatures valid and the certificate untrusted
    until told to trust it: a certificate from your organisation's CA avoids that). Never
    overwrites a file.

    \b
    Examples:
      read -s GAN_AUDIT_PASSPHRASE; export GAN_AUDIT_PASSPHRASE
      gan-audit keygen --out keys/auditor --passphrase-env GAN_AUDIT_PASSPHRASE
      gan-audit keygen --x509 --name "A. Auditor" --out keys/auditor.p12 \\
          --passphrase-env GAN_AUDIT_PASSPHRASE
    """
    passphrase = _passphrase(passphrase_env)
    if x509:
        _keygen_x509(out, passphrase, name=name, days=days)
        return
    if name is not None or days is not None:
        raise click.UsageError("--name and --days go with --x509 (a certificate); an Ed25519 "
                               "key has neither.")
    from audit.signing import write_key_pair

    files = write_key_pair(out=out, passphrase=passphrase)
    click.echo(f"private key: {files.private} (keep it secret)")
    click.echo(f"public key:  {files.public} (share it; verifiers put it in --trusted-keys)")
    click.echo(f"fingerprint: {files.fingerprint}")


def _keygen_x509(out: Path, passphrase: bytes | None, *, name: str | None,
                 days: int | None) -> None:
    """``keygen --x509``: the self-signed certificate and key, as PKCS#12."""
    from audit.pdfsign import DEFAULT_DAYS, self_signed_certificate

    if not name:
        raise click.UsageError("--x509 needs --name: the signer's name that PDF readers show.")
    self_signed_certificate(name=name, out_p12=out, passphrase=passphrase,
                            days=days or DEFAULT_DAYS)
    if passphrase is None:
        click.echo(f"warning: {out}: the private key is not encrypted (no --passphrase-env); "
                   f"only the file's permissions (0600) protect it.", err=True)
    click.echo(str(out))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--key", type=click.Path(path_type=Path), required=True,
              help="The private key file (from gan-audit keygen).")
@click.option("--name", required=True, help="The signer's name.")
@click.option("--role", required=True, help="The signer's role (e.g. 'external auditor').")
@passphrase_option
def sign(run_dir: Path, key: Path, name: str, role: str, passphrase_env: str | None) -> None:
    """Sign a run folder: a statement of every artifact's sha256, the config's, the review
    log's head, the tool version and the date, appended to RUN/signatures.jsonl. Several
    reviewers may sign; gan-audit verify checks them all.

    \b
    Example:
      gan-audit sign reports/demo --key keys/auditor --name "A. Auditor" \\
          --role "external auditor" --passphrase-env GAN_AUDIT_PASSPHRASE
    """
    from audit.signing import load_private_key, sign_run

    private = load_private_key(key, passphrase=_passphrase(passphrase_env))
    with _writing(run_dir):
        record = sign_run(run_dir, key=private, name=name, role=role)
    statement = record["statement"]
    click.echo(f"signed {run_dir} as {name} ({role}) on {statement['signed_at']}: "
               f"{len(statement['artifacts'])} artifacts, config, review log of "
               f"{statement['review_entries']} entries; key "
               f"{statement['signer']['key_fingerprint']}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--fail-on", type=click.Choice(["high", "medium", "low"]), required=True,
              help="Block on findings of this severity or above that are not accepted or "
                   "mitigated in the review log.")
@click.option("--require-review", is_flag=True,
              help="Block unless every finding above info has a review entry.")
@click.option("--require-signatures", type=click.IntRange(min=0), default=0, metavar="N",
              help="Block unless at least N signers (distinct keys) signed the folder as it is.")
@click.option("--trusted-keys", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Count only signatures by the public keys (*.pub) in DIR.")
@click.option("--junit", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Also write the findings as JUnit XML (one test case per finding).")
def gate(run_dir: Path, fail_on: str, require_review: bool, require_signatures: int,
         trusted_keys: Path | None, junit: Path | None) -> None:
    """A release gate: exit 0 when nothing blocks, 1 with one line per blocking reason.

    \b
    Example:
      gan-audit gate reports/demo --fail-on high --require-review \\
          --require-signatures 1 --junit gate.xml
    """
    from audit.gate import gate_run, gate_to_junit
    from audit.io import atomic_write_bytes
    from audit.vocabulary import Severity

    result = gate_run(run_dir, fail_on=Severity(fail_on), require_review=require_review,
                      require_signatures=require_signatures, trusted_keys=trusted_keys)
    if junit is not None:
        atomic_write_bytes(junit, gate_to_junit(result))
    for reason in result.blocking:
        click.echo(f"blocked: {reason}")
    click.echo(result.summary)
    if result.blocking:
        click.get_current_context().exit(1)


@cli.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.argument("values", nargs=-1)
@click.option("--checkpoints", "as_checkpoints", is_flag=True,
              help="VALUES are checkpoints in training order: network pickles, quoted globs "
                   "('runs/*.pkl', sorted) or builtin:NAME specs; each replaces both "
                   "discriminator.spec and generator.spec.")
@click.option("--truncation", "as_truncation", is_flag=True,
              help="VALUES are truncation psi settings of the config's generator (a sampling "
                   "sweep: D and decoders fixed).")
@click.option("--reference-decoders", type=click.Path(path_type=Path), default=None,
              metavar="RUN", help="Decode every checkpoint's generated images with RUN's "
                                  "discriminator and decoders (fixed), instead of each "
                                  "checkpoint's own.")
@click.option("--baseline", default=None, metavar="POINT",
              help="The point change points compare with (default: the first).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Tracking folder (default: 'out' of the config).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None,
              help="Device for every point's audit (default: the config's).")
@click.option("--no-pdf", is_flag=True, help="Skip the monitoring report's PDF.")
@click.option("--tensorboard", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Also write the curves as TensorBoard scalars here "
                   "(needs: pip install 'gan-audit[tensorboard]').")
@click.option("--fail-on", type=click.Choice(["high", "medium", "low"]), default=None,
              help="Exit 1 when a finding of this severity or above is present (as gate).")
@click.option("--trust-run-config", is_flag=True,
              help="Load the reference run's discriminator even if its config names code.")
def track(config: Path, values: tuple[str, ...], as_checkpoints: bool, as_truncation: bool,
          reference_decoders: Path | None, baseline: str | None, out: Path | None,
          device: str | None, no_pdf: bool, tensorboard: Path | None, fail_on: str | None,
          trust_run_config: bool) -> None:
    """Audit every checkpoint (or sampling setting) and report the bias curves over them.

    Without --checkpoints or --truncation, the config's track: section gives the points.

    \b
    Example:
      gan-audit track audit.yaml --checkpoints 'runs/network-*.pkl' --out reports/track
      gan-audit track audit.yaml --checkpoints A.pkl B.pkl --reference-decoders reports/A
      gan-audit track audit.yaml --truncation 1.0 0.9 0.7 0.5 --fail-on high
    """
    from audit.track.run import run_track

    checkpoints, truncation = _track_points(values, as_checkpoints, as_truncation)
    if tensorboard is not None:  # fail before any work when the extra is missing
        from audit.track.tensorboard import check_tensorboard

        check_tensorboard()
    summary = run_track(config, checkpoints=checkpoints, truncation=truncation,
                        reference=reference_decoders, baseline=baseline, out=out,
                        device=device, pdf=False if no_pdf else None,
                        trust_run_config=trust_run_config)
    if tensorboard is not None:
        from audit.track.tensorboard import series_to_tensorboard

        files = series_to_tensorboard([r for p in summary.points for r in p.rows], tensorboard)
        click.echo(f"tensorboard: {len(files)} event file(s) in {tensorboard}")
    _print_track(summary)
    if fail_on is not None:
        from audit.gate import at_or_above

        blocking = [f for f in summary.findings if at_or_above(f["severity"], fail_on)]
        for f in blocking:
            click.echo(f"blocked: {f['id']} ({f['severity']}): {f['summary']}")
        verdict = f"blocked by {len(blocking)} finding(s)" if blocking else "passed"
        click.echo(f"track gate {verdict}: {len(summary.findings)} finding(s), failing on "
                   f"{fail_on} and above")
        if blocking:
            click.get_current_context().exit(1)


def _track_points(values: tuple[str, ...], as_checkpoints: bool, as_truncation: bool
                  ) -> tuple[list[str] | None, list[float] | None]:
    """The command line's points: checkpoints or truncation settings (or none: the config's)."""
    from audit.errors import ConfigError

    if as_checkpoints and as_truncation:
        raise ConfigError("give --checkpoints or --truncation, not both.")
    if values and not (as_checkpoints or as_truncation):
        raise ConfigError(f"{values[0]}: what are these values? Put --checkpoints or "
                          f"--truncation before them.")
    if (as_checkpoints or as_truncation) and not values:
        raise ConfigError("--checkpoints/--truncation needs values after it (e.g. "
                          "--truncation 1.0 0.7 0.5).")
    if as_truncation:
        try:
            psi = [float(v) for v in values]
        except ValueError as exc:
            raise ConfigError(f"--truncation: {exc}; give numbers such as 1.0 0.7 0.5.") \
                from exc
        bad = [p for p in psi if not p > 0 or p != p or p == float("inf")]
        if bad:
            raise ConfigError(f"--truncation: {bad[0]} is not a positive psi (e.g. 0.7).")
        return None, psi
    return (list(values) or None), None


def _print_track(summary: Any) -> None:
    """The tracking run's closing summary: points and their cost, decoders, findings."""
    doc = summary.document
    click.echo(f"tracking run {doc.get('name')}: {summary.out} ({doc['mode']}, "
               f"{len(summary.points)} points, decoders {doc['decoders']['kind']})")
    for p in summary.points:
        ran = ", ".join(f"{k} {v:.1f} s" for k, v in p.seconds.items() if v)
        click.echo(f"  {p.point.name:<24} {p.wall_seconds:6.1f} s  ran: {ran or 'nothing'}"
                   + (f"; reused: {', '.join(p.reused)}" if p.reused else ""))
    shown = [f for f in summary.findings if f.get("severity") != "info"][:8]
    click.echo(f"findings ({len(summary.findings)} in all):" if shown
               else "no trend or change point is significant")
    for f in shown:
        click.echo(f"  [{f['severity']}] {f['id']}: {f['summary']}")
    for kind, path in summary.outputs.items():
        click.echo(f"{kind}: {path}")


def interrupt_on_sigterm() -> None:
    """Treat SIGTERM (``kill``, a CI timeout, a scheduler) like Ctrl-C: the running write
    removes its temporary file and the run folder stays consistent and resumable."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    # A blocked signal mask is inherited across exec: started by a parent that blocks
    # SIGTERM (some process managers, a test runner's thread), the signal would stay
    # pending and the process would never stop, temporary files and all.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def main() -> None:
    """Console entry point."""
    interrupt_on_sigterm()
    cli.main(prog_name="gan-audit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``apocal`` command: ``summary``, ``reduce``, ``stack`` and ``demo``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .exceptions import ApocalError
from .termination import Terminated, signals_as_exceptions

__all__ = ["main"]

log = logging.getLogger("apocal")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 on success).

    Every failure ends with one line on standard error naming the file or
    folder at fault, and a non-zero exit code: 1 for an error, 128 + the
    signal number when stopped by Ctrl-C (SIGINT), SIGTERM or SIGHUP.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    _console_logging(quiet=getattr(args, "quiet", False))
    try:
        with signals_as_exceptions():
            return args.run(args)
    except (ApocalError, FileExistsError) as err:
        return _error(_one_line(err))
    except OSError as err:
        return _error(f"{err.filename}: {err.strerror}" if err.filename and err.strerror
                      else _one_line(err))
    except Terminated as err:
        print(f"apocal: stopped by {err}; run the same command again to finish the job",
              file=sys.stderr)
        return 128 + err.signal
    except KeyboardInterrupt:
        print("apocal: interrupted; run the same command again to finish the job",
              file=sys.stderr)
        return 130
    except SystemExit as err:    # argparse is done: this came from code apocal ran
        return _error(f"stopped by sys.exit({err.code!r}) in code apocal ran (an instrument "
                      f"plugin?)")
    except Exception as err:     # a bug: one line here, the traceback in apocal.log
        return _error(f"unexpected {type(err).__name__}: {_one_line(err)}")


def _error(message: str) -> int:
    print(f"apocal: error: {message}", file=sys.stderr)
    return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apocal",
        description="Raw CCD frames to calibrated data: survey a night, reduce it, stack "
                    "calibrated frames, or run the demo on simulated data.")
    parser.add_argument("--version", action="version", version=f"apocal {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    summary = commands.add_parser(
        "summary", help="list every file of a night: instrument, kind, exposure, setup",
        description="A table of every FITS file in RAW_DIR: name, instrument (and DIS "
                    "camera), frame kind, exposure time, binning, configuration, lamps and "
                    "date. Files that cannot be used are listed with the reason.")
    summary.add_argument("raw_dir", metavar="RAW_DIR", help="folder of raw frames")
    _instrument_options(summary)
    summary.add_argument("--ecsv", action="store_true",
                         help="print the table as ECSV (machine-readable) instead")
    summary.set_defaults(run=_summary)

    reduce = commands.add_parser(
        "reduce", help="reduce a whole night: masters, calibrated frames, report",
        description="Group the frames of RAW_DIR by instrument, binning and configuration, "
                    "build each group's master bias, dark, flat and arc, calibrate every "
                    "science frame to electrons, and write masters, calibrated frames, "
                    "summary.json, files.ecsv, apocal.log and report.html into OUT_DIR. "
                    "RAW_DIR is never written to. Run the same command again after an "
                    "interruption (even kill -9) to finish the job; one run at a time may "
                    "write into OUT_DIR.")
    reduce.add_argument("raw_dir", metavar="RAW_DIR", help="folder of raw frames")
    reduce.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                        help="output folder (not inside RAW_DIR)")
    _instrument_options(reduce)
    choices = reduce.add_argument_group("calibration choices")
    choices.add_argument("--combine", choices=("median", "mean"), default="median",
                         help="how biases, darks and flats are combined (default: median)")
    choices.add_argument("--sigma-clip", type=float, metavar="SIGMA",
                         help="reject values SIGMA times their uncertainty from the stack "
                              "median before combining (default: no clipping)")
    choices.add_argument("--flat-response", choices=("spline", "poly", "boxcar", "none"),
                         help="fit to the flat lamp spectrum that is divided out (default: "
                              "spline for KOSMOS, poly for DIS; imaging flats are divided by "
                              "their median)")
    choices.add_argument("--flat-order", type=int, metavar="N",
                         help="polynomial order for --flat-response poly (default 9)")
    choices.add_argument("--flat-knots", type=int, metavar="N",
                         help="interior knots for --flat-response spline (default 40)")
    choices.add_argument("--boxcar-width", type=int, metavar="PIXELS",
                         help="smoothing width for --flat-response boxcar (default 51)")
    choices.add_argument("--overscan", choices=("rows", "level"), default="rows",
                         help="overscan: smoothed level per row, or one level per amplifier "
                              "(default: rows)")
    choices.add_argument("--cosmic-rays", action="store_true",
                         help="find and replace cosmic rays in calibrated science frames "
                              "(L.A.Cosmic)")
    reduce.add_argument("--overwrite", action="store_true",
                        help="redo a finished reduction in OUT_DIR, replacing its files "
                             "(products of raw frames since removed are deleted)")
    reduce.add_argument("--no-report", action="store_true", help="skip report.html")
    reduce.add_argument("-q", "--quiet", action="store_true", help="print warnings only")
    reduce.set_defaults(run=_reduce)

    stack = commands.add_parser(
        "stack", help="align and co-add calibrated frames into one image",
        description="Reproject calibrated frames (files written by apocal, e.g. reduce's "
                    "calibrated/ folder) onto one grid by their celestial WCS and combine "
                    "them: a weighted mean with its uncertainty, masked pixels left out, and "
                    "COVERAGE (frames per pixel) and EXPOSURE (seconds per pixel) "
                    "extensions. 2-D spectra without WCS are shifted along --spatial-axis "
                    "by shifts measured by cross-correlation.")
    stack.add_argument("files", nargs="+", metavar="FILES", help="calibrated FITS files")
    stack.add_argument("-o", "--output", required=True, metavar="OUT.fits",
                       help="the stacked image (not replaced without --overwrite)")
    stack.add_argument("--projection", choices=("interp", "adaptive", "exact"),
                       default="interp",
                       help="resampling: bilinear interpolation (default), flux-conserving "
                            "adaptive (another pixel scale), or exact overlap (slowest)")
    stack.add_argument("--reference", choices=("first", "optimal"), default="first",
                       help="output grid: the first frame's (default) or one covering all "
                            "frames")
    stack.add_argument("--sigma-clip", type=float, metavar="SIGMA",
                       help="reject values SIGMA times their uncertainty from the median of "
                            "the frames (satellite trails, cosmic rays; 3 frames or more)")
    stack.add_argument("--spatial-axis", type=int, choices=(0, 1),
                       help="2-D spectra without WCS: numpy axis along the slit")
    stack.add_argument("--overwrite", action="store_true", help="replace OUT.fits")
    stack.add_argument("-q", "--quiet", action="store_true", help="print warnings only")
    stack.set_defaults(run=_stack)

    demo = commands.add_parser(
        "demo", help="simulate a night (KOSMOS, DIS Red/Blue, SBO) and reduce it",
        description="Simulate raw frames of a realistic night for KOSMOS, DIS Red and Blue "
                    "and an SBO imaging camera into OUT_DIR/raw and reduce them into "
                    "OUT_DIR/reduced, with a report. Needs no data of your own.")
    demo.add_argument("output", nargs="?", default="apocal-demo", metavar="OUT_DIR",
                      help="folder for the demo (default: apocal-demo)")
    demo.add_argument("--size", choices=("small", "full"), default="small",
                      help="small: 2x2-binned frames (about a minute); full: unbinned")
    demo.add_argument("--overwrite", action="store_true", help="replace an earlier demo")
    demo.add_argument("-q", "--quiet", action="store_true", help="print warnings only")
    demo.set_defaults(run=_demo)
    return parser


def _instrument_options(parser):
    parser.add_argument("--instrument", metavar="NAME|module:Class|file.py:Class",
                        help="use this instrument for every file instead of recognising it "
                             "from the header: kosmos, dis-red, dis-blue, sbo, or your own "
                             "Instrument subclass")
    parser.add_argument("--gain", type=float, metavar="E_PER_ADU",
                        help="gain for --instrument (e-/ADU), e.g. for a camera without a "
                             "GAIN card")
    parser.add_argument("--read-noise", type=float, metavar="ELECTRONS",
                        help="read noise for --instrument (e-)")


def _instrument(args):
    if args.instrument is None:
        if args.gain is not None or args.read_noise is not None:
            raise ApocalError("--gain and --read-noise need --instrument")
        return None
    from .detection import load_instrument

    return load_instrument(args.instrument, gain=args.gain, read_noise=args.read_noise)


def _summary(args) -> int:
    from .survey import survey, survey_table

    table = survey_table(survey(args.raw_dir, _instrument(args)))
    if args.ecsv:
        table.write(sys.stdout, format="ascii.ecsv")
    else:
        table.pprint_all()
    return 0


def _reduce(args) -> int:
    from .night import ReductionOptions, reduce_night

    options = ReductionOptions(combine=args.combine, sigma_clip=args.sigma_clip,
                               flat_response=args.flat_response, flat_order=args.flat_order,
                               flat_knots=args.flat_knots, boxcar_width=args.boxcar_width,
                               overscan=args.overscan, cosmic_rays=args.cosmic_rays)
    result = reduce_night(args.raw_dir, args.output, instrument=_instrument(args),
                          options=options, overwrite=args.overwrite, progress=True,
                          report=not args.no_report)
    return _finish(result)


def _stack(args) -> int:
    from .stacking import stack

    try:
        result = stack(args.files, projection=args.projection, sigma_clip=args.sigma_clip,
                       reference=args.reference, spatial_axis=args.spatial_axis)
    except ValueError as err:   # options that do not fit these frames
        raise ApocalError(str(err)) from None
    path = result.write(args.output, overwrite=args.overwrite)
    log.info("stacked %d frames (%s) into %s; up to %d per pixel", len(result.names),
             result.projection, path, int(result.coverage.max()))
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    result = run_demo(args.output, size=args.size, overwrite=args.overwrite, progress=True)
    return _finish(result)


def _finish(result) -> int:
    """Report a reduction; 1 when a group with science frames calibrated none."""
    if result.problems:
        log.warning("%d problem(s), the rest was reduced:", len(result.problems))
        for problem in result.problems:
            log.warning("  %s", problem)
    where = result.report or result.output_dir / "summary.json"
    log.info("done: %s", where)
    for line in result.failed_checks:
        log.warning("warning: %s", _one_line(line))
    for line in result.failed_groups:
        print(f"apocal: error: {_one_line(line)}", file=sys.stderr)
    return 1 if result.failed_groups else 0


def _console_logging(quiet: bool) -> None:
    for old in [h for h in log.handlers if getattr(h, "apocal_console", False)]:
        log.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.apocal_console = True
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    # what the run writes only into apocal.log (why it stopped: said here once, by main)
    handler.addFilter(lambda record: not getattr(record, "file_only", False))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # the console gets each message once, from this handler


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The `payband` command: the umbrella over every payband package."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console

from payband import __version__
from payband.options import DemoOptions, UpOptions
from payband_contracts.cli_support import add_version_option, fail
from payband_contracts.errors import first_line

HELP = "payband: salary-band prediction built as a high-risk AI system under the EU AI Act."
app = typer.Typer(
    help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)
add_version_option(app, f"payband {__version__}", HELP)

DEMO, UP = DemoOptions(), UpOptions()
# Wide enough that summary lines are not wrapped when the output is a file or a pipe.
_WIDTH = 160


def _consoles() -> tuple[Console, Console]:
    out = Console(width=None if Console().is_terminal else _WIDTH)
    err = Console(stderr=True, width=None if Console(stderr=True).is_terminal else _WIDTH)
    return out, err


def _launch(action: Callable[[], int], err: Console) -> None:
    """Run a launcher: its errors are one line, Ctrl-C and SIGTERM stop what it started."""
    from payband.lifecycle import LifecycleError
    from payband.services import ServiceError, terminate_on_sigterm

    terminate_on_sigterm()
    try:
        code = action()
    except KeyboardInterrupt:
        err.print("interrupted: every process payband started has been stopped")
        raise typer.Exit(130) from None
    except (LifecycleError, ServiceError) as error:
        fail(str(error))
    except Exception as error:  # noqa: BLE001 - a bug: one line here, the traceback in a file
        fail(f"unexpected {type(error).__name__}: {first_line(error)} ({_keep_traceback()})")
    raise typer.Exit(code)


def _keep_traceback() -> str:
    """Write the current exception's traceback to PAYBAND_HOME/logs; say where."""
    import traceback

    from payband.home import Home

    path = Home().logs / "payband-error.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(traceback.format_exc())
    except OSError:
        return "the traceback could not be written"
    return f"traceback in {path}"


@app.command()
def demo(
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start over: remove the data, models and logs first.")
    ] = False,
    retrain: Annotated[
        bool, typer.Option("--retrain", help="Train a new model even if a champion exists.")
    ] = False,
    trials: Annotated[int, typer.Option(min=1, help="Optuna trials of the search.")] = DEMO.trials,
    timeout_s: Annotated[
        float | None, typer.Option("--timeout-s", min=1, help="Stop the search after seconds.")
    ] = None,
    held_out: Annotated[
        int, typer.Option(min=1_000, help="Held-out candidates sent first (chunks of 1,000).")
    ] = DEMO.held_out,
    drifted: Annotated[
        int, typer.Option(min=1_000, help="Drifted candidates sent after them.")
    ] = DEMO.drifted,
    override_gates: Annotated[
        bool,
        typer.Option(
            "--override-gates/--no-override-gates",
            help="Promote a model that fails the gates through a recorded override.",
        ),
    ] = True,
) -> None:
    """Run the whole lifecycle on embedded defaults (ingest, train, serve, audit, monitor)."""
    from payband.demo import run_demo

    out, err = _consoles()
    options = DemoOptions(
        fresh=fresh,
        retrain=retrain,
        trials=trials,
        timeout_s=timeout_s,
        held_out=held_out,
        drifted=drifted,
        override_gates=override_gates,
    )
    _launch(lambda: run_demo(options, out, err), err)


@app.command()
def up(
    trials: Annotated[
        int, typer.Option(min=1, help="Optuna trials if a model must be trained first.")
    ] = UP.trials,
    monitoring_interval_s: Annotated[
        float, typer.Option(min=5, help="Seconds between monitoring runs.")
    ] = UP.monitoring_interval_s,
    dagster: Annotated[
        bool, typer.Option("--dagster/--no-dagster", help="Start the Dagster UI.")
    ] = True,
) -> None:
    """Keep the local stack running: Dagster, MLflow, MLServer, gateway, monitoring."""
    from payband.up import run_up

    out, err = _consoles()
    options = UpOptions(trials=trials, monitoring_interval_s=monitoring_interval_s, dagster=dagster)
    _launch(lambda: run_up(options, out, err), err)


@app.command()
def status() -> None:
    """Show what `payband up` (or a running demo) runs, and whether each part answers."""
    from payband.up import run_status

    out, _ = _consoles()
    raise typer.Exit(run_status(out))


def main() -> None:
    app()

"""Rich tables for people at a terminal (results on stdout). Used by the CLI only."""

from __future__ import annotations

import errno
import math
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape as escape_markup
from rich.table import Table

from ..analyses.sharpness import student_t_quantile
from ..errors import printable
from ..operators.curvature_names import curvature_name

SPARK = " ▁▂▃▄▅▆▇█"


def escape(text: Any) -> str:
    """Text from a file (a name, a path, a note) as the terminal should show it: rich markup
    escaped, and control characters as escapes (:func:`~landscape_cli.errors.printable`)."""
    return escape_markup(printable(str(text)))


class _StdoutConsole(Console):
    """A console on stdout whose closed pipe (``... | head``) raises ``BrokenPipeError`` for the
    CLI to handle, where rich's own handler would exit 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def _fmt(value: Any, digits: int = 6) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def _negative_fraction_text(result: Any) -> str:
    """``classify``'s negative fraction with its standard error and the runs it is over."""
    value, stderr, runs = (
        result.negative_fraction,
        result.negative_fraction_stderr,
        result.negative_fraction_runs,
    )
    if value is None or runs is None:
        return _fmt(value, 3) + (" (exact)" if value is not None and stderr == 0 else "")
    if stderr is None:
        return f"{_fmt(value, 3)} (1 SLQ run: no s.e.)"
    return f"{_fmt(value, 3)} ± {_fmt(stderr, 2)} s.e. ({runs} SLQ runs)"


def _header(console: Console, info: Any) -> None:
    source = escape(info.checkpoint or "(model as constructed)")
    console.print(f"[bold]{info.command}[/bold]  {source}")
    console.print(
        f"  {info.num_parameters:,} parameters · {info.num_samples:,} samples · loss {_fmt(info.loss)} · "
        f"‖∇L‖ {_fmt(info.grad_norm, 4)} · {info.device}/{info.dtype} · HVP {info.hvp_mode}"
    )
    for key, note in getattr(info, "problem_notes", {}).items():
        console.print(f"  [yellow]note[/yellow] ({escape(key)}): {escape(note)}")


def _print_stability(console: Console, stability: Any) -> None:
    """The learning rate against the optimizer's own bound: Adam's preconditioned sharpness,
    SGD's momentum bound, or plain gradient descent's 2 (with the note for other optimizers)."""
    if stability is None:
        return
    source = (
        f"η = {_fmt(stability.lr, 4)} from {escape(stability.source)}, "
        f"{escape(stability.optimizer)}, {escape(stability.mode)}-mode λ_max"
    )
    plain = f"η·λ_max = {_fmt(stability.lr_times_lambda_max, 4)}"
    within = stability.within_bound
    if stability.preconditioned_sharpness is not None:
        console.print(
            f"edge of stability (Adam): λ_max(P⁻¹H) = {_fmt(stability.preconditioned_sharpness, 4)}"
            f" vs (2+2β₁)/((1−β₁)η) = {_fmt(stability.preconditioned_threshold, 4)} "
            f"({'within' if within else 'beyond'}; {source}; {plain} is plain GD's number)"
        )
    else:
        if stability.momentum:
            bound = (
                f"momentum bound {stability.momentum_formula} = "
                f"{_fmt(stability.momentum_threshold, 3)}"
            )
        else:
            bound = "2"
        console.print(
            f"edge of stability: {plain} vs {bound} ({'within' if within else 'beyond'}; {source})"
        )
    if stability.note:
        console.print(f"  note: {escape(stability.note)}")


def sparkline(values: np.ndarray, width: int = 60) -> str:
    """The density on a log scale as one line of block characters."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return ""
    chunks = np.array_split(values, min(width, values.size))
    heights = np.array([c.max() for c in chunks])
    logs = np.log10(np.maximum(heights, heights.max() * 1e-6 if heights.max() > 0 else 1e-300))
    low, high = logs.min(), logs.max()
    scaled = np.zeros_like(logs) if high == low else (logs - low) / (high - low)
    return "".join(SPARK[round(float(s) * (len(SPARK) - 1))] for s in scaled)


def _bound(lz: Any, idx: int) -> str:
    """A Ritz value's error bound; "unresolved" when it bounds the distance to *some* eigenvalue
    but not to the one of that rank (:attr:`LanczosResult.resolved`)."""
    bound = _fmt(lz.error_bounds[idx], 2)
    return bound if lz.resolved[idx] else f"{bound} unresolved"


def print_spectrum(result: Any, console: Console | None = None) -> None:
    """The spectrum result as a table: extremes with error bounds, trace, density summary."""
    console = console or _StdoutConsole()
    info = result.info
    _header(console, info)
    lz = result.lanczos
    table = Table(title=_curvature_title(result), title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("± bound", justify="right")
    for i, idx in enumerate(lz.top_indices(result.top_k)):
        name = "λ_max" if i == 0 else f"λ_{i + 1}"
        table.add_row(name, _fmt(lz.ritz_values[idx]), _bound(lz, idx))
    for i, idx in enumerate(lz.bottom_indices(result.bottom_k)):
        name = "λ_min" if i == 0 else f"λ_min+{i}"
        table.add_row(name, _fmt(lz.ritz_values[idx]), _bound(lz, idx))
    if result.trace_estimate is not None:
        t = result.trace_estimate
        spread = "exact" if t.method.endswith("exact") else _fmt(t.stderr, 2) + " s.e."
        table.add_row(f"trace ({t.method})", _fmt(t.estimate), spread)
    if result.exact is not None:
        ex = result.exact.eigenvalues
        table.add_row("exact λ_max", _fmt(ex[-1]), "")
        table.add_row("exact λ_min", _fmt(ex[0]), "")
        table.add_row("exact trace", _fmt(ex.sum()), "")
    console.print(table)
    if result.density_estimate is not None:
        d = result.density_estimate
        console.print(
            f"density (SLQ, log scale, {_fmt(d.grid[0], 3)} … {_fmt(d.grid[-1], 3)}, σ={_fmt(d.sigma, 3)}):"
        )
        console.print(f"  [cyan]{sparkline(d.values)}[/cyan]")
    _print_stability(console, result.stability)
    status = "converged" if lz.converged else "NOT converged (raise --max-iter)"
    blocks = [f"{lz.restarts} restart{'s' if lz.restarts > 1 else ''}"] if lz.restarts else []
    if lz.matvecs > lz.steps:
        blocks.append(f"+{lz.matvecs - lz.steps} confirming")
    extra = f" ({', '.join(blocks)})" if blocks else ""
    console.print(
        f"Lanczos {status} after {len(lz.alphas)} iterations{extra} · {info.hvp_count:,} HVPs "
        f"in {info.seconds:.2f} s · seed {info.seed}"
    )
    for key, note in result.notes.items():
        if key != "stability":
            console.print(f"[yellow]note[/yellow] ({key}): {escape(note)}")
    if result.per_layer is not None:
        _print_per_layer(console, result.per_layer)
    if result.spread is not None:
        _print_spread(console, result.spread)


def _curvature_title(result: Any) -> str:
    title = f"{curvature_name(result.curvature).title} spectrum"
    if result.params:
        size = f", {result.block_size:,} coordinates" if result.block_size else ""
        title += f" · block {escape(' '.join(result.params))}{size}"
    return title


def _print_per_layer(console: Console, rows: Any) -> None:
    table = Table(title="per layer (diagonal blocks, largest λ_max first)", title_justify="left")
    for name in ("module", "parameters", "λ_max", "± bound", "trace", "± s.e."):
        table.add_column(name, justify="left" if name == "module" else "right")
    for r in rows:
        table.add_row(
            escape(r.name), _fmt(r.size), _fmt(r.lambda_max), _fmt(r.lambda_max_error_bound, 2),
            _fmt(r.trace), "exact" if (r.trace_method or "").endswith("exact") else _fmt(r.trace_stderr, 2),
        )  # fmt: skip
    console.print(table)


def _print_spread(console: Console, spread: Any) -> None:
    table = Table(title=f"spread over {spread.k} disjoint data subsets", title_justify="left")
    for name in ("quantity", "full data", "subset mean", "subset std"):
        table.add_column(name, justify="right")
    mean, std = spread.lambda_max_mean_std
    table.add_row("λ_max", _fmt(spread.full_lambda_max), _fmt(mean), _fmt(std, 3))
    trace = spread.trace_mean_std
    if trace is not None:
        table.add_row("trace", _fmt(spread.full_trace), _fmt(trace[0]), _fmt(trace[1], 3))
    console.print(table)
    sizes = [s.num_samples for s in spread.subsets]
    console.print(
        f"subsets of {min(sizes):,}–{max(sizes):,} samples · λ_max varies by "
        f"{_fmt(100 * spread.lambda_max_cv, 3)} % (coefficient of variation)"
    )


def print_inspection(result: Any, console: Console | None = None) -> None:
    """Parameters by tensor, the data and the objective at ``w``."""
    console = console or _StdoutConsole()
    _header(console, result.info)
    table = Table(title="Trainable parameters", title_justify="left")
    table.add_column("name")
    table.add_column("shape")
    table.add_column("numel", justify="right")
    table.add_column("norm", justify="right")
    for p in result.parameters:
        table.add_row(
            escape(p["name"]),
            "×".join(map(str, p["shape"])) or "scalar",
            _fmt(p["numel"]),
            _fmt(p["norm"], 4),
        )
    console.print(table)
    data = result.data
    console.print(
        f"data: {escape(data['source'])} · {data['num_samples']:,} samples in {data['num_batches']} batch(es) of ≤{data['batch_size']}"
    )
    for key in ("x", "y"):
        if key in data:
            d = data[key]
            extra = f", {d['distinct_values']} distinct values" if "distinct_values" in d else ""
            console.print(f"  {key}: {escape(d['dtype'])} {tuple(d['shape'])}{extra}")
    if result.checkpoint_format:
        stripped = getattr(result, "checkpoint_prefix", None)
        console.print(
            f"checkpoint format: {escape(result.checkpoint_format)}"
            + (f" · prefix '{escape(stripped)}' stripped from its keys" if stripped else "")
        )
    if result.info.hvp_mode == "cached":
        console.print(f"cached gradient graph: {result.graph_megabytes:.2f} MB")
    else:
        console.print(
            "HVPs stream batch by batch (the gradient graph would exceed the memory budget)"
        )


def print_classification(result: Any, console: Console | None = None) -> None:
    """The label, its evidence sentence, and the numbers behind it."""
    console = console or _StdoutConsole()
    _header(console, result.info)
    colour = {"minimum": "green", "saddle": "yellow", "maximum": "red"}.get(
        result.classification, "cyan"
    )
    label, _, rest = result.evidence.partition(":")
    console.print(f"[bold {colour}]{escape(label)}[/bold {colour}]:{escape(rest)}")
    d = result.decision
    table = Table(title="Evidence", title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("λ_max", f"{_fmt(result.lambda_max)} ± {_fmt(result.error_max, 2)}")
    table.add_row("λ_min", f"{_fmt(result.lambda_min)} ± {_fmt(result.error_min, 2)}")
    table.add_row("‖g‖ / (κ·max(‖w‖,1))", _fmt(d.relative_gradient, 3))
    table.add_row("Cauchy step / max(‖w‖,1)", _fmt(d.relative_step, 3))
    table.add_row("negative fraction", _negative_fraction_text(result))
    if result.newton is not None and result.newton.decrement_squared is not None:
        table.add_row("Newton decrement² gᵀ(H+μI)⁻¹g", _fmt(result.newton.decrement_squared, 4))
        table.add_row("Newton step length", _fmt(result.newton.step_norm, 4))
    console.print(table)
    if result.escape is not None:
        e = result.escape
        esc = Table(
            title=f"Escape along the λ_min eigenvector (λ = {_fmt(e.eigenvalue, 4)})",
            title_justify="left",
        )
        for name in ("t", "L(w+tv)", "L(w−tv)", "model L+t·gᵀv+½λt²"):
            esc.add_column(name, justify="right")
        for t, lp, lm, mp in zip(e.steps, e.loss_plus, e.loss_minus, e.model_plus, strict=True):
            esc.add_row(_fmt(t, 3), _fmt(lp), _fmt(lm), _fmt(mp))
        console.print(esc)
    console.print(
        f"{result.info.hvp_count:,} HVPs in {result.info.seconds:.2f} s · seed {result.info.seed}"
    )
    for key, note in result.notes.items():
        if key != "stability":
            console.print(f"[yellow]note[/yellow] ({key}): {escape(note)}")


def print_sharpness(result: Any, console: Console | None = None) -> None:
    """Sharpness measures against ρ."""
    console = console or _StdoutConsole()
    _header(console, result.info)
    kind = "adaptive (ASAM) " if result.adaptive else ""
    table = Table(title=f"{kind}sharpness L(w+ε) − L(w)", title_justify="left")
    bound = "ρ‖Tg‖+½ρ²λ⁺(THT)" if result.adaptive else "ρ‖g‖+½ρ²λ⁺_max"
    columns = ("ρ", "worst case (≥)", "found by", "one-step SAM", "average case", "± s.e.")
    for name in (*columns, bound):
        table.add_column(name, justify="right")
    for i, rho in enumerate(result.rho):
        table.add_row(
            _fmt(rho, 3),
            _fmt(result.worst_case[i], 4),
            result.worst_case_method[i].replace("_", " "),
            _fmt(result.one_step[i], 4),
            _fmt(result.average_case[i], 4),
            _fmt(result.average_case_stderr[i], 2),
            _fmt(result.second_order[i], 4),
        )
    console.print(table)
    console.print(
        f"{'λ_max(T H T)' if result.adaptive else 'λ_max'} {_fmt(result.lambda_max)} · "
        f"worst case is the best point found (a lower bound) · {result.info.hvp_count:,} HVPs, "
        f"{result.gradient_evaluations:,} gradients in {result.info.seconds:.2f} s · seed {result.info.seed}"
    )
    dof = result.average_case_dof
    console.print(
        f"average case over {dof + 1} antithetic pairs: s.e. with {dof} degrees of freedom, "
        f"95 % interval ± {student_t_quantile(0.95, dof):.3g} s.e. (Student t)"
    )
    for key, note in result.notes.items():
        if key != "stability":
            console.print(f"[yellow]note[/yellow] ({key}): {escape(note)}")


def print_surface(result: Any, console: Console | None = None) -> None:
    """A 1-D surface as a table; a 2-D one as a summary and a coarse shaded map."""
    console = console or _StdoutConsole()
    _header(console, result.info)
    losses = np.asarray(result.losses, float)
    console.print(
        f"{escape(result.name)}: {result.kind} directions, {result.dims}-D, "
        f"{losses.size} points; loss at the checkpoint {_fmt(result.center_loss)}, "
        f"range {_fmt(np.nanmin(losses), 4)} … {_fmt(np.nanmax(losses), 4)}"
    )
    if result.dims == 1:
        table = Table(title="loss along the direction", title_justify="left")
        table.add_column("t", justify="right")
        table.add_column("loss", justify="right")
        if result.accuracies is not None:
            table.add_column("accuracy", justify="right")
        if result.quadratic_model is not None:
            table.add_column("quadratic model", justify="right")
        for i, t in enumerate(result.xs):
            row = [_fmt(t, 3), _fmt(losses[i])]
            if result.accuracies is not None:
                row.append(_fmt(result.accuracies[i], 3))
            if result.quadratic_model is not None:
                row.append(_fmt(np.asarray(result.quadratic_model)[i]))
            table.add_row(*row)
        console.print(table)
    else:
        low, high = np.nanmin(losses), np.nanmax(losses)
        shades = " .:-=+*#%@"
        for row in losses[::-1]:  # y increases upwards
            scaled = (row - low) / (high - low) if high > low else np.zeros_like(row)
            console.print(
                "  "
                + "".join(
                    shades[min(int(v * len(shades)), len(shades) - 1)] * 2
                    for v in np.nan_to_num(scaled, nan=1.0)
                )
            )
        console.print("  (darker = lower loss; the checkpoint is at the centre)")
    console.print(
        f"{result.info.hvp_count:,} HVPs in {result.info.seconds:.2f} s · seed {result.info.seed}"
    )
    for key, note in result.notes.items():
        console.print(f"[yellow]note[/yellow] ({key}): {escape(note)}")


def print_checks(result: Any, console: Console | None = None) -> None:
    """One row per threshold; the verdict last."""
    console = console or _StdoutConsole()
    table = Table(
        title=f"landscape check ({result.source}: {escape(result.target)})", title_justify="left"
    )
    for name in ("metric", "value", "± u", "threshold", "result"):
        table.add_column(name, justify="right" if name in ("value", "± u") else "left")
    for o in result.outcomes:
        value = escape(str(o.value)) if isinstance(o.value, str) else _fmt(o.value)
        verdict = "[green]pass[/green]" if o.passed else "[red]FAIL[/red]"
        if o.reason:
            verdict += f" ({escape(o.reason)})"
        table.add_row(
            escape(o.check.metric),
            value,
            _fmt(o.uncertainty, 2),
            escape(o.check.describe()),
            verdict,
        )
    console.print(table)
    if result.margin:
        console.print(f"margin: a check fails only beyond {result.margin:g} uncertainties")
    console.print(
        "[green]all checks passed[/green]" if result.passed else "[red]a check failed[/red]"
    )


def print_track(result: Any, console: Console | None = None) -> None:
    """One row per checkpoint, in step order."""
    console = console or _StdoutConsole()
    kind = curvature_name(getattr(result, "curvature", "hessian")).title
    block = f" · block {escape(' '.join(result.params))}" if getattr(result, "params", ()) else ""
    table = Table(title=f"curvature along the run ({kind}{block})", title_justify="left")
    adam = any(p.preconditioned_sharpness is not None for p in result.points)
    names = ["step", "λ_max", "trace", "loss", "‖∇L‖", "η·λ_max", "bound"]
    names += ["λ_max(P⁻¹H)", "Adam bound"] if adam else []
    for name in [*names, "HVPs"]:
        table.add_column(name, justify="right")
    for p in result.points:
        row = [
            str(p.step), _fmt(p.lambda_max), _fmt(p.trace), _fmt(p.loss), _fmt(p.grad_norm, 4),
            _fmt(p.lr_times_lambda_max, 4), _fmt(p.stability_threshold, 3),
        ]  # fmt: skip
        if adam:
            row += [_fmt(p.preconditioned_sharpness, 4), _fmt(p.preconditioned_threshold, 4)]
        table.add_row(*row, _fmt(p.hvp_count))
    console.print(table)
    total = sum(p.hvp_count for p in result.points)
    mode = "warm-started" if result.warm_start else "cold-started"
    console.print(
        f"{len(result.points)} checkpoints · {total:,} HVPs ({mode} Lanczos) · seed {result.seed}"
    )
    for key, note in result.notes.items():
        console.print(f"[yellow]note[/yellow] ({key}): {escape(note)}")


def print_jacobian(result: Any, console: Console | None = None) -> None:
    """Input–output singular values, per-layer σ_max (median and quantiles), the NTK spectrum."""
    console = console or _StdoutConsole()
    _header(console, result.info)
    from ..analyses.jacobian import summarize

    table = Table(
        title=f"input–output Jacobian ({result.output_dim} outputs × {result.input_dim} inputs, "
        f"{result.samples} samples)",
        title_justify="left",
    )
    columns = ("min", "q10", "median", "q90", "max")
    table.add_column("quantity")
    for name in columns:
        table.add_column(name, justify="right")
    rows = [("σ_max (Lanczos)", result.sigma_max)]
    if result.sigma_min is not None:
        rows.append(("σ_min (non-zero)", result.sigma_min))
        rows.append(("condition σ_max/σ_min", result.condition))
        rows.append(("rank", result.rank))
    for name, values in rows:
        stats = summarize(values)
        table.add_row(name, *(_fmt(None if stats is None else stats[c], 4) for c in columns))
    console.print(table)
    if result.layers:
        layers = Table(title="σ_max per layer (along the forward pass)", title_justify="left")
        for name in ("layer", "type", "in→out", "q10", "median", "q90", "log₁₀ med"):
            layers.add_column(name, justify="right" if name not in ("layer", "type") else "left")
        for layer in result.layers:
            stats = summarize(layer.sigma_max)
            median = None if stats is None else stats["median"]
            log = None if median is None or median <= 0 else math.log10(median)
            layers.add_row(
                escape(layer.name),
                escape(layer.type),
                f"{layer.input_dim}→{layer.output_dim}",
                _fmt(None if stats is None else stats["q10"], 4),
                _fmt(median, 4),
                _fmt(None if stats is None else stats["q90"], 4),
                "n/a" if log is None else f"{log:+.3f}",
            )
        console.print(layers)
    if result.ntk is not None:
        k = result.ntk
        top = ", ".join(_fmt(v, 5) for v in k.top_eigenvalues)
        console.print(
            f"NTK on {k.samples} samples ({k.outputs} × {k.outputs}): top eigenvalues {top}; "
            f"trace {_fmt(k.trace)}"
        )
    console.print(
        f"{result.jvp_count:,} JVPs + {result.vjp_count:,} VJPs (no HVPs) in "
        f"{result.info.seconds:.2f} s · seed {result.info.seed}"
    )
    for key, note in result.notes.items():
        console.print(f"[yellow]note[/yellow] ({key}): {escape(note)}")


def print_kfac(result: Any, console: Console | None = None) -> None:
    """K-FAC against the GGN: one row per covered layer, worst fit first, and the overall row."""
    console = console or _StdoutConsole()
    _header(console, result.info)
    table = Table(
        title=f"{result.settings.kind} K-FAC vs the generalised Gauss-Newton matrix "
        f"({result.settings.probes} probes)",
        title_justify="left",
        caption="rel. error ‖GGN − K‖_F / ‖GGN‖_F; tr and λ_max: K over GGN; |cos| between "
        "their top eigenvectors",
        caption_justify="left",
    )
    headers = ("layer", "type", "params", "rel. error", "± s.e.", "tr", "λ_max", "|cos|")
    for name in headers:
        table.add_column(name, justify="left" if name in ("layer", "type") else "right")

    def number(value: float, digits: int) -> str:
        return "n/a" if math.isnan(value) else _fmt(value, digits)

    for row in (*result.layers, result.overall):
        table.add_row(
            escape(row.module or "(model)"),
            escape(row.layer_type),
            f"{row.parameters:,}",
            number(row.frobenius_error, 4),
            number(row.frobenius_stderr, 2),
            number(row.trace_ratio, 4),
            number(row.lambda_max_ratio, 4),
            number(row.top_cosine, 3),
            end_section=row is result.layers[-1] if result.layers else False,
        )
    console.print(table)
    if result.uncovered:
        console.print(
            f"not covered: {result.uncovered_parameters:,} parameters "
            f"({escape(', '.join(result.uncovered))})"
        )
    p = result.preconditioned
    if p is not None:
        line = (
            f"preconditioned λ_max((K + {p.damping:g}·I)⁻¹H) = {_fmt(p.lambda_max, 6)} "
            f"± {_fmt(p.bound, 2)}"
        )
        if p.lr is not None:
            verdict = "stable" if p.lr_times_lambda_max < 2 else "beyond the bound"
            line += f" · η·λ = {_fmt(p.lr_times_lambda_max, 4)} vs 2 ({verdict})"
        console.print(line)
    console.print(
        f"{result.info.hvp_count:,} GGN and Hessian products in {result.info.seconds:.2f} s · "
        f"seed {result.info.seed}"
    )
    for key, note in result.notes.items():
        console.print(f"[yellow]note[/yellow] ({key}): {escape(note)}")


def plan_line(plan: Any) -> str:
    """One line for stderr: what the analysis is about to spend, and how long it should take.

    ``landscape: plan: 1,476 parameters · 512 samples · HVP cached (graph 2.1 MB, budget
    7.6 GB) · ≤ 203 HVPs × 1.2 ms ≈ ≤ 0.24 s``
    """
    if plan.hvp_mode == "cached":
        memory = f"graph {_bytes(plan.graph_bytes)}, budget {_bytes(plan.memory_budget)}"
    elif plan.graph_bytes is not None:
        memory = f"graph ≈ {_bytes(plan.graph_bytes)} over the {_bytes(plan.memory_budget)} budget"
    else:
        memory = "as asked"
    at_most = "≤ " if plan.upper_bound else ""
    return (
        f"landscape: plan: {plan.parameters:,} parameters · {plan.samples:,} samples · "
        f"HVP {plan.hvp_mode} ({memory}) · {at_most}{plan.hvps:,} HVPs × "
        f"{_duration(plan.seconds_per_hvp)} ≈ {at_most}{_duration(plan.seconds)}"
    )


def _bytes(count: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} B"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"

"""Configuration layering: defaults < bundled sample < YAML file < command-line flags."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..analyses.settings import SECTIONS as SETTINGS_CLASSES
from ..analyses.settings import RunConfig
from ..errors import InputError
from ..files import refuse_special_file
from ..options import OptionSpec, coerce_value, option_specs
from ..problem.loading import SAMPLE_PREFIX
from ..problem.settings import ProblemSettings
from ..safe_yaml import load_yaml

#: The top-level options of a config file, by key.
COMMON: dict[str, OptionSpec] = {spec.key: spec for spec in option_specs(ProblemSettings)}
#: Each section's options, by key: ``SECTIONS["spectrum"]["top_k"]``.
SECTIONS: dict[str, dict[str, OptionSpec]] = {
    section: {spec.key: spec for spec in option_specs(cls)}
    for section, cls in SETTINGS_CLASSES.items()
}


def _normalise_key(key: Any) -> str:
    return str(key).strip().replace("-", "_")


def _unknown_key(key: str, known: list[str], where: str) -> InputError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(sorted(known))}"
    return InputError(f"{where}: unknown key '{key}'", hint=hint)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read and validate a YAML config into flat dotted keys (``spectrum.top_k``).

    Raises :class:`InputError` for a missing or unreadable file, invalid YAML, a non-mapping
    document, an unknown key (with the closest known key) or a value of the wrong type.
    Relative paths are resolved against the file's directory.
    """

    path = Path(path)
    where = f"config {path}"
    refuse_special_file(path, where)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{where}: file not found", hint="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    document = load_yaml(text, where)
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise InputError(
            f"{where}: expected a mapping of keys to values, got {type(document).__name__}"
        )

    flat: dict[str, Any] = {}
    spelled: dict[str, str] = {}  # flat key -> how the file spells it

    def put(key: str, spelling: str, value: Any) -> None:
        """Set ``flat[key]``, refusing a second spelling of a key (``max-samples`` and
        ``max_samples``), of which one would silently win."""
        if key in spelled:
            raise InputError(
                f"{where}: '{spelled[key]}' and '{spelling}' are the same key", hint="keep one"
            )
        spelled[key] = spelling
        flat[key] = value

    known_top = list(COMMON) + list(SECTIONS)
    for raw_key, value in document.items():
        key = _normalise_key(raw_key)
        if key in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise InputError(f"{where}: section '{key}' must be a mapping of keys to values")
            for raw_sub, sub_value in value.items():
                sub = _normalise_key(raw_sub)
                if sub not in SECTIONS[key]:
                    raise _unknown_key(f"{key}.{sub}", [f"{key}.{k}" for k in SECTIONS[key]], where)
                put(
                    f"{key}.{sub}",
                    f"{raw_key}.{raw_sub}",
                    coerce_value(f"{key}.{sub}", SECTIONS[key][sub], sub_value, where),
                )
            continue
        if key == "model" and isinstance(value, Mapping):
            for raw_sub, sub_value in value.items():
                sub = _normalise_key(raw_sub)
                if sub == "spec":
                    put(
                        "model",
                        f"{raw_key}.{raw_sub}",
                        coerce_value("model.spec", COMMON["model"], sub_value, where),
                    )
                elif sub == "kwargs":
                    put(
                        "model_kwargs",
                        f"{raw_key}.{raw_sub}",
                        coerce_value("model.kwargs", COMMON["model_kwargs"], sub_value, where),
                    )
                else:
                    raise _unknown_key(f"model.{sub}", ["model.spec", "model.kwargs"], where)
            continue
        if key not in COMMON:
            raise _unknown_key(key, known_top, where)
        put(key, str(raw_key), coerce_value(key, COMMON[key], value, where))

    base = path.resolve().parent
    for key in ("checkpoint", "data", "model", "loss", "surface.to"):
        if isinstance(flat.get(key), str):
            flat[key] = resolve_relative(flat[key], base)
    return flat


def resolve_relative(spec: str, base: Path) -> str:
    """Make a relative file path (or the file part of ``file.py:callable``) absolute against ``base``.

    ``sample:NAME`` and ``package.module:callable`` specs are returned unchanged.
    """
    if spec.startswith("sample:"):
        return spec
    file_part, sep, attr = spec.rpartition(":") if spec.count(":") == 1 else (spec, "", "")
    if not sep:
        file_part = spec
    looks_like_file = "/" in file_part or "\\" in file_part or Path(file_part).suffix != ""
    if sep and not file_part.endswith(".py"):
        looks_like_file = False  # package.module:callable
    if not looks_like_file or Path(file_part).is_absolute():
        return spec
    resolved = str(base / file_part)
    return f"{resolved}:{attr}" if sep else resolved


def resolve_config(
    flags: Mapping[str, Any] | None = None,
    config_file: str | Path | None = None,
    sample_defaults: Mapping[str, Any] | None = None,
    sample_name: str | None = None,
    file_values: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Merge the layers into a :class:`RunConfig`.

    ``flags`` maps dotted keys (``"batch_size"``, ``"spectrum.top_k"``) to values, ``None`` meaning
    "not given on the command line". Later layers win: defaults, bundled sample, config file, flags.
    ``file_values`` is the already-read content of ``config_file`` (read here when omitted). A
    checkpoint ``sample:NAME`` stands for the sample's own checkpoint file.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, option in COMMON.items():
        values[key] = option.default
        sources[key] = "default"
    for section, options in SECTIONS.items():
        for key, option in options.items():
            values[f"{section}.{key}"] = option.default
            sources[f"{section}.{key}"] = "default"

    def apply(layer: Mapping[str, Any], source: str) -> None:
        for key, value in layer.items():
            if key not in values:
                raise InputError(f"{source}: unknown option '{key}'")
            values[key] = value
            sources[key] = source

    if sample_defaults:
        apply(sample_defaults, f"sample:{sample_name}")
    if config_file is not None:
        if file_values is None:
            file_values = read_config_file(config_file)
        apply(file_values, f"config:{config_file}")
    if flags:
        checked: dict[str, Any] = {}
        for key, value in flags.items():
            if value is None:
                continue
            section, _, sub = key.rpartition(".")
            option = SECTIONS[section][sub] if section else COMMON[key]
            flag = option.flag_name or "--" + sub.replace("_", "-")
            checked[key] = coerce_value(flag, option, value, "command line")
        apply(checked, "flag")

    if sample_defaults and str(values["checkpoint"]).startswith("sample:"):
        values["checkpoint"] = sample_defaults.get("checkpoint")
        sources["checkpoint"] = f"sample:{sample_name}"
    common = {key: values[key] for key in COMMON}
    if common["model_kwargs"] is None:
        common["model_kwargs"] = {}
    sections = {
        name: SETTINGS_CLASSES[name](**{k: values[f"{name}.{k}"] for k in options})
        for name, options in SECTIONS.items()
    }
    for name, settings in sections.items():
        resolved = getattr(settings, "resolved", None)  # options implying others (lambda_max)
        if resolved is not None:
            given = {k for k in SECTIONS[name] if sources[f"{name}.{k}"] != "default"}
            sections[name] = resolved(given)
    return RunConfig(
        **common,
        **sections,
        sources=sources,
        config_file=None if config_file is None else str(config_file),
    )


def resolve_sample(checkpoint: str | None, model: str | None) -> str | None:
    """Name of the bundled sample a run refers to: ``sample:NAME``, or the default when no
    checkpoint and no model is given; ``None`` for a user checkpoint."""
    if checkpoint is not None and checkpoint.startswith(SAMPLE_PREFIX):
        return checkpoint[len(SAMPLE_PREFIX) :]
    if checkpoint is None and model is None:
        from .. import sample_models

        return sample_models.DEFAULT_SAMPLE
    return None


def sample_defaults(name: str) -> dict[str, Any]:
    """The configuration layer of bundled sample ``name`` (model, kwargs, checkpoint, data, loss)."""
    from .. import sample_models

    try:
        sample = sample_models.get_sample(name)
    except ValueError as exc:
        raise InputError(f"checkpoint 'sample:{name}': {exc}") from None
    return {
        "checkpoint": None if sample.checkpoint is None else str(sample.checkpoint),
        "model": sample.model,
        "model_kwargs": dict(sample.model_kwargs),
        "data": sample.data,
        "loss": sample.loss,
    }


def resolve_run_config(
    flags: Mapping[str, Any], config_file: str | Path | None = None
) -> RunConfig:
    """The :class:`RunConfig` of a run: flags over the config file over the bundled sample (when
    the checkpoint is ``sample:NAME``, or when neither a checkpoint nor a model is named) over the
    defaults."""
    from .config import read_config_file, resolve_config

    file_values = read_config_file(config_file) if config_file is not None else {}
    checkpoint = flags.get("checkpoint") or file_values.get("checkpoint")
    model = flags.get("model") or file_values.get("model")
    sample = resolve_sample(checkpoint, model)
    layer = sample_defaults(sample) if sample is not None else None
    return resolve_config(flags, config_file, layer, sample, file_values=file_values)


REFERENCE_HEADER = """\
# Reference configuration of `landscape`: every key with its default (generated from the
# settings: python -m landscape_cli.io.config > configs/reference.yaml).
# Use it with `landscape COMMAND --config FILE`; flags on the command line override the file.
# Keys may be written with underscores or dashes. Relative paths are resolved against the
# directory of this file. An unknown key is an error (exit code 2) naming the closest known key.
# `model` may also be a mapping {spec: ..., kwargs: {...}}.
"""


def reference_yaml(sections: Mapping[str, type] | None = None, width: int = 100) -> str:
    """``configs/reference.yaml``: every key of a config file with its default and help, from
    the settings' fields (a test checks the committed file equals this); ``sections`` defaults to
    every analysis's settings."""
    import textwrap

    import yaml

    def value(v: Any) -> str:
        v = list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, Mapping) else v)
        return (
            yaml.safe_dump(v, default_flow_style=True, width=1000)
            .strip()
            .removesuffix("...")
            .strip()
        )

    def entries(specs: Mapping[str, OptionSpec], indent: str) -> list[str]:
        lines = []
        for key, spec in specs.items():
            head = f"{indent}{key}: {value(spec.default)}"
            column = max(len(head) + 2, 24)
            help = spec.help
            if spec.meta.choices is not None:
                help += f" One of: {', '.join(spec.meta.choices)}."
            if spec.default is None and spec.meta.default_text is not None:
                help += f" null: {spec.meta.default_text}."
            wrapped = textwrap.wrap(help, width - column - 2, break_on_hyphens=False) or [""]
            lines.append(f"{head.ljust(column)}# {wrapped[0]}")
            lines.extend(f"{' ' * column}# {more}" for more in wrapped[1:])
        return lines

    def rule(title: str) -> str:
        return f"# --- {title} ".ljust(width - 1, "-")

    out = [REFERENCE_HEADER, rule(_first_line(ProblemSettings)), *entries(COMMON, "")]
    for section, settings in (SETTINGS_CLASSES if sections is None else sections).items():
        specs = {spec.key: spec for spec in option_specs(settings)}
        out += ["", rule(_first_line(settings)), f"{section}:", *entries(specs, "  ")]
    return "\n".join(out) + "\n"


def _first_line(settings: type) -> str:
    return (
        (settings.__doc__ or settings.__name__)
        .strip()
        .splitlines()[0]
        .rstrip(".")
        .replace("``", "`")
    )


if __name__ == "__main__":
    import sys

    sys.stdout.write(reference_yaml())

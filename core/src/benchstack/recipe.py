"""Recipes: YAML -> attrs through cattrs, with every error one line naming its path.

A recipe has core keys (``name``, ``backend``, ``scheduler``, ``load``, ``model``, ``sweep``, ...)
and one section per plugin, named like the plugin's backend/scheduler/load generator, structured
into that plugin's own ``options_type`` before anything starts.
"""

from __future__ import annotations

import copy
import datetime as _dt
import re
from pathlib import Path
from typing import Any, Iterable

import attrs
import cattrs
import yaml
from attrs import field, frozen, validators as v
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from .errors import RecipeError
from .records import LoadPoint, ModelSpec, RunSpec, ValidityGates

# --------------------------------------------------------------------------- converter


def _strict_int(value: Any, _type: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _strict_float(value: Any, _type: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _strict_str(value: Any, _type: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _strict_bool(value: Any, _type: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def make_converter() -> cattrs.Converter:
    """The converter every recipe section goes through: strict scalars, unknown keys rejected."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(Path, lambda value, _t: Path(_strict_str(value, _t)))
    return conv


CONVERTER = make_converter()


def _format_exception(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        known = sorted(a.name for a in attrs.fields(exc.cl)) if attrs.has(exc.cl) else []
        extra = ", ".join(repr(k) for k in sorted(exc.extra_fields))
        hint = f" (known keys: {', '.join(known)})" if known else ""
        return f"unknown key {extra}{hint}"
    if isinstance(exc, KeyError):
        return "required key missing"
    if isinstance(exc, (ValueError, TypeError)) and exc.args and isinstance(exc.args[0], str):
        # attrs validators raise ValueError(msg, attribute, ...) with msg like
        # "'workers' must be >= 1: 0"; keep their own words (cattrs' default drops them)
        return exc.args[0]
    return cattrs.v.format_exception(exc, type_)


def structure(data: Any, cls: type, path: str) -> Any:
    """Structure ``data`` into ``cls``; errors become a :class:`RecipeError`, one line each."""
    if data is None:
        data = {}
    try:
        return CONVERTER.structure(data, cls)
    except (ClassValidationError, IterableValidationError) as exc:
        lines = cattrs.transform_error(exc, path=path, format_exception=_format_exception)
        raise RecipeError(lines) from None
    except ForbiddenExtraKeysError as exc:
        raise RecipeError(f"{_format_exception(exc, cls)} @ {path}") from None
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{_format_exception(exc, cls)} @ {path}") from None


# --------------------------------------------------------------------------- helpers for sections


def fraction(inst, attribute, value):
    """attrs validator for an optional fraction in (0, 1] (e.g. a KV-cache memory fraction)."""
    if value is not None and not (0 < value <= 1):
        raise ValueError(f"'{attribute.name}' must be in (0, 1]: {value}")


def deep_merge(base: dict, extra: dict) -> dict:
    """``base`` with ``extra`` merged in, nested mappings merged key by key (extra wins)."""
    out = dict(base)
    for k, val in extra.items():
        out[k] = deep_merge(out[k], val) if isinstance(val, dict) and isinstance(out.get(k), dict) else val
    return out


# --------------------------------------------------------------------------- core sections

_pos_int = [v.instance_of(int), v.ge(1)]


def _positive_list(inst, attribute, value):
    if value is None:
        return
    if not value:
        raise ValueError(f"'{attribute.name}' must not be empty")
    for item in value:
        if item <= 0:
            raise ValueError(f"'{attribute.name}' must hold values > 0: {item}")


@frozen(kw_only=True)
class ModelSection:
    name: str
    path: str
    tokenizer: str | None = None
    create: str | None = field(default=None, validator=v.optional(v.in_(["tiny"])))


@frozen(kw_only=True)
class SweepSection:
    """The load points: concurrency or request rate (one of them), ISL/OSL, request counts."""

    concurrency: list[int] | None = field(default=None, validator=_positive_list)
    request_rate: list[float] | None = field(default=None, validator=_positive_list)
    scenarios: list[str] | None = None
    isl: int = field(default=128, validator=_pos_int)
    osl: int = field(default=64, validator=_pos_int)
    num_requests: int | None = field(default=None, validator=v.optional(_pos_int))
    requests_per_concurrency: int | None = field(default=None, validator=v.optional(_pos_int))
    min_requests: int = field(default=16, validator=_pos_int)
    duration_s: float | None = field(default=None, validator=v.optional(v.gt(0)))
    warmup_requests: int = field(default=0, validator=v.ge(0))

    def __attrs_post_init__(self):
        if self.concurrency is not None and self.request_rate is not None:
            raise ValueError("give either 'concurrency' or 'request_rate', not both")


@frozen(kw_only=True)
class DeploymentVariant:
    """One deployment of a recipe that sweeps deployments: a name and ``--set``-style overrides."""

    name: str = field(validator=v.matches_re(r"^[A-Za-z0-9_.-]+$"))
    set: dict[str, Any] = field(factory=dict)


@frozen(kw_only=True)
class CoreRecipe:
    """The keys of a recipe that belong to core; every other top-level key is a plugin section."""

    name: str = field(validator=v.matches_re(r"^[A-Za-z0-9_.-]+$"))
    backend: str
    scheduler: str = "local"
    load: str = "aiperf"
    model: ModelSection
    sweep: SweepSection = field(factory=SweepSection)
    output_dir: str = "runs"
    ready_timeout_s: float = field(default=600.0, validator=v.gt(0))
    stop_grace_s: float = field(default=10.0, validator=v.ge(0))
    validity: ValidityGates = field(factory=ValidityGates)
    deployments: list[DeploymentVariant] = field(factory=list)


CORE_KEYS = frozenset(a.name for a in attrs.fields(CoreRecipe))


# --------------------------------------------------------------------------- loading


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a recipe file; YAML syntax errors name the file, line and column."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise RecipeError(f"cannot read recipe: {exc.strerror}", source=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"not valid YAML{where}: {problem}", source=str(path)) from None
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a YAML mapping at the top level", source=str(path))
    return data


_SET_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)=(.*)$", re.S)


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a copy of ``data``."""
    data = copy.deepcopy(data)
    for item in overrides:
        m = _SET_RE.match(item)
        if not m:
            raise RecipeError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. sweep.concurrency=[1,2]")
        key, raw = m.groups()
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        set_path(data, key, value, origin=f"--set {item}")
    return data


def _with_values(data: dict[str, Any], values: dict[str, Any], variant: str) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for key, value in values.items():
        set_path(data, key, value, origin=f"deployment {variant!r}")
    data.pop("deployments", None)
    return data


def set_path(data: dict[str, Any], key: str, value: Any, origin: str) -> None:
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = _list_item(node, part, where, origin)
            continue
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, (dict, list)):
            raise RecipeError(f"{origin}: 'recipe.{where}' is a {type(nxt).__name__}, not a section")
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        idx = _index(node, last, key, origin)
        node[idx] = value
    else:
        node[last] = value


def _index(node: list, part: str, where: str, origin: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise RecipeError(f"{origin}: 'recipe.{where}' has no item {part} (list of {len(node)})")
    return int(part)


def _list_item(node: list, part: str, where: str, origin: str) -> Any:
    return node[_index(node, part, where, origin)]


def expand_points(sweep: SweepSection) -> list[LoadPoint]:
    """The load points of a sweep, in order."""
    if sweep.concurrency is not None:
        axis = [("concurrency", c) for c in sweep.concurrency]
    elif sweep.request_rate is not None:
        axis = [("request_rate", r) for r in sweep.request_rate]
    else:
        axis = [(None, None)]
    scenarios = sweep.scenarios or [None]
    points = []
    for scenario in scenarios:
        for kind, value in axis:
            n = sweep.num_requests
            if n is None and sweep.requests_per_concurrency and kind == "concurrency":
                n = max(sweep.min_requests, sweep.requests_per_concurrency * value)
            if n is None and sweep.duration_s is None:
                n = max(sweep.min_requests, 8 * value) if kind == "concurrency" else sweep.min_requests * 4
            kw = {kind: value} if kind else {}
            points.append(
                LoadPoint(
                    index=len(points),
                    isl=sweep.isl,
                    osl=sweep.osl,
                    num_requests=n,
                    duration_s=sweep.duration_s,
                    warmup_requests=sweep.warmup_requests,
                    scenario=scenario,
                    **kw,
                )
            )
    return points


def load_specs(
    data: dict[str, Any],
    manager,
    *,
    recipe_path: Path | None = None,
    overrides: Iterable[str] = (),
    backend: str | None = None,
    scheduler: str | None = None,
    load: str | None = None,
    run_dir: Path | None = None,
    allow_invalid: bool = False,
    now: _dt.datetime | None = None,
) -> list[RunSpec]:
    """Validate a recipe and return one :class:`RunSpec` per deployment.

    Every error (core keys, every plugin section, every deployment variant) is collected and
    raised together as one :class:`RecipeError`, one line each.
    """
    source = str(recipe_path) if recipe_path else None
    data = apply_overrides(data, overrides)
    for key, value in (("backend", backend), ("scheduler", scheduler), ("load", load)):
        if value:
            data[key] = value
    variants = data.get("deployments") or []
    bases = [(None, data)]
    if variants:
        core = _structure_core(data, source)
        bases = [(var.name, _with_values(data, var.set, var.name)) for var in core.deployments]
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    specs = []
    for variant, d in bases:
        core, options = _structure_all(d, manager, source)
        base_dir = Path(run_dir) if run_dir else Path(core.output_dir) / f"{core.name}-{stamp}"
        spec = RunSpec(
            name=core.name,
            backend=core.backend,
            scheduler=core.scheduler,
            load=core.load,
            model=_model_spec(core.model),
            points=expand_points(core.sweep),
            run_dir=base_dir if variant is None else base_dir / variant,
            options=options,
            ready_timeout_s=core.ready_timeout_s,
            stop_grace_s=core.stop_grace_s,
            allow_invalid=allow_invalid,
            validity=core.validity,
            deployment=variant or "default",
            recipe_path=recipe_path,
            raw=d,
        )
        problems = [p for lines in manager.hook.bench_validate(spec=spec) if lines for p in lines]
        if problems:
            raise RecipeError(problems, source=source)
        specs.append(spec)
    return specs


def _model_spec(m: ModelSection) -> ModelSpec:
    """Local model paths become absolute (servers may run from another directory); hub ids stay."""

    def local(p: str | None) -> str | None:
        if p is None:
            return None
        if p.startswith((".", "/", "~")) or Path(p).exists():
            return str(Path(p).expanduser().resolve())
        return p

    path = local(m.path) if (m.create or not m.path.count("/") == 1 or Path(m.path).exists()) else m.path
    return ModelSpec(name=m.name, path=path, tokenizer=local(m.tokenizer), create=m.create)


def _structure_core(data: dict[str, Any], source: str | None) -> CoreRecipe:
    core_data = {k: v for k, v in data.items() if k in CORE_KEYS}
    try:
        return structure(core_data, CoreRecipe, "recipe")
    except RecipeError as exc:
        raise RecipeError(exc.lines, source=source) from None


def _structure_all(data: dict[str, Any], manager, source) -> tuple[CoreRecipe, dict[str, Any]]:
    """Core keys and every plugin section, all errors collected into one RecipeError."""
    lines: list[str] = []
    core = None
    try:
        core = _structure_core(data, source)
    except RecipeError as exc:
        lines.extend(exc.lines)
    selected = {k: data.get(k, d) for k, d in (("backend", None), ("scheduler", "local"), ("load", "aiperf"))}
    if core is not None:
        selected = {"backend": core.backend, "scheduler": core.scheduler, "load": core.load}
    try:
        options = _structure_plugin_sections(data, selected, manager)
    except RecipeError as exc:
        lines.extend(exc.lines)
    if lines:
        raise RecipeError(lines, source=source)
    return core, options


def _structure_plugin_sections(data, selected: dict[str, Any], manager) -> dict[str, Any]:
    infos = manager.infos()
    lines: list[str] = []
    for kind, name in selected.items():
        if not isinstance(name, str):
            continue
        try:
            manager.info(kind, name)
        except Exception as exc:
            lines.append(f"{exc} @ recipe.{kind}")
    sections: dict[str, Any] = {}
    for kind in ("backend", "scheduler", "load"):
        for name, info in infos[kind].items():
            sections[name] = info
    options: dict[str, Any] = {}
    for key, value in data.items():
        if key in CORE_KEYS:
            continue
        if key not in sections:
            lines.append(
                f"unknown key {key!r} @ recipe (core keys: {', '.join(sorted(CORE_KEYS))}; "
                f"plugin sections: {', '.join(sorted(sections)) or 'none'})"
            )
            continue
    for name, info in sections.items():
        if info.options_type is None:
            if data.get(name):
                lines.append(f"plugin {name!r} takes no options @ recipe.{name}")
            continue
        if name not in data and name not in selected.values():
            continue
        try:
            options[name] = structure(data.get(name) or {}, info.options_type, f"recipe.{name}")
        except RecipeError as exc:
            lines.extend(exc.lines)
    if lines:
        raise RecipeError(lines)
    return options


def dump_resolved(spec: RunSpec) -> str:
    """The recipe as it ran (overrides applied), for ``resolved.yaml``."""
    return yaml.safe_dump(dict(spec.raw), sort_keys=False)

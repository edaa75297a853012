"""What a method is to the runtime: a :class:`Method` registration, looked up by the mode a settings file names.

A method (NAIR, VP, ...) lives in its own package above the runtime and declares itself as one :class:`Method`: its
name, the sensor modes it serves, the birth sections and topic leaves its sensors publish, its fusion mode, its service
runners and the checks it adds to a sensor's settings. What it names of the wire must be in :mod:`nairbus.schemas`
(a new method adds its birth section and topic leaf there): the registry refuses a method the wire does not know.
The registry that holds them is :data:`nairbus.agents.methods.METHODS`; the CLI looks a method up there and never
branches on a mode itself (sc2bench's ``register_wrapper_class`` / ``wrap_model(name)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from nairbus.agents.runtime.config import AgentConfig, SensorSettings
from nairbus.schemas import Birth
from nairbus.schemas.topics import SensorLeaf

__all__ = ["Method", "MethodRegistry", "MethodSettings", "UnknownMethodError", "method_settings", "wire_unknowns"]


class MethodSettings(BaseModel):
    """The base of every method's own sensor settings (a sensor's ``method_options``, checked by the model its method
    registers): frozen, and an option the method does not take is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    needs: ClassVar[dict[str, str]] = {}
    """For a required option, what the error says the mode needs when it is missing (e.g. ``"a variant (e.g.
    --variant w44r28)"``); an option not named here is reported by its name."""


M = TypeVar("M", bound=MethodSettings)


def _no_checks(_settings: SensorSettings) -> None:
    """A method that adds no checks to a sensor's settings."""


@dataclass(frozen=True, slots=True)
class Method:
    """One registered method: how its agents run as services, and what its sensor settings must hold."""

    name: str
    """The method's name (``nair``, ``vp``, ...): the fusion mode that runs it."""
    summary: str
    """One line for ``--help`` and error messages."""
    sensor_modes: tuple[str, ...]
    """The ``sensor.mode`` values this method's sensor agent runs (NAIR's: ``nair``, ``image``, ``auto``)."""
    run_sensor: Callable[[AgentConfig], dict[str, int]]
    """Run a sensor agent as a service until its frames end or a signal stops it; its counters."""
    run_fusion: Callable[[AgentConfig], None]
    """Run a fusion agent as a service until a signal stops it."""
    settings: type[MethodSettings] = MethodSettings
    """The model of its sensor's own options (``SensorSettings.method_options``); the base takes none."""
    check_sensor: Callable[[SensorSettings], None] = field(default=_no_checks)
    """Raise ``ValueError`` (the message names the flag to set) for sensor settings this method cannot run; called
    after the sensor's ``method_options`` passed :attr:`settings`."""
    birth_sections: tuple[str, ...] = ()
    """The :class:`~nairbus.schemas.Birth` sections its sensors fill (NAIR's: ``nair``, ``image``, ``decision``); a
    method that publishes no birth names none."""
    data_leaves: tuple[SensorLeaf, ...] = ()
    """The sensor topic leaves its frames arrive on, besides the ``birth``, ``status`` and ``item`` every sensor
    has (NAIR's: ``frag``, ``image``, ``topk``): what its fusion agent subscribes to."""


def wire_unknowns(method: Method) -> list[str]:
    """What ``method`` names that :mod:`nairbus.schemas` lacks: a topic leaf, a birth section, or (for a method whose
    sensors publish a birth) a sensor mode that is not a birth ``mode``."""
    leaves = set(get_args(SensorLeaf))
    sections = {name for name, info in Birth.model_fields.items()  # the optional sub-messages: nair, vp, ...
                if info.default is None and any(isinstance(a, type) and issubclass(a, BaseModel)
                                                for a in get_args(info.annotation))}
    modes = set(get_args(Birth.model_fields["mode"].annotation))
    problems = [f"topic leaf {leaf!r}" for leaf in method.data_leaves if leaf not in leaves]
    problems += [f"birth section {name!r}" for name in method.birth_sections if name not in sections]
    if method.birth_sections:
        problems += [f"birth mode {mode!r}" for mode in method.sensor_modes if mode not in modes]
    return problems


class UnknownMethodError(ValueError):
    """A mode that no registered method serves; the message lists the ones that are."""


class MethodRegistry:
    """Methods by name, and the method serving each sensor mode."""

    def __init__(self, *methods: Method) -> None:
        self._methods: dict[str, Method] = {}
        for method in methods:
            self.register(method)

    def register(self, method: Method) -> Method:
        """Add ``method``; a name or sensor mode that is taken already, or a birth section, birth mode or topic leaf
        the wire (:mod:`nairbus.schemas`) does not know, is refused."""
        taken = {mode for m in self._methods.values() for mode in m.sensor_modes}
        if method.name in self._methods or taken & set(method.sensor_modes):
            raise ValueError(f"method {method.name!r} or one of its sensor modes {method.sensor_modes} is taken")
        unknown = wire_unknowns(method)
        if unknown:
            raise ValueError(f"method {method.name!r} names what the wire does not know: {'; '.join(unknown)} "
                             "(add it to nairbus.schemas first)")
        self._methods[method.name] = method
        return method

    def unregister(self, name: str) -> None:
        """Remove the method ``name`` (tests that register a toy method clean up with this)."""
        self._methods.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """Every registered method's name."""
        return tuple(self._methods)

    def sensor_modes(self) -> tuple[str, ...]:
        """Every sensor mode some registered method serves."""
        return tuple(mode for m in self._methods.values() for mode in m.sensor_modes)

    def for_fusion(self, mode: str) -> Method:
        """The method a fusion agent of ``mode`` runs."""
        try:
            return self._methods[mode]
        except KeyError:
            raise UnknownMethodError(f"unknown fusion mode {mode!r}; registered: {', '.join(self.names())}") from None

    def for_sensor(self, settings: SensorSettings) -> Method:
        """The method whose sensor runs ``settings.mode``, after its checks of the settings passed."""
        method = next((m for m in self._methods.values() if settings.mode in m.sensor_modes), None)
        if method is None:
            raise UnknownMethodError(f"unknown sensor mode {settings.mode!r}; registered: "
                                     f"{', '.join(self.sensor_modes())}")
        method_settings(method.settings, settings)
        method.check_sensor(settings)
        return method


def _problem(model: type[MethodSettings], error: Any) -> str:
    """One validation error of a method's options, in words that name the option."""
    name = ".".join(str(part) for part in error["loc"])
    if not name:
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if error["type"] == "missing":
        return f"needs {model.needs.get(name, f'the option {name!r}')}"
    if error["type"] == "extra_forbidden":
        return f"takes no option {name!r} (its options: {', '.join(model.model_fields) or 'none'})"
    return f"option {name!r}: {error['msg']}"


def method_settings(model: type[M], settings: SensorSettings) -> M:
    """A sensor's ``method_options`` checked with its method's ``model``; a ``ValueError`` naming the mode and the
    option for an unknown option, a missing or a bad one."""
    try:
        return model.model_validate(settings.method_options)
    except ValidationError as exc:
        problems = "; ".join(_problem(model, error) for error in exc.errors())
        raise ValueError(f"mode {settings.mode!r} {problems}") from None

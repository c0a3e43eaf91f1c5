"""onnxruntime execution providers: which to ask for, with which options, and what we got.

The default order is TensorRT, CUDA, CPU, filtered by what the installed onnxruntime offers.
`onnxruntime-gpu` lists TensorRT and CUDA even on machines where they cannot start (no GPU,
no TensorRT libraries), so sessions are created with `create_session`, which falls back along
the list for the default order and reports the providers actually in use. Providers asked for
explicitly must start, or the session fails with an error naming them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import onnxruntime as ort

LOGGER = logging.getLogger("defvos")

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEFAULT_ORDER = (TENSORRT, CUDA, CPU)
ALIASES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}


class ProviderError(RuntimeError):
    """A requested execution provider is not available or could not start."""


def canonical_name(name: str) -> str:
    """'tensorrt' / 'trt' / 'cuda' / 'cpu' (any case) or a full provider name -> full name."""
    name = name.strip()
    return ALIASES.get(name.lower(), name)


def parse_providers(requested: str | Sequence[str] | None) -> list[str] | None:
    """None / '' -> None (the default order); 'tensorrt,cuda' or a list -> full names."""
    if requested is None:
        return None
    items = requested.split(",") if isinstance(requested, str) else list(requested)
    names = [canonical_name(str(item)) for item in items if str(item).strip()]
    return names or None


def available_providers() -> list[str]:
    """Return the providers the installed onnxruntime offers (not proof that they can start)."""
    return list(ort.get_available_providers())


def select_providers(requested: str | Sequence[str] | None = None,
                     available: Sequence[str] | None = None) -> list[str]:
    """Return the provider names to try, in order.

    requested None: the default order (TensorRT, CUDA, CPU) filtered by `available`.
    Otherwise every requested provider must be available, or a `ProviderError` names it and
    lists the available ones.
    """
    available = list(available_providers() if available is None else available)
    names = parse_providers(requested)
    if names is None:
        selected = [name for name in DEFAULT_ORDER if name in available]
        if not selected:
            raise ProviderError(f"none of the default execution providers {list(DEFAULT_ORDER)} "
                                f"is available (available: {', '.join(available) or 'none'})")
        return selected
    missing = [name for name in names if name not in available]
    if missing:
        hint = ""
        if any(name in (TENSORRT, CUDA) for name in missing):
            hint = ("; GPU providers need onnxruntime-gpu (pip install '.[gpu]', or the Jetson Zoo "
                    "build on Jetson) instead of onnxruntime")
        raise ProviderError(f"execution provider(s) {', '.join(missing)} requested but not "
                            f"available in onnxruntime {ort.__version__} (available: "
                            f"{', '.join(available) or 'none'}){hint}")
    return list(dict.fromkeys(names))


def provider_options(name: str, trt_fp16: bool = False,
                     trt_engine_cache: str | Path | None = None,
                     trt_profiles: dict[str, str] | None = None) -> dict[str, object]:
    """Options of one provider. TensorRT: fp16, engine cache, explicit shape profiles."""
    if name != TENSORRT:
        return {}
    options: dict[str, object] = {"trt_fp16_enable": bool(trt_fp16)}
    if trt_engine_cache:
        Path(trt_engine_cache).mkdir(parents=True, exist_ok=True)
        options["trt_engine_cache_enable"] = True
        options["trt_engine_cache_path"] = str(trt_engine_cache)
    if trt_profiles:
        options.update(trt_profiles)
    return options


def profile_option(shapes: dict[str, Sequence[int]]) -> str:
    """{'mask': (1, 11, 60, 108)} -> 'mask:1x11x60x108' (TensorRT EP profile syntax)."""
    return ",".join(f"{name}:{'x'.join(str(int(d)) for d in shape)}"
                    for name, shape in shapes.items())


def create_session(path: str | Path, providers: Sequence[str], strict: bool,
                   trt_fp16: bool = False, trt_engine_cache: str | Path | None = None,
                   trt_profiles: dict[str, str] | None = None,
                   session_options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    """Create an InferenceSession on the first providers of `providers` that start.

    strict (providers requested explicitly): every one must start, else `ProviderError`.
    Not strict (default order): a provider that fails to start is dropped with a warning and
    the rest are tried. Logs the providers in use.
    """
    providers = list(providers)
    attempts = [providers] if strict else [providers[i:] for i in range(len(providers))]
    errors = []
    session = None
    for attempt in attempts:
        entries = [(name, provider_options(name, trt_fp16, trt_engine_cache, trt_profiles))
                   for name in attempt]
        try:
            # enable_fallback=0: we fall back ourselves, with logging instead of prints.
            session = ort.InferenceSession(str(path), session_options, providers=entries,
                                           enable_fallback=0)
            break
        except (RuntimeError, ValueError) as error:  # onnxruntime raises its own subclasses
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            errors.append(f"{attempt[0]}: {reason}")
            if not strict:
                LOGGER.warning("onnxruntime: %s could not start for %s (%s); trying %s",
                               attempt[0], Path(path).name, reason,
                               ", ".join(attempt[1:]) or "nothing else")
    if session is None:
        raise ProviderError(f"could not create an onnxruntime session for {path} with "
                            f"providers {providers}: {'; '.join(errors)}")
    in_use = session.get_providers()
    not_started = [name for name in providers if name not in in_use]
    if strict and not_started:
        raise ProviderError(f"execution provider(s) {', '.join(not_started)} requested for {path} "
                            f"but could not start (session runs on {', '.join(in_use)}); check "
                            "the CUDA / cuDNN / TensorRT libraries and the GPU")
    dropped = [name for name in attempt if name not in in_use]  # onnxruntime dropped silently
    if dropped:
        LOGGER.warning("onnxruntime: %s listed as available but did not start for %s",
                       ", ".join(dropped), Path(path).name)
    LOGGER.info("onnxruntime %s: %s runs on %s", ort.__version__, Path(path).name,
                ", ".join(in_use))
    return session

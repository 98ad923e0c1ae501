"""Safe (``weights_only=True``) checkpoint loading for the OpenMMLab stack.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``: it only
rebuilds tensors, plain containers and an allow-list of globals. mmengine
0.10.7 calls ``torch.load(filename, map_location=...)`` without
``weights_only`` (``mmengine.runner.checkpoint.load_from_local``, used by
``Runner.resume``, ``Runner.load_checkpoint``, ``load_checkpoint`` and
``tools/test.py``), so its own checkpoints are refused: they carry
``HistoryBuffer`` objects, numpy arrays and numpy scalars in ``message_hub``.

:func:`register_safe_globals` (run when :mod:`ailurus_mm.utils` is imported)
adds exactly what those checkpoints need to torch's allow-list, so the
ordinary mmengine code paths work unchanged and stay on the safe unpickler.
Everything else is still refused by ``torch.load``. To load a checkpoint you
trust that contains something else, opt in explicitly, either with the
environment variable ``AILURUS_TRUSTED_GLOBALS`` (read by
:func:`register_safe_globals`) or with :func:`allow_checkpoint_globals`.
:func:`load_checkpoint_safely` and :func:`explain_unsafe_load` turn torch's
refusal into an error that names the offending object and the opt-in.

Nothing here sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``, passes
``weights_only=False`` or replaces/monkeypatches ``torch.load``.
"""

import importlib
import os
import os.path as osp
import pickle
import re
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

#: Environment variable holding extra trusted globals, as comma-separated
#: dotted names (``"package.module.Class,package.module.func"``).
TRUSTED_GLOBALS_ENV = 'AILURUS_TRUSTED_GLOBALS'

# An allow-list entry as torch.serialization.add_safe_globals takes it: the
# object itself (looked up under ``f'{obj.__module__}.{obj.__qualname__}'``)
# or ``(obj, 'dotted.name.in.the.pickle')`` when the pickle names it otherwise.
SafeGlobal = Union[Callable, Tuple[Callable, str]]

# The four statistics that HistoryBuffer always registers on itself
# (HistoryBuffer._set_default_statistics). HistoryBuffer.__getstate__ pickles
# them as ``getattr(HistoryBuffer, 'min')`` etc. because, with torch.save's
# pickle protocol 2, a function whose qualname is nested in a class is
# written as a call to ``builtins.getattr``.
_HISTORY_BUFFER_METHODS = frozenset({'min', 'max', 'current', 'mean'})

# Globals that must never be allow-listed through our opt-in even when a user
# asks for it: each one turns the restricted unpickler into an arbitrary code
# runner for every later checkpoint in the process. A checkpoint needing these
# can only be loaded with torch.load(weights_only=False) on a trusted file.
_NEVER_ALLOW = frozenset(
    {
        'builtins.getattr',
        'builtins.setattr',
        'builtins.delattr',
        'builtins.eval',
        'builtins.exec',
        'builtins.compile',
        'builtins.open',
        'builtins.__import__',
        'builtins.globals',
        'builtins.locals',
        'builtins.vars',
        'builtins.input',
        'builtins.breakpoint',
        'importlib.import_module',
        'subprocess.Popen',
        'subprocess.run',
        'subprocess.call',
        'subprocess.check_call',
        'subprocess.check_output',
    }
)
# torch itself refuses every global from these modules, allow-listed or not
# (torch._weights_only_unpickler._blocklisted_modules).
_TORCH_BLOCKED_MODULES = frozenset({'sys', 'os', 'posix', 'nt'})

_OPT_IN_HELP = (
    'If you trust this checkpoint, opt in before loading it: set the '
    f'environment variable {TRUSTED_GLOBALS_ENV}="{{names}}" (comma-separated '
    'dotted names, read when ailurus_mm is imported) or call '
    'ailurus_mm.utils.allow_checkpoint_globals({quoted}). Only do this for '
    'files from a trusted source: unpickling an arbitrary global can run '
    'arbitrary code. '
)


class UnsafeCheckpointError(RuntimeError, pickle.UnpicklingError):
    """A checkpoint was refused by ``torch.load(weights_only=True)``.

    Subclasses both :class:`RuntimeError` and :class:`pickle.UnpicklingError`
    so that code already catching torch's ``UnpicklingError`` keeps working.

    Attributes:
        offending (list[str]): Dotted names of the objects that were refused
            (the first one is what torch stopped at).
        path (str | None): The checkpoint file, when known.
    """

    def __init__(self, message: str, offending: List[str], path: Optional[str] = None) -> None:
        super().__init__(message)
        self.offending = offending
        self.path = path


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` inside weights-only unpickling.

    Allow-listing the real ``getattr`` would let a malicious pickle walk from
    any allowed class to ``__init__.__globals__`` and from there to
    ``__builtins__``; this stand-in only resolves the attribute lookups that
    mmengine checkpoints contain, i.e. the default ``HistoryBuffer``
    statistics methods.

    Args:
        obj (Any): The object the pickle wants an attribute of.
        name (str): The attribute name.

    Returns:
        Any: ``getattr(obj, name)`` for an allowed ``(obj, name)`` pair.

    Raises:
        pickle.UnpicklingError: For any other pair, naming it.
    """
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'Refused attribute lookup getattr({_dotted_name(obj)}, {name!r}): '
        'ailurus_mm only allows getattr(HistoryBuffer, m) for m in '
        f'{sorted(_HISTORY_BUFFER_METHODS)} while unpickling with '
        'weights_only=True.'
    )


def _numpy_multiarray() -> Tuple[Any, List[str]]:
    """Return numpy's multiarray module and every name pickles use for it.

    numpy 2 writes ``numpy._core.multiarray``; checkpoints saved with numpy 1
    (e.g. most published OpenMMLab checkpoints) name ``numpy.core.multiarray``.
    Both must resolve to the same functions.

    Returns:
        tuple: The module and the list of its pickle module names.
    """
    try:
        multiarray = importlib.import_module('numpy._core.multiarray')
    except ImportError:  # numpy < 2
        multiarray = importlib.import_module('numpy.core.multiarray')
    return multiarray, ['numpy._core.multiarray', 'numpy.core.multiarray']


def _allow_list() -> List[Tuple[SafeGlobal, str]]:
    """Build the allow-list with the reason for each entry.

    Found empirically by saving real mmseg and mmdet Runner checkpoints
    (IterBasedTrainLoop + validation + CheckpointHook with save_best, under
    numpy 2 and numpy 1) and loading them with ``weights_only=True`` until
    torch accepted them; each entry is needed by at least one of them (see
    tests/test_safe_load.py). Everything else (tensors, OrderedDict, Counter,
    torch.Size, ...) is already allowed by torch.

    Returns:
        list[tuple]: ``(entry, reason)`` pairs, ``entry`` as
        ``torch.serialization.add_safe_globals`` takes it.
    """
    multiarray, multiarray_names = _numpy_multiarray()
    entries: List[Tuple[SafeGlobal, str]] = [
        (
            HistoryBuffer,
            'message_hub.log_scalars values (every logged scalar, '
            'e.g. train/loss, train/lr, val/mIoU)',
        ),
        (
            (_history_buffer_getattr, 'builtins.getattr'),
            'HistoryBuffer pickles its default statistics methods as '
            "getattr(HistoryBuffer, 'min'|'max'|'current'|'mean'); this "
            'stand-in resolves only those four lookups',
        ),
        (np.ndarray, 'HistoryBuffer._log_history/_count_history arrays'),
        (np.dtype, 'dtype of those arrays and of numpy scalars'),
    ]
    for func, why in (
        ('_reconstruct', 'rebuilds numpy arrays'),
        ('scalar', 'rebuilds numpy scalars in message_hub.runtime_info (e.g. eta, best_score)'),
    ):
        obj = getattr(multiarray, func)
        for module in multiarray_names:
            entries.append(
                (
                    (obj, f'{module}.{func}'),
                    f'{why} (written by numpy {"2" if "_core" in module else "1"})',
                )
            )
    # np.dtype(...) instances are of per-type classes
    # (numpy.dtypes.Float64DType, ...) and the unpickler BUILDs them, so each
    # class in use must be allowed. Only those seen in real checkpoints are:
    # other dtypes (int32, bool, ...) only appear if a custom hook logs such
    # numpy values, and are then refused with a message naming the class.
    for scalar_type, why in (
        (np.float64, 'HistoryBuffer arrays of Python floats, eta'),
        (np.int64, 'HistoryBuffer count arrays'),
        (
            np.float32,
            'IoUMetric results (computed from torch tensors) in '
            'HistoryBuffer, CheckpointHook best_score',
        ),
    ):
        entries.append(
            (type(np.dtype(scalar_type)), f'class of np.dtype({scalar_type.__name__}): {why}')
        )
    return entries


def _dotted_name(obj: Any) -> str:
    """Return ``module.qualname`` of a class/function, else its ``repr``.

    Args:
        obj (Any): Object to name.

    Returns:
        str: The name.
    """
    module = getattr(obj, '__module__', None)
    qualname = getattr(obj, '__qualname__', None)
    if module and qualname:
        return f'{module}.{qualname}'
    return repr(obj)


def _entry_name(entry: SafeGlobal) -> str:
    """Return the pickle name under which an allow-list entry is matched.

    Args:
        entry (SafeGlobal): An object or an ``(object, name)`` tuple.

    Returns:
        str: The dotted name.
    """
    return entry[1] if isinstance(entry, tuple) else _dotted_name(entry)


def describe_safe_globals() -> Dict[str, str]:
    """Return the built-in allow-list as ``{pickle name: reason}``.

    Returns:
        dict[str, str]: One entry per name that :func:`register_safe_globals`
        allow-lists (not counting user opt-ins).
    """
    return {_entry_name(e): why for e, why in _allow_list()}


def _resolve(name: str) -> Any:
    """Import the object named by a dotted path such as ``pkg.mod.Class``.

    The longest importable module prefix is used, so nested qualnames
    (``pkg.mod.Outer.Inner``) work.

    Args:
        name (str): Dotted path.

    Returns:
        Any: The object.

    Raises:
        ValueError: If no prefix is an importable module or an attribute is
            missing; the message names ``name``.
    """
    parts = name.split('.')
    for split in range(len(parts) - 1, 0, -1):
        module_name = '.'.join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            raise ValueError(
                f'Cannot allow-list {name!r}: module {module_name!r} has no '
                f'attribute path {".".join(parts[split:])!r}.'
            ) from None
        return obj
    raise ValueError(
        f'Cannot allow-list {name!r}: it is not a dotted path '
        '"module.Name" with an importable module.'
    )


def allow_checkpoint_globals(*objs: Union[str, Callable]) -> List[Any]:
    """Trust extra globals in checkpoints loaded with ``weights_only=True``.

    The documented opt-in for checkpoints from a trusted source that contain
    objects outside ailurus_mm's allow-list. It calls
    ``torch.serialization.add_safe_globals``, so it affects every later
    ``torch.load`` in this process (including mmengine's). For a temporary
    opt-in use ``torch.serialization.safe_globals([...])`` as a context
    manager instead.

    Args:
        *objs (str | Callable): Classes/functions, or their dotted names
            (``'package.module.Class'``) as they appear in the refusal
            message.

    Returns:
        list: The objects that were allow-listed.

    Raises:
        ValueError: If a name cannot be imported, or the object is one that
            would make the restricted unpickler run arbitrary code
            (``getattr``, ``eval``, ``os.*`` ...); those checkpoints can only
            be loaded with ``torch.load(weights_only=False)``.
    """
    resolved = []
    for obj in objs:
        target = _resolve(obj.strip()) if isinstance(obj, str) else obj
        name = obj.strip() if isinstance(obj, str) else _dotted_name(obj)
        module = getattr(target, '__module__', None) or ''
        if (
            name in _NEVER_ALLOW
            or _dotted_name(target) in _NEVER_ALLOW
            or module.split('.')[0] in _TORCH_BLOCKED_MODULES
            or name.split('.')[0] in _TORCH_BLOCKED_MODULES
        ):
            raise ValueError(
                f'Refusing to allow-list {name!r}: it would let any '
                'checkpoint run arbitrary code. Load a checkpoint you trust '
                'that needs it with torch.load(path, weights_only=False).'
            )
        if not callable(target):
            raise ValueError(f'Cannot allow-list {name!r}: {target!r} is not a class or function.')
        resolved.append(target)
    torch.serialization.add_safe_globals(resolved)
    return resolved


def register_safe_globals() -> List[str]:
    """Allow-list what mmengine/mmseg/mmdet Runner checkpoints contain.

    Idempotent (torch keeps a set). Called when :mod:`ailurus_mm.utils` is
    imported; call it again after ``torch.serialization.clear_safe_globals()``
    or after changing ``AILURUS_TRUSTED_GLOBALS``. Also allow-lists the
    comma-separated dotted names in the environment variable
    ``AILURUS_TRUSTED_GLOBALS`` (see :func:`allow_checkpoint_globals`).

    Returns:
        list[str]: Sorted pickle names now allow-listed by this call.

    Raises:
        ValueError: If an ``AILURUS_TRUSTED_GLOBALS`` entry cannot be
            imported or is never allowed; the message names the entry.
    """
    entries = [entry for entry, _ in _allow_list()]
    torch.serialization.add_safe_globals(entries)
    names = [_entry_name(e) for e in entries]
    trusted = [n.strip() for n in os.environ.get(TRUSTED_GLOBALS_ENV, '').split(',') if n.strip()]
    if trusted:
        try:
            allow_checkpoint_globals(*trusted)
        except ValueError as err:
            raise ValueError(f'{TRUSTED_GLOBALS_ENV}: {err}') from None
        names += trusted
    return sorted(set(names))


# Patterns of the refusals raised by torch 2.13's weights-only unpickler
# (torch/_weights_only_unpickler.py) and by _history_buffer_getattr. torch
# prints builtins without the "builtins." prefix.
_REFUSAL_PATTERNS = (
    re.compile(r'GLOBAL (\S+) was not an allowed global by default'),
    re.compile(r'GLOBAL (\S+) whose module \S+ is blocked'),
    re.compile(r"but got <class '([^']+)'>"),
    re.compile(r'unrecognized function (.+?)(?: which belongs to|\n|$)'),
    re.compile(r'Refused attribute lookup (getattr\(.+?\)):'),
)


def _offending_from_message(message: str) -> Optional[str]:
    """Extract the refused object's name from torch's error message.

    Args:
        message (str): ``str()`` of the ``UnpicklingError``.

    Returns:
        str | None: Dotted name (or ``getattr(...)`` call), if recognised.
    """
    for pattern in _REFUSAL_PATTERNS:
        match = pattern.search(message)
        if match:
            name = match.group(1).strip()
            if pattern is _REFUSAL_PATTERNS[0] and '.' not in name:
                name = f'builtins.{name}'
            return name
    return None


def explain_unsafe_load(
    err: BaseException, path: Optional[Union[str, os.PathLike]] = None
) -> UnsafeCheckpointError:
    """Turn torch's weights-only refusal into an actionable error.

    Use it around mmengine calls that load checkpoints::

        try:
            runner.train()  # with resume=True / load_from
        except pickle.UnpicklingError as e:
            raise explain_unsafe_load(e, cfg.load_from) from e

    Args:
        err (BaseException): The ``pickle.UnpicklingError`` raised by
            ``torch.load(weights_only=True)``.
        path (str | os.PathLike, optional): The checkpoint file. When given
            and readable, it is scanned with
            ``torch.serialization.get_unsafe_globals_in_checkpoint`` so the
            message lists every global still missing, not only the first.

    Returns:
        UnsafeCheckpointError: The error to raise; its message names the
        offending object(s) and the opt-in, and ``.offending`` lists them.
    """
    message = str(err)
    first = _offending_from_message(message)
    offending = [first] if first else []
    if path is not None and osp.isfile(path):
        try:
            others = torch.serialization.get_unsafe_globals_in_checkpoint(os.fspath(path))
        except Exception:  # noqa: BLE001 - only an extra hint, never fatal
            others = []
        offending += sorted(n for n in others if n not in offending)
    where = f'checkpoint {os.fspath(path)!r}' if path is not None else 'the checkpoint'
    # Only plain dotted names can be opted in; getattr(...) lookups and
    # blocked modules cannot.
    optable = [
        n
        for n in offending
        if re.fullmatch(r'[\w.]+', n)
        and n not in _NEVER_ALLOW
        and n.split('.')[0] not in _TORCH_BLOCKED_MODULES
    ]
    if offending:
        text = (
            f'Refused to load {where}: it contains '
            f'{", ".join(offending)}, which '
            f'{"is" if len(offending) == 1 else "are"} not in the '
            'weights-only allow-list (torch.load(weights_only=True); '
            'ailurus_mm allow-lists only what mmengine/mmseg/mmdet Runner '
            'checkpoints need, see '
            'ailurus_mm.utils.describe_safe_globals()). '
        )
    else:
        text = (
            f'Refused to load {where} with torch.load(weights_only=True)'
            ' for a reason ailurus_mm does not recognise. '
        )
    if optable:
        text += _OPT_IN_HELP.format(
            names=','.join(optable), quoted=', '.join(repr(n) for n in optable)
        )
    unsafe = [n for n in offending if n not in optable]
    if unsafe or not offending:
        text += (
            f'{", ".join(unsafe) or "It"} cannot be allow-listed '
            'safely; only load the file with torch.load(path, '
            'weights_only=False) if you trust its source.'
        )
    # torch's message is long and mostly advice; quote only its reason line.
    first_line = next(
        (ln for ln in message.splitlines() if any(p.search(ln) for p in _REFUSAL_PATTERNS)), ''
    )
    text = text.rstrip()
    if first_line:
        text += f'\nunpickler said: {first_line.strip()}'
    return UnsafeCheckpointError(text, offending, os.fspath(path) if path is not None else None)


def load_checkpoint_safely(path: Union[str, os.PathLike], map_location: Any = 'cpu') -> Any:
    """``torch.load`` a checkpoint with ``weights_only=True``, clearly.

    Same result as ``torch.load(path, map_location, weights_only=True)``
    with ailurus_mm's allow-list; a refusal is re-raised as
    :class:`UnsafeCheckpointError` naming the object and the opt-in.

    Args:
        path (str | os.PathLike): Local checkpoint file.
        map_location (Any): As for ``torch.load``. Defaults to ``'cpu'``.

    Returns:
        Any: The loaded object (usually a dict).

    Raises:
        FileNotFoundError: If ``path`` is not a file (the message names it).
        UnsafeCheckpointError: If the checkpoint contains objects outside
            the allow-list.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'Checkpoint file not found: {os.fspath(path)!r} (resolved: {osp.abspath(path)!r}).'
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise explain_unsafe_load(err, path) from err

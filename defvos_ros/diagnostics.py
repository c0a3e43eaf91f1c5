"""The node's health as a diagnostic_msgs/DiagnosticStatus (published on /diagnostics at 1 Hz).

Levels and their thresholds (parameters in brackets):
- ERROR: the inference worker died; node latency p95 above ``latency_error_ms``.
- WARN: input below ``min_rate_fraction`` x ``expected_rate_hz`` (when that is set > 0),
  including no input at all while active; latency p95 above ``latency_warn_ms``; more than
  ``drop_warn_fraction`` of the period's frames dropped because the tracker could not keep up
  or failed (reasons ``stale``, ``error``, ``rejected``, ``invalid``); inputs rejected.
- OK otherwise, also while unconfigured or inactive (the state is reported as a value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from defvos_ros.stats import StatsSummary

if TYPE_CHECKING:
    from defvos_ros.worker import WorkerSnapshot

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
#: Drop reasons that mean the node did not keep up or failed (not: nothing tracked / paused).
FAULT_DROP_REASONS = ('stale', 'error', 'rejected', 'invalid')


@dataclass
class DiagnosticThresholds:
    """When the status turns WARN or ERROR (see the module docstring)."""

    expected_rate_hz: float = 0.0  # camera rate; 0 = input rate not checked
    min_rate_fraction: float = 0.8
    latency_warn_ms: float = 250.0
    latency_error_ms: float = 1000.0
    drop_warn_fraction: float = 0.5


def _value(key: str, value: object) -> KeyValue:
    if isinstance(value, float):
        value = f'{value:.2f}'
    return KeyValue(key=key, value=str(value))


def node_status(name: str, hardware_id: str, state: str, summary: StatsSummary,
                snapshot: WorkerSnapshot, thresholds: DiagnosticThresholds,
                worker_error: Optional[BaseException] = None,
                extra: Sequence[tuple[str, object]] = ()) -> DiagnosticStatus:
    """Return the status of one period (``summary``) and the tracker's current figures.

    ``extra``: further (key, value) pairs to show (e.g. the 3D stage's counters).
    """
    problems: list[tuple[bytes, str]] = []
    active = state == 'active'
    if worker_error is not None:
        problems.append((ERROR, f'inference worker died: {type(worker_error).__name__}: '
                                f'{worker_error}'))
    if active and thresholds.expected_rate_hz > 0:
        floor = thresholds.min_rate_fraction * thresholds.expected_rate_hz
        if summary.fps_in < floor:
            problems.append((WARN, f'input {summary.fps_in:.1f} Hz below {floor:.1f} Hz '
                                   f'({thresholds.expected_rate_hz:g} Hz expected)'))
    p95 = summary.latency_p95_ms
    if p95 is not None and p95 > thresholds.latency_error_ms:
        problems.append((ERROR, f'latency p95 {p95:.0f} ms > {thresholds.latency_error_ms:g}'))
    elif p95 is not None and p95 > thresholds.latency_warn_ms:
        problems.append((WARN, f'latency p95 {p95:.0f} ms > {thresholds.latency_warn_ms:g}'))
    faults = sum(summary.dropped.get(reason, 0) for reason in FAULT_DROP_REASONS)
    if summary.frames_received and faults > thresholds.drop_warn_fraction * \
            summary.frames_received:
        problems.append((WARN, f'{faults} of {summary.frames_received} frames dropped '
                               f'({", ".join(FAULT_DROP_REASONS)})'))
    if summary.inputs_rejected:
        problems.append((WARN, f'{summary.inputs_rejected} inputs rejected (see the log)'))
    level = max((level for level, _ in problems), default=OK)
    message = '; '.join(text for _, text in problems) or f'{state}, tracking ' \
        f'{snapshot.objects} object(s)'
    values = [
        _value('state', state),
        _value('input rate (Hz)', summary.fps_in),
        _value('output rate (Hz)', summary.fps_out),
        _value('expected rate (Hz)', thresholds.expected_rate_hz),
        _value('latency p50 (ms)', 'n/a' if summary.latency_p50_ms is None
               else summary.latency_p50_ms),
        _value('latency p95 (ms)', 'n/a' if p95 is None else p95),
        _value('frames received', summary.frames_received),
        _value('frames published', summary.frames_processed),
        _value('frames dropped', summary.frames_dropped),
    ]
    values += [_value(f'dropped: {reason}', count)
               for reason, count in sorted(summary.dropped.items())]
    values += [
        _value('frames dropped (total)', summary.total_dropped),
        _value('inputs rejected', summary.inputs_rejected),
        _value('objects tracked', snapshot.objects),
        _value('objects lost', snapshot.lost),
        _value('memory frames', snapshot.memory_frames),
        _value('memory (MB)', snapshot.memory_bytes / 2**20),
    ]
    values += [_value(key, value) for key, value in extra]
    return DiagnosticStatus(level=level, name=name, message=message,
                            hardware_id=hardware_id, values=values)

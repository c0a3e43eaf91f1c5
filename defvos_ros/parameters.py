"""The node's parameters: declarations with descriptors, and a typed dataclass of settings.

Every parameter is declared here with a description, a range where one applies, and
``read_only`` when it only takes effect at start-up (model, QoS, topics). The few that may
change at run time (``overlay``, ``max_objects``, ``seed_tolerance_sec``, ``seed_wait_sec``)
are validated by ``validate_update``.

One source for each default and range: the tracker's parameters (``size``, ``mem_every``,
..., ``providers``) are fields of ``defvos_core.config.TrackerConfig`` and take its defaults
and the ranges / choices its fields record (``TRACKER_PARAMETERS`` maps names; the core
validates with the same metadata); the node's own are the fields of ``NodeSettings``, their
ranges written in ``SPECS``. ``config/defvos.yaml`` lists them all with the same values (a
test ties the three).
"""

from __future__ import annotations

import json
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any, Optional

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)

from defvos_core.config import MAX_OBJECT_ID, TrackerConfig, check_setting
from defvos_core.depth.geometry import Objects3DConfig
from defvos_ros.diagnostics import DiagnosticThresholds

RELIABILITIES = ('best_effort', 'reliable')

#: Node parameter name -> field of TrackerConfig ('onnx.providers': a field of its OnnxConfig).
TRACKER_PARAMETERS: dict[str, str] = {
    'backend': 'backend',
    'device': 'device',
    'providers': 'onnx.providers',
    'fp16': 'fp16',
    'bf16': 'bf16',
    'size': 'size',
    'mem_every': 'mem_every',
    'max_memory_frames': 'max_memory_frames',
    'max_seed_frames': 'max_seed_frames',
    'max_long_side': 'max_long_side',
    'max_aspect_ratio': 'max_aspect_ratio',
    'cuda_graphs': 'cuda_graphs',
    'presence_confidence_drop': 'presence.confidence_drop',
    'presence_window': 'presence.window',
    'presence_min_area_fraction': 'presence.min_area_fraction',
    'slots_per_bank': 'slots_per_bank',
    'box_prompt_method': 'prompts.box_method',
    'points_prompt_method': 'prompts.points_method',
    'grabcut_iterations': 'prompts.grabcut_iterations',
}


def tracker_field(name: str) -> Field:
    """Return the TrackerConfig field (nested ones included) behind tracker parameter `name`."""
    config: Any = TrackerConfig
    *groups, leaf = TRACKER_PARAMETERS[name].split('.')
    for group in groups:
        config = next(item for item in fields(config) if item.name == group).default_factory
    return next(item for item in fields(config) if item.name == leaf)


def _tracker_value(config: TrackerConfig, path: str) -> Any:
    value: Any = config
    for part in path.split('.'):
        value = getattr(value, part)
    if path == 'size':
        return value or 0  # a ROS parameter cannot be None: 0 means the input resolution
    return list(value) if isinstance(value, list) else value


def tracker_config_from(values: dict[str, Any]) -> TrackerConfig:
    """Return the TrackerConfig that tracker parameter values (by node name) describe.

    A path 'group.field' sets a field of the nested dataclass `group` (OnnxConfig, ...).
    """
    plain: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for name, path in TRACKER_PARAMETERS.items():
        if name not in values:
            continue
        value = values[name]
        if path == 'size':
            value = value or None
        elif path == 'onnx.providers':
            value = list(value or [])
        group, _, leaf = path.rpartition('.')
        (nested.setdefault(group, {}) if group else plain)[leaf] = value
    groups = {group: next(f for f in fields(TrackerConfig) if f.name == group).default_factory
              for group in nested}
    return TrackerConfig(**plain, **{group: groups[group](**items)
                                     for group, items in nested.items()})


#: Nested settings whose fields are node parameters under their own names.
NESTED = ('tracker', 'diagnostics')


@dataclass
class NodeSettings:
    """Typed values of the node's parameters.

    Tracker settings live in ``tracker`` (names: TRACKER_PARAMETERS) and the diagnostics
    thresholds in ``diagnostics`` (each field of DiagnosticThresholds is a parameter).
    """

    weights: str = ''  # '' = the shipped student
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    diagnostics: DiagnosticThresholds = field(default_factory=DiagnosticThresholds)
    autostart: bool = True  # configure and activate at start-up (no lifecycle manager needed)
    # ONNX graphs are prepared at configure time for these camera sizes ('HxW'); others on
    # their first frame (frames are dropped while that runs)
    expected_image_sizes: list[str] = field(default_factory=list)
    max_image_pixels: int = 4096 * 4096  # larger frames (raw or declared compressed) refused
    max_compressed_bytes: int = 32 * 2**20  # larger CompressedImage messages refused
    num_threads: int = 0  # torch intra-op threads; 0 = torch's default
    max_objects: int = 10
    seed_tolerance_sec: float = 0.01
    seed_wait_sec: float = 1.0
    frame_buffer_size: int = 30
    image_qos_reliability: str = 'best_effort'
    image_qos_depth: int = 1
    masks_qos_reliability: str = 'reliable'
    masks_qos_depth: int = 10
    overlay: bool = True
    use_compressed: bool = False
    summary_period_sec: float = 10.0
    warning_throttle_sec: float = 5.0
    # 3D positions from a depth image aligned to the colour frame (defvos_ros/objects_3d.py)
    depth_topic: str = ''  # '' = no 3D output
    camera_info_topic: str = ''  # '' = 'camera_info' beside the depth topic
    depth_tolerance_sec: float = 0.02
    depth_wait_sec: float = 0.02
    depth_buffer_size: int = 10
    depth_erosion_px: int = Objects3DConfig.erosion_px
    depth_extent_percentile: float = Objects3DConfig.extent_percentile
    depth_min_points: int = Objects3DConfig.min_points
    depth_cloud_max_points: int = 5000

    def image_qos(self) -> QoSProfile:
        """Return the image subscriptions' QoS (default: best effort, depth 1, as sensor data)."""
        return _qos(self.image_qos_reliability, self.image_qos_depth)

    def masks_qos(self) -> QoSProfile:
        """Return the QoS of the mask, objects and overlay publishers (reliable by default)."""
        return _qos(self.masks_qos_reliability, self.masks_qos_depth)

    def parameter_values(self) -> dict[str, Any]:
        """Return every parameter by name, as declared on the node."""
        values = {item.name: getattr(self, item.name) for item in fields(self)
                  if item.name not in NESTED}
        values = {name: list(value) if isinstance(value, list) else value
                  for name, value in values.items()}
        values.update({name: _tracker_value(self.tracker, path)
                       for name, path in TRACKER_PARAMETERS.items()})
        values.update({item.name: getattr(self.diagnostics, item.name)
                       for item in fields(DiagnosticThresholds)})
        return values

    @classmethod
    def from_parameter_values(cls, values: dict[str, Any]) -> 'NodeSettings':
        """Return the settings that parameter values (by name) describe."""
        own = {item.name: values[item.name] for item in fields(cls)
               if item.name not in NESTED and item.name in values}
        diagnostics = DiagnosticThresholds(**{item.name: values[item.name]
                                              for item in fields(DiagnosticThresholds)
                                              if item.name in values})
        return cls(tracker=tracker_config_from(values), diagnostics=diagnostics, **own)

    def set_parameter(self, name: str, value: Any) -> None:
        """Apply one (validated) run-time parameter change."""
        if name in TRACKER_PARAMETERS:
            raise ValueError(f"parameter '{name}' is read-only")
        if any(item.name == name for item in fields(DiagnosticThresholds)):
            setattr(self.diagnostics, name, value)
        elif any(item.name == name for item in fields(self)):
            setattr(self, name, value)

    def diagnostic_thresholds(self) -> DiagnosticThresholds:
        """Return the current diagnostics thresholds."""
        return self.diagnostics

    def objects_3d_config(self) -> Objects3DConfig:
        """Return how the 3D stage measures objects."""
        return Objects3DConfig(erosion_px=self.depth_erosion_px,
                               extent_percentile=self.depth_extent_percentile,
                               min_points=self.depth_min_points)

    def image_sizes(self) -> list[tuple[int, int]]:
        """Return ``expected_image_sizes`` as (height, width) pairs."""
        return [parse_image_size(text) for text in self.expected_image_sizes]


def parse_image_size(text: str) -> tuple[int, int]:
    """Return 'HxW' (e.g. '480x640') as (height, width); ValueError naming the parameter."""
    parts = text.lower().replace(' ', '').split('x')
    if len(parts) != 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f"parameter 'expected_image_sizes': {text!r} is not HEIGHTxWIDTH "
                         "(e.g. '480x640')")
    return int(parts[0]), int(parts[1])


def parameter_defaults() -> dict[str, Any]:
    """Return the default of every node parameter (what config/defvos.yaml lists)."""
    return NodeSettings().parameter_values()


def _qos(reliability: str, depth: int) -> QoSProfile:
    policy = (ReliabilityPolicy.RELIABLE if reliability == 'reliable'
              else ReliabilityPolicy.BEST_EFFORT)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy,
                      durability=DurabilityPolicy.VOLATILE)


@dataclass(frozen=True)
class _Spec:
    description: str
    read_only: bool = True
    int_range: Optional[tuple[int, int]] = None
    float_range: Optional[tuple[float, float]] = None
    choices: Optional[tuple[str, ...]] = None


SPECS: dict[str, _Spec] = {
    'weights': _Spec('Weights file (.pt; the onnxruntime backend derives its graphs from '
                     'it); empty = the shipped student (defvos_core/assets/student.pt).'),
    'backend': _Spec('Compute backend of the tracker.'),
    'device': _Spec("Torch device, e.g. 'cpu', 'cuda', 'cuda:0'."),
    'providers': _Spec('onnxruntime execution providers in priority order, e.g. '
                       "['CUDAExecutionProvider', 'CPUExecutionProvider']; empty = the "
                       "backend's default. Ignored by the torch backend."),
    'fp16': _Spec('Half precision inference (CUDA only).'),
    'bf16': _Spec('bfloat16 inference with the torch backend: for CPUs with native bf16 '
                  '(AVX512-BF16 / AMX; emulated and slower elsewhere) or CUDA. Not with fp16.'),
    'size': _Spec('Short side (pixels) frames are resized to for inference; 0 = input '
                  'resolution. Masks are always published at the input resolution.'),
    'mem_every': _Spec('Add every N-th tracked frame to the long-term memory.'),
    'max_memory_frames': _Spec('Bound of the long-term memory FIFO (frames; 0 = the seed '
                               'frames and the last frame only).'),
    'max_seed_frames': _Spec('Bound of the kept seed frames (oldest dropped first).'),
    'max_long_side': _Spec('Bound of the processing long side (pixels): the short side '
                           'shrinks so the long side stays within it.'),
    'max_aspect_ratio': _Spec('Frames longer than this many times their short side are '
                              'refused with a warning (frame_shape).'),
    'presence_confidence_drop': _Spec('An object counts as absent (left out of the mask, '
                                      'present: false) when its score drops more than this '
                                      'below its recent median; 0 = off.'),
    'presence_window': _Spec('Frames in the recent median of the presence test.'),
    'presence_min_area_fraction': _Spec('An object covering less of the frame counts as '
                                        'absent.'),
    'slots_per_bank': _Spec('Objects per identity bank (0 = as many as the model has ID '
                            'slots); more banks cost time, fewer objects per bank keep them '
                            'apart.'),
    'box_prompt_method': _Spec('How a box prompt becomes a seed mask: head (the weights\' '
                               'prompt head), grabcut (OpenCV, no learned model), rect (the box '
                               'itself); "+refine" then segments the seed frame against it.'),
    'points_prompt_method': _Spec('How click prompts become a seed mask (as '
                                  'box_prompt_method; rect needs a box).'),
    'grabcut_iterations': _Spec('GrabCut iterations of the grabcut prompt methods.'),
    'cuda_graphs': _Spec('Torch on CUDA: replay the per-frame work as CUDA graphs once the '
                         'memory is full (ignored on CPU).'),
    'num_threads': _Spec("Torch CPU threads for inference; 0 = torch's default.",
                         int_range=(0, 256)),
    'max_objects': _Spec('Most objects tracked at once; a seed that would exceed it is '
                         'rejected with a warning.', read_only=False,
                         int_range=(1, MAX_OBJECT_ID)),
    'seed_tolerance_sec': _Spec('Largest |seed stamp - frame stamp| for a seed mask to be '
                                'paired with a buffered frame (seconds).', read_only=False,
                                float_range=(0.0, 10.0)),
    'seed_wait_sec': _Spec('How long a seed stamped after every buffered frame waits for '
                           'its frame before it is rejected (seconds).', read_only=False,
                           float_range=(0.0, 60.0)),
    'frame_buffer_size': _Spec('Recent frames kept to pair late seeds with (bounded ring '
                               'buffer of received messages).', int_range=(1, 1000)),
    'image_qos_reliability': _Spec('Reliability of the image subscription.',
                                   choices=RELIABILITIES),
    'image_qos_depth': _Spec('History depth of the image subscription.',
                             int_range=(1, 100)),
    'masks_qos_reliability': _Spec('Reliability of the masks/objects/overlay publishers.',
                                   choices=RELIABILITIES),
    'masks_qos_depth': _Spec('History depth of the masks/objects/overlay publishers.',
                             int_range=(1, 1000)),
    'overlay': _Spec('Publish ~/overlay (computed only while someone subscribes).',
                     read_only=False),
    'use_compressed': _Spec("Subscribe '<image>/compressed' (sensor_msgs/CompressedImage) "
                            "instead of 'image'."),
    'summary_period_sec': _Spec('Period of the one-line fps/latency/drops log; 0 = off.',
                                float_range=(0.0, 3600.0)),
    'warning_throttle_sec': _Spec('Each kind of bad-input warning is logged at most once '
                                  'per this period (seconds).', float_range=(0.0, 3600.0)),
    'autostart': _Spec('Configure and activate at start-up; false leaves the node '
                       'unconfigured for a lifecycle manager.'),
    'expected_image_sizes': _Spec("Camera sizes ('HxW', e.g. '480x640') whose ONNX graphs "
                                  'are prepared at configure time; other sizes are prepared '
                                  'on their first frame (frames dropped meanwhile).'),
    'max_image_pixels': _Spec('Frames (raw, or the canvas a CompressedImage declares) with '
                              'more pixels are refused with a warning.',
                              int_range=(1, 2**31 - 1)),
    'max_compressed_bytes': _Spec('CompressedImage messages with more bytes are refused with '
                                  'a warning.', int_range=(1, 2**31 - 1)),
    'depth_topic': _Spec('Depth image aligned to the colour image (REP 118: 16UC1 mm or '
                         '32FC1 m; 0/NaN = no reading), e.g. RealSense '
                         "'aligned_depth_to_color/image_raw'; enables defvos/objects_3d. "
                         'Empty = no 3D output (no cost).'),
    'camera_info_topic': _Spec('CameraInfo of the colour image (its K back-projects the '
                               "depth); empty = 'camera_info' beside depth_topic."),
    'depth_tolerance_sec': _Spec('Largest gap between a depth stamp and a colour stamp for '
                                 'the two to be paired (seconds).', float_range=(0.0, 10.0)),
    'depth_wait_sec': _Spec('How long the 3D step waits (after the masks are out) for a depth '
                            'image not received yet, when every held one is older; 0 = never.',
                            float_range=(0.0, 5.0)),
    'depth_buffer_size': _Spec('Recent depth images kept for pairing by stamp.',
                               int_range=(1, 1000)),
    'depth_erosion_px': _Spec("Pixels taken off each mask's rim before its depth is read "
                              '(rims straddle depth edges).', int_range=(0, 50)),
    'depth_extent_percentile': _Spec('The 3D box spans the p..100-p percentiles of the '
                                     "object's points on each axis.",
                                     float_range=(0.0, 25.0)),
    'depth_min_points': _Spec('Objects with fewer depth readings under their eroded mask '
                              'get no 3D position.', int_range=(1, 1000000)),
    'depth_cloud_max_points': _Spec('Most points on ~/objects_cloud (decimated; computed only '
                                    'while subscribed).', int_range=(1, 10000000)),
    'expected_rate_hz': _Spec('Camera rate for /diagnostics (WARN below min_rate_fraction '
                              'of it); 0 = input rate not checked.', read_only=False,
                              float_range=(0.0, 1000.0)),
    'min_rate_fraction': _Spec('/diagnostics WARN when the input rate is below this '
                               'fraction of expected_rate_hz.', read_only=False,
                               float_range=(0.0, 1.0)),
    'latency_warn_ms': _Spec('/diagnostics WARN above this node latency p95 (ms).',
                             read_only=False, float_range=(0.0, 1e6)),
    'latency_error_ms': _Spec('/diagnostics ERROR above this node latency p95 (ms).',
                              read_only=False, float_range=(0.0, 1e6)),
    'drop_warn_fraction': _Spec('/diagnostics WARN when more than this fraction of the '
                                "frames is dropped as stale, invalid, rejected or error.",
                                read_only=False, float_range=(0.0, 1.0)),
}


def _with_setting_range(name: str, spec: _Spec) -> _Spec:
    """Return `spec` with the range or choices its TrackerConfig field records.

    The tracker's settings carry their accepted values on their dataclass fields
    (`defvos_core.config.setting`), the one source for the core's checks, these
    descriptors and doc/parameters.md. Other parameters keep the ranges written in SPECS.
    """
    if name not in TRACKER_PARAMETERS:
        return spec
    metadata = tracker_field(name).metadata
    low, high = metadata.get('range', (None, None))
    if low is not None and metadata.get('none_ok'):
        low = 0  # a ROS parameter cannot be None: 0 stands for it (size: the input size)
    numbers = {}
    if low is not None:
        numbers = ({'float_range': (float(low), float(high))} if isinstance(high, float)
                   else {'int_range': (low, high)})
    return replace(spec, choices=metadata.get('choices', spec.choices), **numbers)


SPECS = {name: _with_setting_range(name, spec) for name, spec in SPECS.items()}


def _descriptor(name: str, spec: _Spec, default: Any) -> ParameterDescriptor:
    if isinstance(default, list):
        parameter_type = ParameterType.PARAMETER_STRING_ARRAY
    else:
        parameter_type = Parameter.Type.from_parameter_value(default).value
    descriptor = ParameterDescriptor(name=name, type=parameter_type,
                                     description=spec.description, read_only=spec.read_only)
    if spec.int_range:
        descriptor.integer_range = [IntegerRange(from_value=spec.int_range[0],
                                                 to_value=spec.int_range[1], step=1)]
    if spec.float_range:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=spec.float_range[0], to_value=spec.float_range[1], step=0.0)]
    if spec.choices:
        descriptor.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    return descriptor


def declare_parameters(node: Node) -> NodeSettings:
    """Declare every parameter on ``node`` and return their values.

    Raises rclpy's ParameterException for an out-of-range or mistyped override and
    ValueError for a value outside its choices, naming the parameter.
    """
    values: dict[str, Any] = {}
    for name, default in parameter_defaults().items():
        descriptor = _descriptor(name, SPECS[name], default)
        if isinstance(default, list):
            value = node.declare_parameter(name, Parameter.Type.STRING_ARRAY, descriptor).value
            value = list(value) if value else []  # an empty YAML list arrives as None
        else:
            value = node.declare_parameter(name, default, descriptor).value
        values[name] = value
    for name, value in values.items():
        check_value(name, value)
    return NodeSettings.from_parameter_values(values)


def check_value(name: str, value: Any) -> None:
    """Raise ValueError naming the parameter when ``value`` is not one it accepts."""
    spec = SPECS[name]
    if name in TRACKER_PARAMETERS:
        if name == 'size' and value == 0:
            value = None
        check_setting(tracker_field(name), value, f"parameter '{name}'",
                      none_as='0 (input resolution)')
    elif spec.choices and value not in spec.choices:
        raise ValueError(f"parameter '{name}' is {value!r}; expected one of "
                         f'{list(spec.choices)}')
    if name == 'device' and not str(value).strip():
        raise ValueError("parameter 'device' is empty; expected e.g. 'cpu' or 'cuda:0'")
    if name == 'expected_image_sizes':
        for text in value or []:
            parse_image_size(text)


def validate_update(parameters: list[Parameter]) -> Optional[str]:
    """Return why a run-time parameter change is refused, or None when it is accepted."""
    for parameter in parameters:
        if parameter.name not in SPECS:
            continue
        try:
            check_value(parameter.name, parameter.value)
        except ValueError as error:
            return str(error)
    return None


def markdown_table() -> str:
    """Return every parameter as a Markdown table (name, default, range, description).

    doc/parameters.md is this table (`python -m defvos_ros.parameters > doc/parameters.md`;
    a test keeps the two in step).
    """
    defaults = parameter_defaults()
    rows = ['| name | default | range | what |', '| --- | --- | --- | --- |']
    for name, spec in SPECS.items():
        if spec.int_range:
            accepted = f'{spec.int_range[0]}..{spec.int_range[1]}'
        elif spec.float_range:
            accepted = f'{spec.float_range[0]:g}..{spec.float_range[1]:g}'
        else:
            accepted = ' / '.join(spec.choices or ())
        when = '' if spec.read_only else ' (run time)'
        rows.append(f'| `{name}`{when} | `{json.dumps(defaults[name])}` | {accepted} | '
                    f'{spec.description} |')
    header = ('# Node parameters\n\nGenerated by `python -m defvos_ros.parameters` from the '
              "node's declarations (`defvos_ros/parameters.py`); the defaults of the tracker's "
              'parameters come from `TrackerConfig`. All are read-only once the node runs '
              'except those marked (run time). `config/defvos.yaml` lists the same defaults.\n')
    return header + '\n' + '\n'.join(rows) + '\n'


if __name__ == '__main__':
    print(markdown_table(), end='')

from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Pose(_message.Message):
    __slots__ = ("translation", "rotation")
    TRANSLATION_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    translation: _containers.RepeatedScalarFieldContainer[float]
    rotation: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, translation: _Optional[_Iterable[float]] = ..., rotation: _Optional[_Iterable[float]] = ...) -> None: ...

class ArmState(_message.Message):
    __slots__ = ("name", "pose", "joint_position", "joint_velocity", "joint_torque", "external_joint_torque", "wrench", "external_wrench")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    JOINT_POSITION_FIELD_NUMBER: _ClassVar[int]
    JOINT_VELOCITY_FIELD_NUMBER: _ClassVar[int]
    JOINT_TORQUE_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_JOINT_TORQUE_FIELD_NUMBER: _ClassVar[int]
    WRENCH_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_WRENCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    pose: Pose
    joint_position: _containers.RepeatedScalarFieldContainer[float]
    joint_velocity: _containers.RepeatedScalarFieldContainer[float]
    joint_torque: _containers.RepeatedScalarFieldContainer[float]
    external_joint_torque: _containers.RepeatedScalarFieldContainer[float]
    wrench: _containers.RepeatedScalarFieldContainer[float]
    external_wrench: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., pose: _Optional[_Union[Pose, _Mapping]] = ..., joint_position: _Optional[_Iterable[float]] = ..., joint_velocity: _Optional[_Iterable[float]] = ..., joint_torque: _Optional[_Iterable[float]] = ..., external_joint_torque: _Optional[_Iterable[float]] = ..., wrench: _Optional[_Iterable[float]] = ..., external_wrench: _Optional[_Iterable[float]] = ...) -> None: ...

class GripperState(_message.Message):
    __slots__ = ("name", "position")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    name: str
    position: float
    def __init__(self, name: _Optional[str] = ..., position: _Optional[float] = ...) -> None: ...

class RobotState(_message.Message):
    __slots__ = ("arms", "grippers")
    ARMS_FIELD_NUMBER: _ClassVar[int]
    GRIPPERS_FIELD_NUMBER: _ClassVar[int]
    arms: _containers.RepeatedCompositeFieldContainer[ArmState]
    grippers: _containers.RepeatedCompositeFieldContainer[GripperState]
    def __init__(self, arms: _Optional[_Iterable[_Union[ArmState, _Mapping]]] = ..., grippers: _Optional[_Iterable[_Union[GripperState, _Mapping]]] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("height", "width", "channels", "dtype", "data")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    channels: int
    dtype: str
    data: bytes
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., dtype: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class Camera(_message.Message):
    __slots__ = ("name", "rgb", "depth", "label", "intrinsics", "pose")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    name: str
    rgb: Image
    depth: Image
    label: Image
    intrinsics: _containers.RepeatedScalarFieldContainer[float]
    pose: Pose
    def __init__(self, name: _Optional[str] = ..., rgb: _Optional[_Union[Image, _Mapping]] = ..., depth: _Optional[_Union[Image, _Mapping]] = ..., label: _Optional[_Union[Image, _Mapping]] = ..., intrinsics: _Optional[_Iterable[float]] = ..., pose: _Optional[_Union[Pose, _Mapping]] = ...) -> None: ...

class Observation(_message.Message):
    __slots__ = ("actual", "desired", "cameras", "language_instruction", "use_language_instruction", "proprio", "time")
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    USE_LANGUAGE_INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    PROPRIO_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    actual: RobotState
    desired: RobotState
    cameras: _containers.RepeatedCompositeFieldContainer[Camera]
    language_instruction: str
    use_language_instruction: bool
    proprio: _containers.RepeatedScalarFieldContainer[float]
    time: float
    def __init__(self, actual: _Optional[_Union[RobotState, _Mapping]] = ..., desired: _Optional[_Union[RobotState, _Mapping]] = ..., cameras: _Optional[_Iterable[_Union[Camera, _Mapping]]] = ..., language_instruction: _Optional[str] = ..., use_language_instruction: _Optional[bool] = ..., proprio: _Optional[_Iterable[float]] = ..., time: _Optional[float] = ...) -> None: ...

class ArmTarget(_message.Message):
    __slots__ = ("name", "pose", "gripper")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    GRIPPER_FIELD_NUMBER: _ClassVar[int]
    name: str
    pose: Pose
    gripper: float
    def __init__(self, name: _Optional[str] = ..., pose: _Optional[_Union[Pose, _Mapping]] = ..., gripper: _Optional[float] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("arms",)
    ARMS_FIELD_NUMBER: _ClassVar[int]
    arms: _containers.RepeatedCompositeFieldContainer[ArmTarget]
    def __init__(self, arms: _Optional[_Iterable[_Union[ArmTarget, _Mapping]]] = ...) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ("client_id", "seed")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    seed: int
    def __init__(self, client_id: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class ResetResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("client_id", "observation")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    observation: Observation
    def __init__(self, client_id: _Optional[str] = ..., observation: _Optional[_Union[Observation, _Mapping]] = ...) -> None: ...

class StepResponse(_message.Message):
    __slots__ = ("success", "message", "action")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    action: Action
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., action: _Optional[_Union[Action, _Mapping]] = ...) -> None: ...

class MetadataRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    def __init__(self, client_id: _Optional[str] = ...) -> None: ...

class MetadataResponse(_message.Message):
    __slots__ = ("name", "skill_type", "checkpoint_path", "git_repo", "git_sha", "config_yaml", "is_language_conditioned", "runtime_info")
    class RuntimeInfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SKILL_TYPE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_PATH_FIELD_NUMBER: _ClassVar[int]
    GIT_REPO_FIELD_NUMBER: _ClassVar[int]
    GIT_SHA_FIELD_NUMBER: _ClassVar[int]
    CONFIG_YAML_FIELD_NUMBER: _ClassVar[int]
    IS_LANGUAGE_CONDITIONED_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_INFO_FIELD_NUMBER: _ClassVar[int]
    name: str
    skill_type: str
    checkpoint_path: str
    git_repo: str
    git_sha: str
    config_yaml: str
    is_language_conditioned: bool
    runtime_info: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., skill_type: _Optional[str] = ..., checkpoint_path: _Optional[str] = ..., git_repo: _Optional[str] = ..., git_sha: _Optional[str] = ..., config_yaml: _Optional[str] = ..., is_language_conditioned: _Optional[bool] = ..., runtime_info: _Optional[_Mapping[str, str]] = ...) -> None: ...

class EndRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    def __init__(self, client_id: _Optional[str] = ...) -> None: ...

class EndResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("serving",)
    SERVING_FIELD_NUMBER: _ClassVar[int]
    serving: bool
    def __init__(self, serving: _Optional[bool] = ...) -> None: ...

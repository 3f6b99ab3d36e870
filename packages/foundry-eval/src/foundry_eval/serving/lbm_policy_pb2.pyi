from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageDtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UINT8: _ClassVar[ImageDtype]
    DTYPE_INT8: _ClassVar[ImageDtype]
    DTYPE_UINT16: _ClassVar[ImageDtype]
    DTYPE_INT16: _ClassVar[ImageDtype]

class ImageCompression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NONE: _ClassVar[ImageCompression]
    JPG: _ClassVar[ImageCompression]
    PNG: _ClassVar[ImageCompression]
DTYPE_UINT8: ImageDtype
DTYPE_INT8: ImageDtype
DTYPE_UINT16: ImageDtype
DTYPE_INT16: ImageDtype
NONE: ImageCompression
JPG: ImageCompression
PNG: ImageCompression

class Time(_message.Message):
    __slots__ = ("sec", "nanosec")
    SEC_FIELD_NUMBER: _ClassVar[int]
    NANOSEC_FIELD_NUMBER: _ClassVar[int]
    sec: int
    nanosec: int
    def __init__(self, sec: _Optional[int] = ..., nanosec: _Optional[int] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("height", "width", "channels", "data", "dtype", "compression")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    channels: int
    data: bytes
    dtype: ImageDtype
    compression: ImageCompression
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., data: _Optional[bytes] = ..., dtype: _Optional[_Union[ImageDtype, str]] = ..., compression: _Optional[_Union[ImageCompression, str]] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("stamp",)
    STAMP_FIELD_NUMBER: _ClassVar[int]
    stamp: Time
    def __init__(self, stamp: _Optional[_Union[Time, _Mapping]] = ...) -> None: ...

class CameraInfo(_message.Message):
    __slots__ = ("height", "width", "distortion_model", "k", "header")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    DISTORTION_MODEL_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    distortion_model: str
    k: _containers.RepeatedScalarFieldContainer[float]
    header: Header
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., distortion_model: _Optional[str] = ..., k: _Optional[_Iterable[float]] = ..., header: _Optional[_Union[Header, _Mapping]] = ...) -> None: ...

class RigidTransform(_message.Message):
    __slots__ = ("translation", "rotation")
    TRANSLATION_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    translation: _containers.RepeatedScalarFieldContainer[float]
    rotation: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, translation: _Optional[_Iterable[float]] = ..., rotation: _Optional[_Iterable[float]] = ...) -> None: ...

class CameraImage(_message.Message):
    __slots__ = ("image", "info", "pose")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    image: Image
    info: CameraInfo
    pose: RigidTransform
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., info: _Optional[_Union[CameraInfo, _Mapping]] = ..., pose: _Optional[_Union[RigidTransform, _Mapping]] = ...) -> None: ...

class CameraImageSet(_message.Message):
    __slots__ = ("camera_serial", "has_rgb", "has_depth", "has_label", "camera_rgb", "camera_depth", "camera_label")
    CAMERA_SERIAL_FIELD_NUMBER: _ClassVar[int]
    HAS_RGB_FIELD_NUMBER: _ClassVar[int]
    HAS_DEPTH_FIELD_NUMBER: _ClassVar[int]
    HAS_LABEL_FIELD_NUMBER: _ClassVar[int]
    CAMERA_RGB_FIELD_NUMBER: _ClassVar[int]
    CAMERA_DEPTH_FIELD_NUMBER: _ClassVar[int]
    CAMERA_LABEL_FIELD_NUMBER: _ClassVar[int]
    camera_serial: str
    has_rgb: bool
    has_depth: bool
    has_label: bool
    camera_rgb: CameraImage
    camera_depth: CameraImage
    camera_label: CameraImage
    def __init__(self, camera_serial: _Optional[str] = ..., has_rgb: _Optional[bool] = ..., has_depth: _Optional[bool] = ..., has_label: _Optional[bool] = ..., camera_rgb: _Optional[_Union[CameraImage, _Mapping]] = ..., camera_depth: _Optional[_Union[CameraImage, _Mapping]] = ..., camera_label: _Optional[_Union[CameraImage, _Mapping]] = ...) -> None: ...

class RobotPoseStatus(_message.Message):
    __slots__ = ("robot_name", "pose", "wrench", "external_wrench", "joint_position", "joint_velocity", "joint_torque", "joint_torque_external")
    ROBOT_NAME_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    WRENCH_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_WRENCH_FIELD_NUMBER: _ClassVar[int]
    JOINT_POSITION_FIELD_NUMBER: _ClassVar[int]
    JOINT_VELOCITY_FIELD_NUMBER: _ClassVar[int]
    JOINT_TORQUE_FIELD_NUMBER: _ClassVar[int]
    JOINT_TORQUE_EXTERNAL_FIELD_NUMBER: _ClassVar[int]
    robot_name: str
    pose: RigidTransform
    wrench: _containers.RepeatedScalarFieldContainer[float]
    external_wrench: _containers.RepeatedScalarFieldContainer[float]
    joint_position: _containers.RepeatedScalarFieldContainer[float]
    joint_velocity: _containers.RepeatedScalarFieldContainer[float]
    joint_torque: _containers.RepeatedScalarFieldContainer[float]
    joint_torque_external: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, robot_name: _Optional[str] = ..., pose: _Optional[_Union[RigidTransform, _Mapping]] = ..., wrench: _Optional[_Iterable[float]] = ..., external_wrench: _Optional[_Iterable[float]] = ..., joint_position: _Optional[_Iterable[float]] = ..., joint_velocity: _Optional[_Iterable[float]] = ..., joint_torque: _Optional[_Iterable[float]] = ..., joint_torque_external: _Optional[_Iterable[float]] = ...) -> None: ...

class RobotGripperStatus(_message.Message):
    __slots__ = ("gripper_name", "gripper_position")
    GRIPPER_NAME_FIELD_NUMBER: _ClassVar[int]
    GRIPPER_POSITION_FIELD_NUMBER: _ClassVar[int]
    gripper_name: str
    gripper_position: float
    def __init__(self, gripper_name: _Optional[str] = ..., gripper_position: _Optional[float] = ...) -> None: ...

class PosesAndGrippers(_message.Message):
    __slots__ = ("pose_status", "gripper_status", "timestamp_data", "timestamp_sent", "timestamp_received")
    POSE_STATUS_FIELD_NUMBER: _ClassVar[int]
    GRIPPER_STATUS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_DATA_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_SENT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    pose_status: _containers.RepeatedCompositeFieldContainer[RobotPoseStatus]
    gripper_status: _containers.RepeatedCompositeFieldContainer[RobotGripperStatus]
    timestamp_data: Time
    timestamp_sent: Time
    timestamp_received: Time
    def __init__(self, pose_status: _Optional[_Iterable[_Union[RobotPoseStatus, _Mapping]]] = ..., gripper_status: _Optional[_Iterable[_Union[RobotGripperStatus, _Mapping]]] = ..., timestamp_data: _Optional[_Union[Time, _Mapping]] = ..., timestamp_sent: _Optional[_Union[Time, _Mapping]] = ..., timestamp_received: _Optional[_Union[Time, _Mapping]] = ...) -> None: ...

class PosesAndGrippersActualAndDesired(_message.Message):
    __slots__ = ("actual", "desired", "version")
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    actual: PosesAndGrippers
    desired: PosesAndGrippers
    version: float
    def __init__(self, actual: _Optional[_Union[PosesAndGrippers, _Mapping]] = ..., desired: _Optional[_Union[PosesAndGrippers, _Mapping]] = ..., version: _Optional[float] = ...) -> None: ...

class MultiarmObservation(_message.Message):
    __slots__ = ("robot", "visuo", "version", "use_language_instruction", "language_instruction")
    ROBOT_FIELD_NUMBER: _ClassVar[int]
    VISUO_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    USE_LANGUAGE_INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    robot: PosesAndGrippersActualAndDesired
    visuo: _containers.RepeatedCompositeFieldContainer[CameraImageSet]
    version: float
    use_language_instruction: bool
    language_instruction: str
    def __init__(self, robot: _Optional[_Union[PosesAndGrippersActualAndDesired, _Mapping]] = ..., visuo: _Optional[_Iterable[_Union[CameraImageSet, _Mapping]]] = ..., version: _Optional[float] = ..., use_language_instruction: _Optional[bool] = ..., language_instruction: _Optional[str] = ...) -> None: ...

class PolicyStepRequest(_message.Message):
    __slots__ = ("client_identifier", "observation")
    CLIENT_IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    client_identifier: str
    observation: MultiarmObservation
    def __init__(self, client_identifier: _Optional[str] = ..., observation: _Optional[_Union[MultiarmObservation, _Mapping]] = ...) -> None: ...

class PolicyStepResponse(_message.Message):
    __slots__ = ("success", "action")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    success: bool
    action: PosesAndGrippers
    def __init__(self, success: _Optional[bool] = ..., action: _Optional[_Union[PosesAndGrippers, _Mapping]] = ...) -> None: ...

class PolicyResetRequest(_message.Message):
    __slots__ = ("client_identifier", "seed")
    CLIENT_IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    client_identifier: str
    seed: int
    def __init__(self, client_identifier: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class PolicyResetResponse(_message.Message):
    __slots__ = ("success",)
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    def __init__(self, success: _Optional[bool] = ...) -> None: ...

class PolicyMetadata(_message.Message):
    __slots__ = ("name", "skill_type", "checkpoint_path", "git_repo", "git_sha", "raw_policy_config", "is_language_conditioned", "runtime_information")
    class RuntimeInformationEntry(_message.Message):
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
    RAW_POLICY_CONFIG_FIELD_NUMBER: _ClassVar[int]
    IS_LANGUAGE_CONDITIONED_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_INFORMATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    skill_type: str
    checkpoint_path: str
    git_repo: str
    git_sha: str
    raw_policy_config: str
    is_language_conditioned: bool
    runtime_information: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., skill_type: _Optional[str] = ..., checkpoint_path: _Optional[str] = ..., git_repo: _Optional[str] = ..., git_sha: _Optional[str] = ..., raw_policy_config: _Optional[str] = ..., is_language_conditioned: _Optional[bool] = ..., runtime_information: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetPolicyMetadataRequest(_message.Message):
    __slots__ = ("client_identifier",)
    CLIENT_IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    client_identifier: str
    def __init__(self, client_identifier: _Optional[str] = ...) -> None: ...

class GetPolicyMetadataResponse(_message.Message):
    __slots__ = ("success", "policy_metadata")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    POLICY_METADATA_FIELD_NUMBER: _ClassVar[int]
    success: bool
    policy_metadata: PolicyMetadata
    def __init__(self, success: _Optional[bool] = ..., policy_metadata: _Optional[_Union[PolicyMetadata, _Mapping]] = ...) -> None: ...

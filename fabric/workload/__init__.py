"""Workloads: manifests, supervised services, admission of component calls, control.

Modules (each importable on its own):

- ``manifest``: TOML manifest → frozen msgspec Structs (``load_manifest``); ``checks``: ``validate``
- ``units``: durations ("250ms") and sizes ("64MiB")
- ``restart``: sans-IO restart policy / crash-loop tracker
- ``lifecycle``: the service state table (starting / ready / backing-off / failed / stopped)
- ``supervisor``: the asyncio supervisor of ``Runnable`` services
- ``native``: the API of native Python services (``ServiceContext``, ``NativeRunner``)
- ``admission``: per-component concurrency limit with a bounded wait queue
- ``control``: the control endpoint (Unix socket, newline-delimited JSON) and its client
- ``status``: status report structs; ``errors``: the exception hierarchy
- ``exposition``, ``metrics_server``, ``health``: the metrics endpoint and probes (``[metrics]``)
"""

from __future__ import annotations

from .admission import Admission, AdmissionCore
from .checks import check_manifest, validate
from .control import (
    ControlServer,
    ControlTarget,
    default_control_path,
    remote_invoke,
    remote_status,
)
from .control_access import ControlAccessError
from .errors import (
    ControlError,
    ControlUnavailable,
    InvalidTransition,
    ManifestError,
    ManifestIssue,
    NativeServiceError,
    NotFound,
    Overloaded,
    RemoteError,
    ServiceFailed,
    ShuttingDown,
    UnfilledImports,
    WorkloadError,
)
from .lifecycle import ServiceMachine, State
from .loader import load_manifest, loads_manifest, manifest_from_dict
from .manifest import (
    ComponentSpec,
    DirSpec,
    EgressRule,
    IngressRule,
    LinkSpec,
    Manifest,
    MetricsSpec,
    RestartSpec,
    ReuseSpec,
    ServiceSpec,
    WorkloadSpec,
)
from .native import NativeRunner, Network, ServiceContext, load_service_class
from .restart import RestartPolicy, RestartTracker
from .status import ComponentStatus, ServiceStatus, StatusReport, WorkloadStatus
from .supervisor import Runnable, Supervisor
from .units import ByteSize, Duration, parse_duration, parse_size

__all__ = [
    "Admission",
    "AdmissionCore",
    "ByteSize",
    "ComponentSpec",
    "ComponentStatus",
    "ControlAccessError",
    "ControlError",
    "ControlServer",
    "ControlTarget",
    "ControlUnavailable",
    "DirSpec",
    "Duration",
    "EgressRule",
    "IngressRule",
    "InvalidTransition",
    "LinkSpec",
    "Manifest",
    "ManifestError",
    "ManifestIssue",
    "MetricsSpec",
    "NativeRunner",
    "NativeServiceError",
    "Network",
    "NotFound",
    "Overloaded",
    "RemoteError",
    "RestartPolicy",
    "RestartSpec",
    "RestartTracker",
    "ReuseSpec",
    "Runnable",
    "ServiceContext",
    "ServiceFailed",
    "ServiceMachine",
    "ServiceSpec",
    "ServiceStatus",
    "ShuttingDown",
    "State",
    "StatusReport",
    "Supervisor",
    "UnfilledImports",
    "WorkloadError",
    "WorkloadSpec",
    "WorkloadStatus",
    "check_manifest",
    "default_control_path",
    "load_manifest",
    "load_service_class",
    "loads_manifest",
    "manifest_from_dict",
    "parse_duration",
    "parse_size",
    "remote_invoke",
    "remote_status",
    "validate",
]

"""Long-running named services (issue 21, first part): :class:`ServiceConfig` with workload
:data:`PROFILES`, services files in TOML (:func:`load_services`), and :func:`run_services`,
which runs several side by side in one process (``trio-realtime run services.toml``)."""

from ._config import PROFILES as PROFILES
from ._config import ServiceConfig as ServiceConfig
from ._config import load_services as load_services
from ._run import run_services as run_services

"""fastpool: a database connection pool whose hot path is compiled.

>>> import fastpool
>>> with fastpool.create_pool("sqlite:///app.db", max_size=8) as pool:
...     with pool.connection() as conn:
...         conn.execute("CREATE TABLE IF NOT EXISTS t (x)")

and on asyncio (in a coroutine)::

    async with fastpool.create_async_pool("postgresql+asyncpg://db/app") as pool:
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
"""

from fastpool._loader import load_core as _load_core

_load_core()  # binds fastpool._core to the compiled core or to its Python twin

from fastpool import _core as _core  # noqa: E402
from fastpool.backoff import ExponentialBackoff  # noqa: E402
from fastpool.cluster import (  # noqa: E402
    AsyncCluster,
    AsyncReplicaReader,
    Cluster,
    ReplicaReader,
    create_async_cluster,
    create_cluster,
)
from fastpool.drivers import (  # noqa: E402
    CallableDriver,
    Driver,
    MySQLDriver,
    PostgresDriver,
    SQLiteDriver,
)
from fastpool.errors import (  # noqa: E402
    ConfigError,
    ConnectError,
    ConnectionAlreadyReleased,
    ErrorKind,
    FastpoolError,
    ForeignConnection,
    NoReplicaAvailable,
    PoolClosed,
    PoolTimeout,
    TooManyWaiting,
    TransactionAborted,
    TransactionOutcomeUnknown,
    UnsupportedClient,
    WrongEventLoop,
)
from fastpool.pool import Pool, create_pool  # noqa: E402
from fastpool.pool.async_facade import AsyncPool, create_async_pool  # noqa: E402
from fastpool.pool.sizing import SizingAdvice  # noqa: E402
from fastpool.pool.stats import PoolStats  # noqa: E402
from fastpool.query.explain import AnalyzeRefused, Plan, ScanFinding  # noqa: E402
from fastpool.query.observe import (  # noqa: E402
    NPlusOneDetected,
    NPlusOneWarning,
    n_plus_one_guard,
    normalize,
)
from fastpool.source import ConnectionSource  # noqa: E402
from fastpool.writes.batch import Batcher, BatcherClosed, BatcherFull, BatchResult  # noqa: E402
from fastpool.writes.bulk import RowError  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "AnalyzeRefused",
    "AsyncCluster",
    "AsyncPool",
    "AsyncReplicaReader",
    "BatchResult",
    "Batcher",
    "BatcherClosed",
    "BatcherFull",
    "CallableDriver",
    "Cluster",
    "ConfigError",
    "ConnectError",
    "ConnectionAlreadyReleased",
    "ConnectionSource",
    "Driver",
    "ErrorKind",
    "ExponentialBackoff",
    "FastpoolError",
    "ForeignConnection",
    "MySQLDriver",
    "NPlusOneDetected",
    "NPlusOneWarning",
    "NoReplicaAvailable",
    "Plan",
    "Pool",
    "PoolClosed",
    "PoolStats",
    "PoolTimeout",
    "PostgresDriver",
    "ReplicaReader",
    "RowError",
    "SQLiteDriver",
    "ScanFinding",
    "SizingAdvice",
    "TooManyWaiting",
    "TransactionAborted",
    "TransactionOutcomeUnknown",
    "UnsupportedClient",
    "WrongEventLoop",
    "__version__",
    "create_async_cluster",
    "create_async_pool",
    "create_cluster",
    "create_pool",
    "n_plus_one_guard",
    "normalize",
]

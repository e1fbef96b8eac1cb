"""Quality gates. `nox` runs lint, typecheck, tests and docs; stress and bench run on request."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = not os.environ.get("CI")
nox.options.error_on_missing_interpreters = True

PYTHON = None  # the interpreter nox itself runs on (Python >= 3.11)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (including the ASYNC rules) and the format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[test]", "mypy>=1.11")
    session.run("mypy", "--strict", "trio_realtime")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The default test run (must stay under 10 minutes on 2 cores)."""
    session.install("-e", ".[test]")
    install_node_packages(session)
    install_redis(session)
    # Any non-zero exit fails, 5 ("no tests ran") included: a suite that collects nothing is broken.
    session.run("pytest", *session.posargs)


def install_node_packages(session: nox.Session) -> None:
    """The Node packages of the Socket.IO interop server (examples/socketio_server.js, used by
    tests/socketio), from examples/package-lock.json, when they are not installed yet. Without
    Node and npm the session fails: those tests must not be skipped."""
    if os.path.isfile(os.path.join("examples", "node_modules", "socket.io", "package.json")):
        return
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            session.error(
                f"`{tool}` is not on PATH: the Socket.IO interop tests (tests/socketio) need Node "
                ">= 18 and npm to install examples/package-lock.json (`npm ci --prefix examples`)"
            )
    session.run("npm", "ci", "--prefix", "examples", "--no-audit", "--no-fund", external=True)


def install_redis(session: nox.Session) -> None:
    """redis-server and redis-cli for the Redis store's tests (tests/redis_servers.py starts its
    own servers on free ports), from the system's packages (apt-get) when they are not on PATH.
    If that fails the session fails: those tests must not be skipped."""
    if shutil.which("redis-server") and shutil.which("redis-cli"):
        return
    if shutil.which("apt-get") is None:
        session.error(
            "`redis-server` is not on PATH and there is no apt-get to install it: the Redis store "
            "tests need redis-server and redis-cli (>= 7.0)"
        )
    try:
        session.run("apt-get", "install", "-y", "redis-server", external=True)
    except nox.command.CommandFailed:
        session.run("apt-get", "update", external=True)
        session.run("apt-get", "install", "-y", "redis-server", external=True)
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        session.error("apt-get installed redis-server, but redis-server/redis-cli are not on PATH")


@nox.session(python=PYTHON)
def stress(session: nox.Session) -> None:
    """Long crash loops: journal and client SIGKILLs and random cancellations, many more times."""
    session.install("-e", ".[test]")
    figures = os.path.abspath("docs/reliability")
    session.run(
        "pytest",
        "-m",
        "slow",
        *session.posargs,
        env={
            "TRIO_REALTIME_STRESS": os.environ.get("TRIO_REALTIME_STRESS", "1000"),
            "TRIO_REALTIME_CLIENT_KILLS": os.environ.get("TRIO_REALTIME_CLIENT_KILLS", "1000"),
            "TRIO_REALTIME_CANCEL_ROUNDS": os.environ.get("TRIO_REALTIME_CANCEL_ROUNDS", "1000"),
            "TRIO_REALTIME_QUEUE_ITEMS": os.environ.get("TRIO_REALTIME_QUEUE_ITEMS", "10000"),
            "TRIO_REALTIME_FIGURES": figures,
        },
    )
    # The load and abuse tests run in the default session too; here they save their figures.
    session.run("pytest", "tests/reliability/test_abuse.py", env={"TRIO_REALTIME_FIGURES": figures})
    session.run("python", "reliability/report.py")


@nox.session(python=PYTHON)
def chaos(session: nox.Session) -> None:
    """The full chaos run (10,000 messages each way, 20 client and 5 server SIGKILLs); saves its
    figures and rewrites docs/reliability.md."""
    session.install("-e", ".")
    session.run(
        "python",
        "reliability/chaos.py",
        "--messages",
        os.environ.get("TRIO_REALTIME_CHAOS_MESSAGES", "10000"),
        "--client-kills",
        "20",
        "--server-kills",
        "5",
        "--out",
        "docs/reliability/chaos.json",
    )
    session.run("python", "reliability/report.py")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """mkdocs build --strict."""
    session.install("mkdocs-material>=9.5")
    site = os.path.join(session.create_tmp(), "site")
    # NO_MKDOCS_2_WARNING: silence mkdocs-material's banner about MkDocs 2 (it is not a docs issue).
    session.run("mkdocs", "build", "--strict", "--site-dir", site, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks; results are written under docs/benchmarks/."""
    session.install("-e", ".[bench]")
    install_node_packages(session)  # benchmark 8 runs the Node socket.io server of examples/
    install_redis(session)  # benchmark 9 (multi_node) starts its own redis-server
    session.run("python", "benchmarks/journal.py")
    session.run("python", "benchmarks/local_queue.py")
    # Against raw trio-websocket and python-socketio; `nox -s bench -- --only latency` runs one.
    session.run("python", "benchmarks/realtime.py", *session.posargs)
    session.run("python", "benchmarks/report.py")

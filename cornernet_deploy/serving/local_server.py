"""Start a real ``tritonserver`` without a container: the one the ``nvidia-pytriton`` wheel bundles.

For the real-server tests and ``benchmarks/bench_serving.py`` (a user serves from the Triton
container, as the generated README says). The wheel (0.7.0 carries Triton 2.51.0 with the Python
backend, no TensorRT backend) lives in a Python environment of its own, ``python_env``: its Python
backend needs numpy < 2 (see ``requirements-python-model.txt``), which that environment holds
together with what the generated Python model imports.

    with LocalTritonServer(["repo"], python_env=".venv-triton") as server:
        server.http_url, server.grpc_url     # "127.0.0.1:PORT" on free loopback ports

Start-up is bounded (``startup_timeout``) and the server is always stopped (SIGTERM, then SIGKILL)
when the block ends; a server that exits or never becomes ready raises ``ServerError`` with the
end of its log.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Sequence

DEFAULT_ENV = ".venv-triton"
PYTRITON_VERSION = "0.7.0"
SETUP_HINT = (f"python3 -m venv {DEFAULT_ENV} && {DEFAULT_ENV}/bin/pip install nvidia-pytriton=={PYTRITON_VERSION} "
              "-r cornernet_deploy/serving/requirements-python-model.txt")

_PROBE = """
import json, sys, sysconfig, pathlib
import numpy, pytriton
root = pathlib.Path(pytriton.__file__).parent
print(json.dumps({"root": str(root), "python": "%d.%d" % sys.version_info[:2], "numpy": numpy.__version__,
                  "libdir": sysconfig.get_config_var("LIBDIR") or ""}))
"""


class ServerError(RuntimeError):
    """tritonserver could not be found, started, or made ready."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe_env(python_env) -> dict:
    """What ``python_env`` holds: the pytriton package root, its Python version, numpy version.
    Raises ServerError naming what is missing."""
    python = Path(python_env) / "bin" / "python"
    if not python.exists():
        raise ServerError(f"no Python environment at {python_env} (set it up: {SETUP_HINT})")
    res = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1:] or ["?"]
        raise ServerError(f"{python_env} lacks nvidia-pytriton or numpy ({tail[0]}); set it up: {SETUP_HINT}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    if int(info["numpy"].split(".")[0]) >= 2:
        raise ServerError(f"{python_env} has numpy {info['numpy']}; the bundled Python backend needs numpy < 2")
    return info


class LocalTritonServer:
    def __init__(self, repositories: Sequence, python_env=DEFAULT_ENV, *, startup_timeout: float = 120.0,
                 extra_args: Sequence[str] = (), log_path=None, strict_config: bool = True):
        self.repositories = [Path(r).resolve() for r in repositories]
        self.python_env = Path(python_env).resolve()
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path) if log_path else None
        self.strict_config = strict_config
        self.process: Optional[subprocess.Popen] = None
        self._workdir: Optional[Path] = None
        self.http_port = self.grpc_port = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _prepare(self):
        info = probe_env(self.python_env)
        root = Path(info["root"]) / "tritonserver"
        binary = root / "bin" / "tritonserver"
        stub = root / "python_backend_stubs" / info["python"] / "triton_python_backend_stub"
        if not binary.is_file() or not stub.is_file():
            raise ServerError(f"the nvidia-pytriton in {self.python_env} has no tritonserver / Python "
                              f"{info['python']} backend stub ({binary})")
        self._workdir = Path(tempfile.mkdtemp(prefix="cornernet-triton-"))
        backends = self._workdir / "backends"
        # pytriton's own way: the backends, plus the stub built for this Python, in one directory
        shutil.copytree(root / "backends", backends)
        shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
        libs = [str(Path(info["root"]).parent / "nvidia_pytriton.libs")]
        if info["libdir"]:
            libs.insert(0, info["libdir"])    # the libpython of the environment's own Python first
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(libs + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
        # the backend's embedded Python finds the environment through the first python3 on PATH
        env["PATH"] = f"{self.python_env / 'bin'}:{env.get('PATH', '')}"
        env.setdefault("OMP_NUM_THREADS", "1")
        return binary, backends, env

    def start(self) -> "LocalTritonServer":
        binary, backends, env = self._prepare()
        self.http_port, self.grpc_port = free_port(), free_port()
        while self.grpc_port == self.http_port:
            self.grpc_port = free_port()
        cmd = [str(binary)] + [f"--model-repository={r}" for r in self.repositories] + [
            f"--backend-directory={backends}", "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}", "--allow-metrics=false",
            "--exit-timeout-secs=5", "--log-verbose=0"]
        if self.strict_config:
            cmd.append("--disable-auto-complete-config")   # our config.pbtxt files must be complete
        cmd += self.extra_args
        self._log = open(self.log_path or self._workdir / "tritonserver.log", "w+b")
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                        cwd=self._workdir, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.25)
        raise ServerError(f"tritonserver not ready after {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if not getattr(self, "_log", None) or self._log.closed:
            return ""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)   # the server and its backend stubs
                self.process.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)
        if getattr(self, "_log", None) and not self._log.closed:
            self._log.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> "LocalTritonServer":
        return self.start()

    def __exit__(self, *exc):
        self.stop()

"""The cloud's options: one dataclass, its defaults and help texts, which ``latentmotion serve`` turns into its options.

Light on purpose (no gRPC, no torch at import; :meth:`ServerConfig.check` reads the model registry): the command
line reads it at start-up.

Example:
    >>> ServerConfig(insecure=True).check()  # loopback and plaintext: allowed
    >>> ServerConfig(insecure=True, host="0.0.0.0").check()
    Traceback (most recent call last):
    ...
    latentmotion.errors.InputError: --insecure serves plaintext and is allowed only on loopback, not on '0.0.0.0'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .._files import regular_file
from ..errors import InputError, LatentMotionError
from .auth import is_loopback

__all__ = ["ServerConfig"]

MAX_THREADS = 1024  # torch threads of the model (more made pthread_create fail and the process crash)


@dataclass
class ServerConfig:
    """Options of the cloud; every limit is enforced before the memory it guards is allocated.

    Attributes:
        host, port: where to listen (port 0: any free port).
        weights: weights of the cloud models (``imagenet``, ``random`` or a state-dict path).
        cert, key: TLS certificate chain and private key (PEM files).
        tokens: file of accepted token digests (see :mod:`latentmotion.service.auth`).
        insecure: plaintext and no TLS; allowed only on a loopback host.
        max_streams: open streams at once; more get RESOURCE_EXHAUSTED.
        max_pending: frames of one stream received but not yet answered (its window).
        max_queue: frames waiting for the model, all streams together.
        max_message: largest gRPC message in bytes.
        max_elements: largest tensor (C*H*W) a stream's header may announce.
        max_bad_frames: failed frames in a row, beyond a window, before the stream ends.
        idle_timeout: seconds without a message before a stream (or an idle connection) ends; also how long a full
            window of unread results, or one result unwritten, may last.
        max_models: cloud sub-models kept loaded (LRU).
        max_batch, max_wait_ms: dynamic batching limits.
        model_threads: torch intra-op threads of the model (0: one less than the usable cores, at least 1,
            leaving a core to decoding and gRPC; on a loaded 2-core machine 2 spinning OpenMP threads ran
            the model 3x slower than 1). Torch's thread count is process-wide: it applies to the whole server process.
        device: ``auto`` (GPU when there is one), ``cpu`` or ``cuda``.
        top_k: classes per result of a ``classify`` stream when the edge does not say.
        metrics_port: Prometheus HTTP port (None: no endpoint).
        ray: Ray cluster address to run the cloud models on Ray Serve (None: in process).
        drain_timeout: seconds a shutdown waits for open streams to finish.
        models: model names edges may ask for (empty: any); a model outside it is never built.
        preload: ``model:layer`` cloud sub-models to load before serving, so first frames do not wait for them.
    """

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=5050, metadata={"help": "TCP port (0: any free port)"})
    weights: str = field(default="imagenet", metadata={"help": "weights of the cloud models: imagenet, random or a state-dict file"})
    cert: str | None = field(default=None, metadata={"help": "TLS certificate chain (PEM)"})
    key: str | None = field(default=None, metadata={"help": "TLS private key (PEM)"})
    tokens: str | None = field(default=None, metadata={"help": "file of accepted token SHA-256 digests, one a line"})
    insecure: bool = field(default=False, metadata={"help": "plaintext, no TLS (loopback hosts only)"})
    max_streams: int = field(default=64, metadata={"help": "edge streams served at once"})
    max_pending: int = field(default=32, metadata={"help": "unanswered frames per stream"})
    max_queue: int = field(default=512, metadata={"help": "frames waiting for the model, all streams"})
    max_message: int = field(default=4 << 20, metadata={"help": "largest gRPC message, bytes"})
    max_elements: int = field(default=1 << 21, metadata={"help": "largest tensor (C*H*W) a stream may announce"})
    max_bad_frames: int = field(default=3, metadata={"help": "failed frames in a row, beyond a window, before a stream ends"})
    idle_timeout: float = field(default=30.0, metadata={"help": "seconds of silence, or of results left unread, that end a stream"})
    max_models: int = field(default=4, metadata={"help": "cloud sub-models kept loaded"})
    max_batch: int = field(default=16, metadata={"help": "largest model batch"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "longest wait to fill a batch, ms"})
    model_threads: int = field(default=0, metadata={"help": "torch threads of the model (0: one fewer than the cores, at least 1)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    top_k: int = field(default=5, metadata={"help": "classes per result of a classify stream when the edge does not say"})
    metrics_port: int | None = field(default=None, metadata={"help": "serve Prometheus metrics on this port"})
    ray: str | None = field(default=None, metadata={"help": "run the cloud models on Ray Serve at this address ('local' starts one)"})
    drain_timeout: float = field(default=10.0, metadata={"help": "seconds a shutdown waits for open streams"})
    models: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()

    def check(self) -> None:
        """Refuse impossible or unsafe options with :class:`InputError` before anything starts."""
        for name in ("port", "metrics_port"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 65535:
                raise InputError(f"--{name.replace('_', '-')} {v} is not a TCP port (0..65535)")
        for name in ("max_streams", "max_pending", "max_queue", "max_message", "max_elements", "max_models", "max_batch", "top_k"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.model_threads > MAX_THREADS:
            raise InputError(f"--model-threads {self.model_threads} exceeds {MAX_THREADS}")
        if not (self.idle_timeout > 0 and self.max_wait_ms >= 0 and self.drain_timeout >= 0 and self.max_bad_frames >= 0 and self.model_threads >= 0):
            raise InputError("--idle-timeout must be positive; --max-wait-ms, --drain-timeout, --max-bad-frames and --model-threads not negative")
        if self.idle_timeout < 0.001:  # gRPC's idle limit is whole milliseconds: 0 ends every connection at once
            raise InputError(f"--idle-timeout {self.idle_timeout:g} must be at least 0.001 s")
        for name in ("idle_timeout", "max_wait_ms", "drain_timeout"):  # finite, and small enough for gRPC's integer clocks
            if not getattr(self, name) <= 1e6:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)} must be at most 1e6")
        for name in ("max_message", "max_elements", "max_streams", "max_pending", "max_queue", "max_batch"):
            if getattr(self, name) > (1 << 31) - 1:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)} must be below 2^31")
        if self.ray is not None and not self.ray.strip():  # an empty address would quietly serve in process
            raise InputError("--ray needs local, auto or HOST:PORT of a Ray cluster")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"--device {self.device!r}: choose auto, cpu or cuda")
        if self.insecure:
            if not is_loopback(self.host):
                raise InputError(f"--insecure serves plaintext and is allowed only on loopback, not on {self.host!r}")
        elif not (self.cert and self.key and self.tokens):
            raise InputError("the server needs --cert, --key and --tokens (or --insecure, on loopback only)")
        bad = [p for p in self.preload if p.count(":") != 1 or "" in p.split(":")]
        if bad:
            raise InputError(f"--preload {bad[0]!r}: expected MODEL:LAYER")
        _check_models(self.models, self.preload)
        if (self.cert is None) != (self.key is None):
            raise InputError("--cert and --key go together")
        if self.cert and self.key:
            _check_key_pair(self.cert, self.key)

    def resolved_threads(self) -> int:
        """Intra-op threads for the model: ``model_threads``, else one less than the usable cores (at least 1)."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return self.model_threads or max(1, cores - 1)

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device on this machine")
        return self.device


def _check_models(models: tuple[str, ...], preload: tuple[str, ...]) -> None:
    """Refuse a model that no edge could ever be served (a typo would otherwise refuse, at run time, every stream
    that asks for the model meant), naming the option that holds it; a ``package.module:factory`` is the
    operator's own code, imported only when an edge asks for it. (Reads the model registry: imports torch.)"""
    from ..models.zoo import check_model_name

    for option, name in [*((f"--preload {p!r}", p.split(":")[0]) for p in preload), *(("--models", m) for m in models)]:
        try:
            check_model_name(name)
        except LatentMotionError as exc:  # an unknown name or a malformed spec
            raise InputError(f"{option}: {exc}") from None


def _check_key_pair(cert: str, key: str) -> None:
    """Refuse a certificate and key that are not PEM or do not belong together, in one line (gRPC's own
    failure at bind time is several log lines and a message about the address)."""
    import ssl

    regular_file(cert, "--cert")  # before the TLS library opens them: a FIFO would block it
    regular_file(key, "--key")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise InputError(f"--cert {cert} and --key {key}: not a certificate and its private key ({exc.__class__.__name__}: {exc.strerror or exc})") from None

"""Edge-to-cloud service: gRPC streaming of coded features, batched cloud inference.

The cloud (:func:`serve`, :class:`CloudServer`) decodes each edge's stream with
its own decoder and runs each stream's task (:mod:`latentmotion.tasks`:
classification, segmentation, ...) on the tensors in batches gathered across
streams, in process or on Ray Serve. The edge (:func:`run_edge`,
:func:`stream_video`) pipelines frames within a window, reconnects and resumes
with an intra frame, and accounts for every frame sent. The protocol is
``cloud.proto`` in this package; its generated module ``cloud_pb2`` is
checked in (a test regenerates it and compares).
"""

from .._lazy import lazy_exports

#: Where each public name lives, loaded on first use (PEP 562): ``latentmotion.service.config`` stays light
#: for the command line's start-up, without gRPC or torch.
_EXPORTS = {
    **dict.fromkeys(("TokenSet", "hash_token"), "auth"),
    "ServerConfig": "config",
    **dict.fromkeys(("EdgeOptions", "EdgeReport", "LiveCoder", "ServiceError", "VideoSource", "run_edge", "stream_edge", "stream_video"), "edge"),
    **dict.fromkeys(("CloudServer", "serve"), "server"),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = [
    "CloudServer",
    "EdgeOptions",
    "EdgeReport",
    "LiveCoder",
    "ServerConfig",
    "ServiceError",
    "TokenSet",
    "VideoSource",
    "hash_token",
    "run_edge",
    "serve",
    "stream_edge",
    "stream_video",
]

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

from .auth import TokenSet, hash_token
from .edge import EdgeOptions, EdgeReport, LiveCoder, ServiceError, VideoSource, run_edge, stream_edge, stream_video
from .server import CloudServer, ServerConfig, serve

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

"""Start-up checks of the server's and the edge's options: refused before anything runs, naming the option."""

from __future__ import annotations

import pytest

from latentmotion.errors import InputError
from latentmotion.service import EdgeOptions
from latentmotion.service.config import ServerConfig
from latentmotion.service.edge import MAX_RETRIES


@pytest.mark.parametrize("models,preload,needle", [
    (("efficientnet_lite",), (), "--models: unknown model 'efficientnet_lite'; did you mean 'efficientnet_lite0'"),
    (("foo:",), (), "--models: model spec 'foo:' must read"),
    ((":x",), (), "--models: model spec ':x' must read"),
    (("efficientnet_lite0", "resnet3"), ("resnet3:layer1",), "--preload 'resnet3:layer1': unknown model 'resnet3'"),
])
def test_a_model_no_edge_could_be_served_is_refused_at_start(models, preload, needle):
    with pytest.raises(InputError) as e:
        ServerConfig(insecure=True, models=models, preload=preload).check()
    assert needle in str(e.value)


def test_registry_models_and_well_formed_factories_pass_without_importing_them():
    ServerConfig(insecure=True, models=("efficientnet_lite0", "resnet34", "nosuch_pkg.nets:small")).check()


def test_retries_are_bounded():
    EdgeOptions(max_retries=MAX_RETRIES).check("127.0.0.1:1")
    with pytest.raises(InputError, match=f"--retries {MAX_RETRIES + 1} exceeds {MAX_RETRIES}"):
        EdgeOptions(max_retries=MAX_RETRIES + 1).check("127.0.0.1:1")


def test_options_that_would_serve_nothing_or_name_no_option_are_refused():
    with pytest.raises(InputError, match="--idle-timeout 1e-09 must be at least 0.001 s"):
        ServerConfig(insecure=True, idle_timeout=1e-9).check()  # gRPC's idle limit would be 0 ms: every connection ends
    with pytest.raises(InputError, match="--retries -1 must be at least 0"):
        EdgeOptions(max_retries=-1).check("127.0.0.1:1")
    with pytest.raises(InputError, match="--window 0 must be at least 1"):
        EdgeOptions(window=0).check("127.0.0.1:1")

"""Suite-wide test settings."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread for the whole suite: the tests use small tensors, where extra threads only add
    overhead, and on a busy 2-core machine they oversubscribe the CPU (10x slower tiny-model tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def script_runner():
    """Runs ``python SCRIPT ARGS`` in a process of its own forked from one server that has imported torch and
    diffusers once (see ``tests/forked_scripts.py``); for the benchmark scripts' ``--smoke`` runs."""
    import os
    from pathlib import Path

    from tests.forked_scripts import ScriptRunner

    root = Path(__file__).resolve().parents[1]
    # variables read when torch / diffusers / huggingface_hub are imported are the server's for every script: one
    # thread per process, and offline (no test may need the network)
    server = ScriptRunner(env=dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1"))
    yield server
    server.close()

"""Protocol fuzzing against the real comm in a real kernel (the CI-sized run; the full count is
``benchmarks/fuzz.py``): no crash, and exactly one terminal reply per request."""

import pytest
from hypothesis import HealthCheck, given, settings

from jupyter_codellama.testing.kernel_comm import KernelComm
from jupyter_codellama.testing.protocol_fuzz import FuzzRun, batch_strategy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz():
    kernel = KernelComm(startup_code="%codellama load embedded")
    run = FuzzRun(kernel, timeout=120)
    yield run
    kernel.shutdown()


@settings(max_examples=80, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(batch=batch_strategy(min_size=10, max_size=25))
def test_fuzzed_messages_never_crash_the_kernel_and_each_request_ends_once(fuzz, batch):
    fuzz.run_batch(*batch)
    assert fuzz.kernel.alive(), "the kernel stopped running cells"


def test_after_the_fuzzing_nothing_ended_twice_and_the_model_still_answers(fuzz):
    assert fuzz.sent >= 200, fuzz.sent
    fuzz.recheck()
    comm = fuzz.kernel.open_comm()
    fuzz.kernel.send(
        comm,
        {
            "type": "chat",
            "request_id": "after",
            "max_new_tokens": 4,
            "messages": [{"role": "user", "content": "Say hi."}],
        },
    )
    assert fuzz.kernel.wait_terminal(comm, "after")["type"] == "done"
    print(f"\nfuzz: {fuzz.sent} messages, by type {dict(fuzz.by_type)}, endings {dict(fuzz.endings)}")

"""`bench` on a GPU counts kernel launches and the host's waits per step; the counting, from profiler events,
is tested here with events made up as CUDA's runtime and kernels record them. On a CPU the fields say so."""
import pytest
import torch

from bagoftricks import bench


def _events():
    # two steps from t=100 to t=300 µs: one step eager (3 kernels launched), one replayed from a graph (2 kernels
    # in it), a host sync of 20 µs; a launch and a sync outside the steps (the profiler's own) do not count
    return [
        ("bench:steps", False, 100.0, 300.0),
        ("cudaLaunchKernel", False, 110.0, 115.0), ("cudaLaunchKernel", False, 120.0, 125.0),
        ("cudaLaunchKernelExC", False, 130.0, 135.0),
        ("cudaGraphLaunch", False, 200.0, 210.0),
        ("cudaStreamSynchronize", False, 250.0, 270.0),
        ("aten::add", False, 111.0, 114.0),
        ("cudaLaunchKernel", False, 350.0, 355.0), ("cudaDeviceSynchronize", False, 360.0, 400.0),
        ("kernel_a", True, 120.0, 150.0), ("kernel_b", True, 140.0, 160.0), ("kernel_c", True, 170.0, 180.0),
        ("graph_kernel_1", True, 215.0, 240.0), ("graph_kernel_2", True, 240.0, 320.0),
    ]


def test_launches_waits_and_busy_fraction_per_step():
    s = bench.summarise_launches(_events(), steps=2)
    assert s["kernel_launches_per_step"] == 1.5 and s["graph_launches_per_step"] == 0.5
    assert s["kernels_per_step"] == 2.5
    assert s["host_wait_ms_per_step"] == pytest.approx(0.010)
    assert s["host_ms_per_step"] == pytest.approx(0.100)
    # kernels cover 120-160, 170-180, 215-320: 155 µs of the 220 from the steps' start to the last kernel's end
    assert s["gpu_busy"] == pytest.approx(155 / 220)
    line = bench.format_launches(s)
    assert line.startswith("1.5 kernel launches + 0.5 graph launches per step (2.5 kernels run); host waits 0.01 "
                           "of 0.10 ms per step; GPU busy 70 %")


def test_without_the_steps_range_it_says_so():
    with pytest.raises(ValueError, match="bench:steps"):
        bench.summarise_launches([("cudaLaunchKernel", False, 0.0, 1.0)], 1)


def test_on_a_cpu_the_fields_say_they_are_gpu_only():
    calls = []
    s = bench.launch_stats(lambda: calls.append(1), torch.device("cpu"), 3)
    assert s == {"note": bench.GPU_ONLY} and calls == [] and "GPU-only" in bench.format_launches(s)
